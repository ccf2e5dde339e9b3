"""tools/train.py and tools/test.py: one entry point for mmpretrain, mmdet and mmseg.

The framework is the config's
``default_scope``; the arguments mean what they mean in each framework's own tools.
"""
import argparse
import contextlib
import gc
import os
import os.path as osp
import sys
from typing import Optional

import torch
from mmengine.config import Config, DictAction

import mmdualtoken  # noqa: F401  (registers the backbone, allow-lists checkpoint types)
from .checkpoint import check_pretrained_checkpoint
from .datasets.checks import check_datasets, once_per_node
from .device_checks import (check_cuda_ops, check_gpus_expected, configure_determinism,
                            relax_determinism)
from .errors import BadConfigError, DistributedTimeoutError, LaunchError, MissingFileError, RunFault

FRAMEWORKS = {
    'mmpretrain': 'ImageNet classification',
    'mmdet': 'COCO detection',
    'mmseg': 'ADE20K semantic segmentation',
}


def framework_of(cfg: Config) -> str:
    """The framework a config runs in (its ``default_scope``), or a clear error."""
    scope = cfg.get('default_scope')
    if scope not in FRAMEWORKS:
        raise BadConfigError(f'The config must set default_scope to one of '
                             f'{sorted(FRAMEWORKS)} (through its _base_ files), got {scope!r}')
    return scope


def add_common_args(parser: argparse.ArgumentParser):
    parser.add_argument(
        '--work-dir', help='where logs and checkpoints go '
        '(default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_iters=20')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (pytorch for torchrun)')
    parser.add_argument(
        '--dist-timeout',
        type=float,
        metavar='SECONDS',
        help='distributed runs: how long a rank waits in a collective for '
        'the others before it fails (env_cfg.dist_cfg.timeout; torch\'s '
        'default: 1800 on gloo, 600 on NCCL, where the timeout ends the '
        'process instead of raising: docs/training.md)')
    # torchrun passes --local-rank (older launchers --local_rank)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    """Read the config, apply --cfg-options, --launcher and --work-dir."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise MissingFileError(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    framework_of(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.dist_timeout is not None:
        if args.dist_timeout <= 0:
            raise BadConfigError(f'--dist-timeout must be a positive number of seconds, got '
                                 f'{args.dist_timeout:g}')
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['timeout'] = args.dist_timeout
    return cfg


# mmpretrain's datasets of four idx files in one folder, and what lays them out here
IDX_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
             't10k-labels-idx1-ubyte')
IDX_DATASETS = {
    'FashionMNIST': 'Lay them out with python tools/data/prepare_fashion_mnist.py.',
    'MNIST': "Put MNIST's four files there, uncompressed.",
}


def check_idx_files(dataset: dict, where: str) -> None:
    """mmpretrain's MNIST and FashionMNIST with ``download=False``: the four files must be in
    the folder (data_root joined with data_prefix), uncompressed."""
    prefix = dataset.get('data_prefix') or ''
    prefix = prefix.get('root', '') if isinstance(prefix, dict) else prefix
    folder = osp.join(dataset.get('data_root') or '', prefix)
    missing = [osp.join(folder, f) for f in IDX_FILES if not osp.isfile(osp.join(folder, f))]
    if missing and not dataset.get('download', True):
        raise MissingFileError(f'Dataset files not found ({where}, relative to {os.getcwd()}): '
                               f'{", ".join(missing)}. {IDX_DATASETS[dataset["type"]]}')


