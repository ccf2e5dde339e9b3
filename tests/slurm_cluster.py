"""A single-node Slurm cluster for the tests: Debian's munge, slurmctld and slurmd, started
with a configuration, a MUNGE key, ports and folders of their own in a temporary directory,
and stopped by the process ids they were started with.

Nothing of the machine's own Slurm or MUNGE set-up (/etc/slurm, /etc/munge, the default
ports and socket) is read or touched, so a cluster already running there is left alone.
"""
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from helpers import free_port

PACKAGES = ('munge', 'slurmctld', 'slurmd', 'slurm-client')
# what the cluster and the tools/slurm_*.sh scripts run (munge: the readiness check;
# scontrol: mmdualtoken's --launcher slurm finds the first host of a job step with it)
PROGRAMS = ('munged', 'munge', 'slurmctld', 'slurmd', 'srun', 'sinfo', 'scontrol')
# the daemons are in sbin, which a non-login shell may leave out of PATH
SEARCH_PATH = os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/sbin', '/usr/bin'])
PARTITION = 'debug'


def missing_programs() -> list:
    return [p for p in PROGRAMS if shutil.which(p, path=SEARCH_PATH) is None]


def ensure_slurm_installed() -> None:
    """Install Debian's Slurm and MUNGE packages where programs are missing (as root, with
    apt-get); where that cannot be done, fail in one line that says what to install."""
    missing = missing_programs()
    if not missing:
        return
    packages = ' '.join(PACKAGES)
    cannot = ('not root'
              if os.geteuid() != 0 else 'no apt-get' if shutil.which('apt-get') is None else None)
    if cannot:
        pytest.fail(
            f'Slurm is not installed ({", ".join(missing)} not found) and the test '
            f'cannot install it ({cannot}): install {packages} (Debian/Ubuntu: '
            f'apt-get install {packages}), or leave the Slurm tests out with '
            f'-m "not slurm"',
            pytrace=False)
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    cmd = ['apt-get', 'install', '-y', '--no-install-recommends', *PACKAGES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:  # package lists missing or out of date on a fresh machine
        subprocess.run(['apt-get', 'update'], env=env, capture_output=True, timeout=900)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    still_missing = missing_programs()
    if proc.returncode != 0 or still_missing:
        pytest.fail(
            f'`{" ".join(cmd)}` failed (exit {proc.returncode}; not found: '
            f'{", ".join(still_missing) or "nothing"}):\n{proc.stdout[-2000:]}\n'
            f'{proc.stderr[-2000:]}',
            pytrace=False)


class ClusterError(RuntimeError):
    """The cluster did not come up; the message holds the daemons' logs."""


class SlurmCluster:
    """munged, slurmctld and slurmd on this machine: one node (this host, all its CPUs as
    ``slurmd -C`` reports them) in partition :data:`PARTITION`.

    ``env`` is the environment Slurm's commands need to reach it (SLURM_CONF); every
    ``SLURM_*`` variable of the surrounding environment is left out of it, so that a test
    run inside a Slurm job does not submit into that job's allocation.
    """

    DAEMONS = ('munged', 'slurmctld', 'slurmd')

    def __init__(self, root: str):
        self.root = root
        self.host = socket.gethostname().split('.')[0]
        self.conf = osp.join(root, 'slurm.conf')
        self.munge_socket = None  # set by start()
        self.processes = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith('SLURM_')}
        self.env = dict(env, PATH=SEARCH_PATH, SLURM_CONF=self.conf)

    def path(self, *parts: str) -> str:
        return osp.join(self.root, *parts)

    def start(self, timeout: float = 120) -> None:
        """Start the three daemons; return when the node is idle in ``sinfo``."""
        for folder in ('munge', 'state', 'spool'):
            os.makedirs(self.path(folder), mode=0o700, exist_ok=True)
        # munged wants every folder above its socket open to all (pytest's are not)
        socket_dir = tempfile.mkdtemp(prefix='mmdualtoken-munge-')
        os.chmod(socket_dir, 0o755)
        self.munge_socket = osp.join(socket_dir, 'munge.socket')
        key = os.open(self.path('munge', 'munge.key'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(key, 'wb') as f:
            f.write(os.urandom(1024))
        self.write_conf()
        deadline = time.monotonic() + timeout

        self.launch('munged', '--foreground', f'--socket={self.munge_socket}',
                    f'--key-file={self.path("munge", "munge.key")}',
                    f'--pid-file={self.path("munge", "munged.pid")}',
                    f'--seed-file={self.path("munge", "munged.seed")}',
                    f'--log-file={self.path("munged.log")}')
        self.wait_until(
            'munged answers', deadline,
            lambda: subprocess.run(['munge', '--no-input', f'--socket={self.munge_socket}'],
                                   env=self.env,
                                   capture_output=True).returncode == 0)

        self.launch('slurmctld', '-D', '-f', self.conf)
        self.launch('slurmd', '-D', '-N', self.host, '-f', self.conf)
        self.wait_until(f'node {self.host} is idle in sinfo', deadline,
                        lambda: self.node_state() == 'idle')

    def write_conf(self) -> None:
        node = subprocess.run(['slurmd', '-C'], env=self.env, capture_output=True, text=True)
        hardware = [line for line in node.stdout.splitlines() if line.startswith('NodeName=')]
        if not hardware:
            raise ClusterError(f'`slurmd -C` printed no NodeName line:\n{node.stdout}\n'
                               f'{node.stderr}')
        # this host's sockets, cores and threads; not RealMemory (the node would be drained
        # if free memory fell below it), nor its own NodeName
        fields = [field for field in hardware[0].split()[1:] if not field.startswith('RealMemory=')]
        lines = [
            'ClusterName=mmdualtoken-test',
            f'SlurmctldHost={self.host}(127.0.0.1)',
            f'SlurmctldPort={free_port()}',
            f'SlurmdPort={free_port()}',
            'SlurmUser=root',
            'SlurmdUser=root',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            f'AuthInfo=socket={self.munge_socket}',
            f'StateSaveLocation={self.path("state")}',
            f'SlurmdSpoolDir={self.path("spool")}',
            f'SlurmctldPidFile={self.path("slurmctld.pid")}',
            f'SlurmdPidFile={self.path("slurmd.pid")}',
            f'SlurmctldLogFile={self.path("slurmctld.log")}',
            f'SlurmdLogFile={self.path("slurmd.log")}',
            'SlurmctldDebug=info',
            'SlurmdDebug=info',
            # no cgroups: processes tracked through /proc, tasks not bound to CPUs
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'JobAcctGatherType=jobacct_gather/none',
            'AccountingStorageType=accounting_storage/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_CPU',
            'MpiDefault=none',
            'ReturnToService=2',
            'MailProg=/bin/true',
            f'NodeName={self.host} NodeAddr=127.0.0.1 {" ".join(fields)} State=UNKNOWN',
            f'PartitionName={PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE '
            'State=UP',
        ]
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def launch(self, name: str, *args: str) -> None:
        with open(self.path(f'{name}.out'), 'wb') as out:
            self.processes[name] = subprocess.Popen([shutil.which(name, path=SEARCH_PATH), *args],
                                                    env=self.env,
                                                    stdout=out,
                                                    stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL)

    def wait_until(self, what: str, deadline: float, ready) -> None:
        while not ready():
            ended = {
                name: proc.returncode
                for name, proc in self.processes.items() if proc.poll() is not None
            }
            if ended:
                raise ClusterError(f'Slurm test cluster: {", ".join(ended)} ended (exit '
                                   f'{", ".join(map(str, ended.values()))}) before {what}\n'
                                   f'{self.logs()}')
            if time.monotonic() > deadline:
                raise ClusterError(f'Slurm test cluster: not ready in time ({what}; sinfo: '
                                   f'{self.node_state()!r})\n{self.logs()}')
            time.sleep(0.5)

    def node_state(self) -> str:
        proc = subprocess.run(
            ['sinfo', '--noheader', '--Node', f'--nodes={self.host}', '--format=%t'],
            env=self.env,
            capture_output=True,
            text=True)
        return proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip()

    def logs(self, chars: int = 3000) -> str:
        """The tail of every daemon's log and output, for a failure message."""
        parts = []
        for name in ('munged.log', 'munged.out', 'slurmctld.log', 'slurmctld.out', 'slurmd.log',
                     'slurmd.out', 'slurm.conf'):
            if osp.isfile(self.path(name)):
                with open(self.path(name), errors='replace') as f:
                    parts.append(f'--- {self.path(name)} ---\n{f.read()[-chars:]}')
        return '\n'.join(parts)

    def stop(self) -> None:
        """End the daemons this object started, by their process ids, then whatever still
        runs under this cluster's configuration (the slurmstepd and tasks of a job step a
        failed test left behind: slurmd leaves running steps alone when it stops)."""
        for name in reversed(self.DAEMONS):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in self.step_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.munge_socket is not None:
            shutil.rmtree(osp.dirname(self.munge_socket), ignore_errors=True)

    def step_pids(self) -> list:
        """Processes other than this one whose environment names this cluster's
        slurm.conf (they were started by its daemons or its srun)."""
        mark = f'SLURM_CONF={self.conf}'.encode()
        found = []
        for entry in os.listdir('/proc'):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f'/proc/{entry}/environ', 'rb') as f:
                    if mark in f.read().split(b'\0'):
                        found.append(int(entry))
            except OSError:
                continue
        return found
