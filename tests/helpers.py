"""Running the repository's tools the way a user does: as processes, from a working folder."""
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
from typing import List

from torch.utils._python_dispatch import TorchDispatchMode

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# --cfg-options of a two-iteration tiny detection run (4 images, batch 2, one epoch) that
# validates on two images and saves its checkpoint
DET_TWO_ITERATIONS = [
    'train_dataloader.dataset.indices=4', 'train_dataloader.batch_size=2',
    'val_dataloader.dataset.indices=2', 'val_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
    'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1'
]


def tool_env(env: dict = None) -> dict:
    """The environment the tools run in here: one thread, no warnings, plus ``env``."""
    return dict(
        os.environ,
        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
        PYTHONWARNINGS='ignore',
        **(env or {}))


def run_tool(tool: str,
             *args: str,
             cwd: str,
             timeout: int = 600,
             env: dict = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python tools/<tool> args`` in ``cwd`` (where data/tiny lives); fail loudly
    (``check=False``: return whatever it did, for a run expected to fail)."""
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', tool), *args]
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=tool_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def descendants(pid: int) -> list:
    """The processes below ``pid`` (Linux /proc): torchrun starts its workers in sessions of
    their own, out of reach of a signal to its process group."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (found before the first kill)."""
    for p in [*descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return False


def worker_pids(pid: int, script: str = 'train.py') -> dict:
    """The torchrun workers below ``pid`` running tools/``script``, by their RANK."""
    ranks = {}
    for p in descendants(pid):
        try:
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                cmdline = f.read().split(b'\0')
            with open(f'/proc/{p}/environ', 'rb') as f:
                environ = dict(e.split(b'=', 1) for e in f.read().split(b'\0') if b'=' in e)
        except OSError:
            continue
        if b'RANK' in environ and any(arg.endswith(script.encode()) for arg in cmdline):
            ranks.setdefault(int(environ[b'RANK']), p)
    return ranks


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_process_tree(cmd, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    """Run ``cmd`` (a list, e.g. a tools/dist_*.sh line); on a timeout (a rank waiting for
    another in a collective) end it and every process below it, then fail with the output."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        stdout, stderr = proc.communicate()
        raise AssertionError(f'{cmd} did not finish in {timeout} s:\n{stdout[-3000:]}\n'
                             f'{stderr[-6000:]}') from None
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


# the lines of a multi-process run's output that say why it failed
_WHY_MARKERS = ('error', 'Error', 'terminate called', 'Fatal Python', 'exitcode', 'CANCELLED')


def why_it_failed(proc: subprocess.CompletedProcess, tail: int = 6000) -> str:
    """An assertion message for a failed multi-process run: the exit code and the lines of
    the launcher's and the ranks' errors first (a rank's config dump can fill the tail), then
    the output's tail."""
    out = proc.stdout + proc.stderr
    why = [line for line in out.splitlines() if any(m in line for m in _WHY_MARKERS)]
    return (f'exit code {proc.returncode}; the lines that say why:\n' + '\n'.join(why[-30:]) +
            f'\n--- the end of the output ---\n{out[-tail:]}')


class OpRecorder(TorchDispatchMode):
    """Records the aten/mkldnn ops run inside it, in order (``with OpRecorder() as rec:``)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))

    def count(self, name: str) -> int:
        """How many recorded ops contain ``name``."""
        return sum(name in op for op in self.ops)


class RunsWhenUnpickled:
    """Unpickling it would run code: its reconstruction writes a marker file."""

    def __init__(self, path, unpickled=False):
        if unpickled:
            open(path, 'w').close()
        self.path = path

    def __reduce__(self):
        return (RunsWhenUnpickled, (self.path, True))


def page_text(page: str) -> str:
    """The text of a documentation page, by its path in the repository."""
    with open(osp.join(REPO_ROOT, page)) as f:
        return f.read()


def code_blocks(text: str) -> list:
    """(language, body) of every fenced block."""
    return [(m.group(1), m.group(2))
            for m in re.finditer(r'^```(\w*)\n(.*?)^```', text, flags=re.S | re.M)]


def expected_output(body: str) -> list:
    """The comment line right after each ``print(...)`` line of a script: what it prints."""
    lines = body.splitlines()
    return [
        after[2:] for line, after in zip(lines, lines[1:])
        if line.lstrip().startswith('print(') and after.startswith('# ')
    ]


def load_tool(tool: str):
    """Import ``tools/<tool>`` (a script, not a package) as a module, to call its functions."""
    import importlib.util
    name = osp.splitext(osp.basename(tool))[0] + '_tool'
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO_ROOT, 'tools', tool))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(name: str) -> str:
    return osp.join(REPO_ROOT, 'configs', name)


def scalars(work_dir: str) -> List[dict]:
    """The json lines mmengine's logger wrote (losses per logged iteration, metrics)."""
    found = []
    for root, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(root, 'scalars.json')) as f:
                found += [json.loads(line) for line in f if line.strip()]
    return found


def checkpoints(work_dir: str) -> List[str]:
    return sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