def check_dataset_paths(cfg: Config, splits) -> None:
    """Fail before building anything when a dataset folder or annotation file is missing."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        dataset = loader.get('dataset') if loader else None
        while dataset is not None and 'dataset' in dataset:  # RepeatDataset & co.
            dataset = dataset['dataset']
        if not dataset:
            continue
        if dataset.get('type') in IDX_DATASETS:
            check_idx_files(dataset, f'{split}_dataloader.dataset')
            continue
        root = dataset.get('data_root') or ''
        where = f'{split}_dataloader.dataset'
        hint = ('Put the dataset there (docs/training.md, "Data"), point --cfg-options '
                f'{where}.data_root=... at it, or use a config under configs/tiny/ after '
                '`python tools/data/make_tiny_datasets.py`.')
        if '://' in root:
            continue
        if root and not osp.isdir(root):
            raise MissingFileError(f'Dataset folder not found: {root!r} ({where}.data_root, '
                                   f'relative to {os.getcwd()}). {hint}')
        ann_file = dataset.get('ann_file')
        if ann_file and '://' not in ann_file:
            path = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
            if not osp.isfile(path):
                raise MissingFileError(f'Annotation file not found: {path!r} '
                                       f'({where}.ann_file). {hint}')


def cpus_per_task(config: str, split: str = 'train') -> int:
    """The CPUs one process of ``config`` keeps busy: itself and its ``split`` loader's
    workers (the default CPUS_PER_TASK of tools/slurm_train.sh and tools/slurm_test.sh)."""
    loader = Config.fromfile(config).get(f'{split}_dataloader') or {}
    return int(loader.get('num_workers', 0)) + 1


SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'TorchSyncBN')


def revert_sync_bn_in_config(node) -> int:
    """Replace every SyncBN norm config under ``node`` by BN, in place; return how many.

    Config-level counterpart of mmengine's ``revert_sync_batchnorm`` (which converts built
    modules): done before anything is built, so nothing needs its weights carried over.
    """
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += revert_sync_bn_in_config(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += revert_sync_bn_in_config(value)
    return count


def sync_bn_runs(cfg: Config) -> bool:
    """SyncBN needs several processes on GPUs (NCCL); a single process or gloo on CPU
    cannot run it (torch refuses CPU tensors when it synchronises)."""
    return cfg.get('launcher', 'none') != 'none' and torch.cuda.is_available()


def join_process_group(cfg: Config) -> None:
    """Create the process group of a distributed launch before the Runner, as it would: on
    GPUs mmengine's ``init_dist(launcher, **env_cfg.dist_cfg)``, without a GPU gloo
    (:func:`prepare_cpu_distributed`). The Runner then finds it and creates none. The checks
    of the data then run once per machine, the other processes waiting for the outcome."""
    from .engine import prepare_cpu_distributed
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or _in_process_group() or prepare_cpu_distributed(cfg):
        return
    from mmengine.dist import init_dist
    init_dist(launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))


def check_data(cfg: Config, splits) -> None:
    """The checks of the data's content before training or testing
    (:func:`~mmdualtoken.datasets.checks.check_datasets`), once per machine."""
    join_process_group(cfg)
    with distributed_timeout_as_fault(cfg):
        once_per_node(check_datasets, cfg, splits)


def build_runner(cfg: Config):
    """Build the Runner the config asks for (``runner_type``) or mmengine's default.

    Without a GPU, a distributed launch gets a gloo process group and a CPU DDP wrapper
    (mmdualtoken.engine.cpu_distributed), so tools/dist_train.sh works unchanged. The
    segmentation configs use SyncBN as OpenMMLab's multi-GPU configs do; where it cannot run
    (one process, or no GPU) it becomes BN, with a log line. On CUDA a detector's mmcv ops
    are checked for CUDA kernels, and ``randomness.deterministic`` is made to run
    (:mod:`mmdualtoken.device_checks`).
    """
    from mmengine.logging import print_log
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from .engine import prepare_cpu_distributed
    if not sync_bn_runs(cfg):
        reverted = revert_sync_bn_in_config(cfg.model)
        if reverted:
            where = 'a single process' if cfg.get('launcher', 'none') == 'none' else 'CPU (gloo)'
            print_log(
                f'SyncBN -> BN in {reverted} norm config(s): SyncBN cannot run in {where}.',
                logger='current')
    check_cuda_ops(cfg)
    deterministic_on_cuda = configure_determinism(cfg)
    prepare_cpu_distributed(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if deterministic_on_cuda:
        relax_determinism()  # after the Runner's set_random_seed
    return runner


AMP_WRAPPERS = ('AmpOptimWrapper', 'CPUAmpOptimWrapper')


def enable_amp(cfg: Config) -> str:
    """--amp: mixed precision with mmengine's AmpOptimWrapper on GPUs, in bf16 where the GPU
    computes it natively (compute capability 8.0 and newer: A100, H100, RTX 30xx...), else
    fp16; bf16 autocast on CPU (:class:`CPUAmpOptimWrapper`). The loss scaler stays on
    (mmengine's ``loss_scale='dynamic'``): bf16 needs no scaling, but the scaler also skips a
    step whose gradients hold NaN or Inf. Without --amp training is fp32, as mmpretrain's
    configs of this class train (docs/training.md, "Precision and compilation on GPUs").
    Returns the wrapper type."""
    from mmengine.logging import print_log
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper in AMP_WRAPPERS:
        print_log(f'AMP is already enabled in the config ({wrapper}).', logger='current')
        return wrapper
    if wrapper != 'OptimWrapper':
        raise BadConfigError(f'--amp needs optim_wrapper.type OptimWrapper (or one of '
                             f'{list(AMP_WRAPPERS)}), got {wrapper!r}')
    if torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        native_bf16 = torch.cuda.get_device_capability()[0] >= 8
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16' if native_bf16 else 'float16')
    else:
        cfg.optim_wrapper.type = 'CPUAmpOptimWrapper'
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16')
    print_log(f'--amp: {cfg.optim_wrapper.type}, {cfg.optim_wrapper.dtype}', logger='current')
    return cfg.optim_wrapper.type


def enable_compile(cfg: Config, flag: bool) -> Optional[dict]:
    """--compile, or ``compile`` in the config: torch.compile the backbone when training starts.

    The config's ``compile`` (mmengine's key: True or a dict of torch.compile's arguments) is
    taken out of mmengine's hands: its Runner would compile the whole train_step, whose
    optimizer step dynamo fails to trace with our configs
    (:mod:`mmdualtoken.engine.compile_backbone`). :class:`CompileBackboneHook` gets the
    arguments instead. ``dynamic`` defaults to False: with symbolic sizes, inductor in torch
    2.14.1 fails on this model's training graphs (pytorch/pytorch#185510); the config's dict
    keeps its other entries, and its own ``dynamic`` if it sets one. ``--compile`` turns
    compilation on even where the config says ``compile = False``.

    Returns the arguments given to the hook, or None when nothing is compiled.
    """
    setting = cfg.pop('compile', None)
    if flag and (setting is None or setting is False):
        setting = True
    if setting is None or setting is False:
        return None
    if not isinstance(setting, (bool, dict)):
        raise BadConfigError(f'compile must be True, False or a dict of torch.compile '
                             f'arguments, got {setting!r}')
    if not (callable(getattr(torch, 'compile', None))
            and callable(getattr(torch.nn.Module, 'compile', None))):
        raise BadConfigError(f'--compile needs torch.compile, which torch {torch.__version__} '
                             'does not have (torch >= 2.1 has it)')
    from mmengine.logging import print_log
    kwargs = dict(setting) if isinstance(setting, dict) else {}
    kwargs.setdefault('dynamic', False)
    cfg.setdefault('custom_hooks', []).append(dict(type='CompileBackboneHook', **kwargs))
    arguments = ', '.join(f'{k}={v!r}' for k, v in kwargs.items())
    print_log(
        f'compile: the backbone, by CompileBackboneHook({arguments}) (not mmengine\'s '
        'compile of the whole train_step)',
        logger='current')
    return kwargs


def parse_train_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a DualToken-ViT model '
                                     '(mmpretrain, mmdet or mmseg config)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CHECKPOINT, or without a value from the latest '
        'checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the backbone (dynamic=False unless the config\'s '
        'compile dict says otherwise); the first iterations compile')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual total batch size / '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--release-cpu-memory',
        action='store_true',
        help="training on the CPU: keep glibc malloc's defaults, which give "
        'freed memory back to the system between steps (slower: '
        'docs/benchmark.md); by default it is kept for reuse')
    add_common_args(parser)
    return parser.parse_args(argv)


def train_main(argv=None):
    """tools/train.py: train from a config of any of the three frameworks."""
    args = parse_train_args(argv)
    check_gpus_expected()
    cfg = load_config(args)

    if not torch.cuda.is_available() and not args.release_cpu_memory:
        from .engine.cpu_heap import keep_freed_cpu_memory
        keep_freed_cpu_memory()
    if args.amp:
        enable_amp(cfg)
    enable_compile(cfg, args.compile)

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise BadConfigError('--auto-scale-lr needs auto_scale_lr = '
                                 'dict(base_batch_size=N) in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        check_resume_pointer(cfg.work_dir)
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            raise MissingFileError(f'--resume: checkpoint not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume

    splits = ['train', 'val'] if cfg.get('val_cfg') else ['train']
    check_dataset_paths(cfg, splits)
    check_pretrained_checkpoint(cfg)
    check_data(cfg, splits)
    runner = build_runner(cfg)
    with distributed_timeout_as_fault(cfg):
        runner.train()
    return runner


def check_resume_pointer(work_dir: str) -> None:
    """--resume without a checkpoint: ``last_checkpoint`` must name a checkpoint that exists.

    The configs' AtomicCheckpointHook never leaves it naming anything else; a checkpoint
    removed by hand, or a work dir written by another tool, can. We stop with the list of
    the checkpoints that are there rather than pick one: the newest file on disk is not
    necessarily the run the user means to continue. No ``last_checkpoint`` at all starts
    from scratch, as in mmengine.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return
    with open(pointer) as f:
        named = f.read().strip()
    if named and ('://' in named or osp.isfile(named)):
        return
    found = sorted(name for name in os.listdir(work_dir) if name.endswith('.pth'))
    choice = (f'resume from one of them explicitly (--resume {osp.join(work_dir, found[-1])}) '
              f'or delete {pointer} to start over' if found else f'delete {pointer} to start over')
    raise MissingFileError(
        f'--resume: {pointer} names {named or "nothing"!r}, which does not exist; '
        f'checkpoints in {work_dir}: {", ".join(found) or "none"}; {choice}')


def parse_test_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a DualToken-ViT model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--show-dir',
        help='write pictures of the predictions into this '
        'folder (mmseg: under its vis_data/vis_image)')
    parser.add_argument(
        '--fuse-for-cpu',
        action='store_true',
        help='CPU only: convert the backbone with mmdualtoken.deploy.fuse_for_cpu '
        'after the checkpoint is loaded (BatchNorm folded into its conv, '
        'activations fused into the kernels before them; same metric, faster '
        'fp32 inference); refused when the model runs on a GPU')
    add_common_args(parser)
    return parser.parse_args(argv)


