"""What tools/train.py and tools/test.py share: picking the framework, applying arguments.

One entry point serves mmpretrain, mmdet and mmsegmentation. The framework is the config's
``default_scope``; the arguments mean what they mean in each framework's own tools.
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

FRAMEWORKS = {
    'mmpretrain': 'ImageNet classification',
    'mmdet': 'COCO detection',
    'mmseg': 'ADE20K semantic segmentation',
}


def framework_of(cfg: Config) -> str:
    """The framework a config runs in (its ``default_scope``), or a clear error."""
    scope = cfg.get('default_scope')
    if scope not in FRAMEWORKS:
        raise ValueError(f'The config must set default_scope to one of {sorted(FRAMEWORKS)} '
                         f'(through its _base_ files), got {scope!r}')
    return scope


def add_common_args(parser: argparse.ArgumentParser):
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=20')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher (pytorch for torchrun)')
    # torchrun passes --local-rank (older launchers --local_rank)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    """Read the config, apply --cfg-options, --launcher and --work-dir."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'Config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    framework_of(cfg)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """Build the Runner the config asks for (``runner_type``) or mmengine's default."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