def enable_show_dir(cfg: Config, show_dir: str) -> None:
    """--show-dir: turn on each framework's visualization hook, a picture of every test
    image into ``show_dir``.

    The three hooks differ (as their own tools/test.py scripts know): mmpretrain's
    VisualizationHook takes ``enable`` and ``out_dir``; mmdet's DetVisualizationHook ``draw``
    and ``test_out_dir``; mmseg's SegVisualizationHook only ``draw``, its pictures going to
    the visualizer's ``save_dir``.
    """
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise BadConfigError('--show-dir needs default_hooks.visualization in the config')
    show_dir = osp.abspath(show_dir)
    framework = framework_of(cfg)
    if framework == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir, interval=1)
    elif framework == 'mmdet':
        hook.update(draw=True, test_out_dir=show_dir)
    else:
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir


def test_main(argv=None):
    """tools/test.py: evaluate a checkpoint with the config's test set and metric."""
    args = parse_test_args(argv)
    check_gpus_expected()
    cfg = load_config(args)
    check_dataset_paths(cfg, ['test'])
    check_data(cfg, ['test'])
    if not osp.isfile(args.checkpoint):
        raise MissingFileError(f'Checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)
    if args.fuse_for_cpu:
        # a hook, so that it runs after the Runner has loaded the checkpoint: the conversion
        # replaces modules, and their state-dict keys with them
        cfg.setdefault('custom_hooks', []).append(dict(type='FuseForCPUHook'))
    runner = build_runner(cfg)
    with distributed_timeout_as_fault(cfg):
        return runner.test()


def _is_timeout(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is torch.distributed's collective timeout."""
    # DistBackendError/DistError (feature-tested: newer torch) or, from gloo, a plain
    # RuntimeError ("[.../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting
    # 10000ms for recv operation to complete" on torch 2.14); not any RuntimeError that
    # says "timeout" (a DataLoader's, for one)
    dist_errors = tuple(
        getattr(torch.distributed, name) for name in ('DistBackendError', 'DistError')
        if hasattr(torch.distributed, name))
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        message = str(error).lower()
        timed_out = 'timed out' in message or 'timeout' in message
        if timed_out and (isinstance(error, dist_errors) or
                          (isinstance(error, RuntimeError)
                           and any(word in message for word in ('gloo', 'nccl', 'collective')))):
            return True
        error = error.__cause__ or error.__context__
    return False


def _in_process_group() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def default_timeout(backend: str) -> float:
    """torch's default process-group timeout for ``backend``, in seconds: 10 minutes for NCCL
    (``default_pg_nccl_timeout``, torch >= 2.2; 30 minutes before), 30 minutes otherwise."""
    from torch.distributed import constants
    nccl = getattr(constants, 'default_pg_nccl_timeout', None)
    if str(backend).lower() == 'nccl' and nccl is not None:
        return nccl.total_seconds()
    return constants.default_pg_timeout.total_seconds()


@contextlib.contextmanager
def distributed_timeout_as_fault(cfg: Config):
    """Turn a distributed collective's timeout into one clear DistributedTimeoutError.

    A rank that dies is noticed by torchrun, which ends the others; a rank that hangs or is
    stopped is not, and the others wait in their next collective until the process-group
    timeout (env_cfg.dist_cfg.timeout, --dist-timeout; :func:`default_timeout`) runs out.
    On gloo the waiting collective then raises, and this gives the one line. On NCCL it
    cannot: NCCL's watchdog thread ends the process (SIGABRT) once it has logged "Watchdog
    caught collective operation timeout", and no Python exception reaches here; torchrun or
    srun then report the rank as failed (docs/training.md, "Resuming and faults").
    """
    try:
        yield
    except Exception as error:
        if not (_in_process_group() and _is_timeout(error)):
            raise
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
        backend = torch.distributed.get_backend()
        waited = (f'{timeout:g} s' if timeout is not None else
                  f"torch's default on {backend}, {default_timeout(backend):g} s")
        raise DistributedTimeoutError(
            f'rank {torch.distributed.get_rank()} of {torch.distributed.get_world_size()}: '
            f'another process did not join a collective operation within the distributed '
            f'timeout ({waited}, --dist-timeout / env_cfg.dist_cfg.timeout): it hangs, was '
            f'stopped or died. Look at the other ranks\' output; raise --dist-timeout if a '
            f'step can legitimately take longer. ({type(error).__name__}: '
            f'{str(error).strip().splitlines()[0] if str(error).strip() else ""})') from error


def run_tool(main) -> None:
    """Run ``main`` as a command: a LaunchError (bad command line, config or data) or a
    RunFault (the run diverged, a distributed collective timed out) becomes one line on
    stderr (``error: ...``) and exit code 1."""
    try:
        main()
    except LaunchError as e:
        if _in_process_group():  # destroying it is local to this process, as at a normal end
            _leave_process_group()
        sys.exit(f'error: {e}')
    except RunFault as e:
        sys.exit(f'error: {e}')
    finally:
        # the interpreter's last garbage collection walks every object that torch, mmengine
        # and the framework created (1-1.5 s at each exit here); the process is ending and
        # its memory goes back to the system, so the collector leaves them alone. Files,
        # loggers and atexit handlers are closed as before. Not in a distributed run: its
        # process group must be destroyed before the exit (below).
        if not _in_process_group():
            gc.freeze()
    if _in_process_group():
        _leave_process_group()


def _leave_process_group() -> None:
    """End a distributed run that ended well: destroy its process group, now.

    ``destroy_process_group`` drops only c10d's own references; the group lives on in the
    runner's reference cycles (its DDP wrapper) until a collection. Left to the interpreter's
    finalization, a gloo group's destruction can abort the exit ("terminate called without an
    active exception", SIGABRT; see pytorch/pytorch#179291), and the launcher (torchrun, or
    srun with --kill-on-bad-exit) then fails the whole run. So the collection runs here,
    while the interpreter is whole."""
    torch.distributed.destroy_process_group()
    gc.collect()
