"""Every bad input or bad config gives one clear error, and docs/errors.md lists each.

Each case builds or runs exactly what a user would, in a scratch folder, and checks the
exception type, that the message says enough, and that docs/errors.md holds the row
(tests/doc_tables.py; ``--update-docs`` rewrites the document).
"""
import os
import os.path as osp
import re
from typing import Callable, List, Tuple

import pytest
import torch
from doc_tables import report
from helpers import REPO_ROOT, load_tool

from mmdualtoken.errors import LaunchError
from mmdualtoken.models import DualTokenViT

ARCH = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])


def _pretrained(path: str) -> None:
    DualTokenViT(
        arch=ARCH, init_cfg=dict(type='Pretrained', checkpoint=path,
                                 prefix='backbone.')).init_weights()


def _save(path: str, state: dict) -> str:
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in state.items()}), path)
    return path


def other_arch_checkpoint(tmp: str):
    other = DualTokenViT(arch=dict(ARCH, embed_dims=[8, 16, 32], num_heads=[1, 1, 1]))
    _pretrained(_save(osp.join(tmp, 'other_arch.pth'), other.state_dict()))


def checkpoint_missing_keys(tmp: str):
    state = DualTokenViT(arch=ARCH).state_dict()
    del state['norm2.weight']
    _pretrained(_save(osp.join(tmp, 'partial.pth'), state))


def corrupt_checkpoint(tmp: str):
    path = _save(osp.join(tmp, 'corrupt.pth'), DualTokenViT(arch=ARCH).state_dict())
    with open(path, 'rb') as f:
        head = f.read(2000)
    with open(path, 'wb') as f:
        f.write(head)
    _pretrained(path)


def missing_dataset(tmp: str):
    from mmdualtoken.launch import train_main
    old = os.getcwd()
    os.chdir(tmp)  # no data/ here
    try:
        train_main([
            osp.join(REPO_ROOT, 'configs', 'tiny', 'retinanet_dualtoken_s_tiny.py'), '--work-dir',
            osp.join(tmp, 'work')
        ])
    finally:
        os.chdir(old)


def missing_config(tmp: str):
    from mmdualtoken.launch import train_main
    train_main(['configs/retinanet_dualtoken_x.py'])


def missing_checkpoint(tmp: str):
    from mmdualtoken.launch import test_main
    old = os.getcwd()
    os.chdir(tmp)
    try:
        from mmdualtoken.datasets import make_tiny_datasets
        make_tiny_datasets(osp.join(tmp, 'data', 'tiny'), tasks=['coco'], scale=0.05)
        test_main([
            osp.join(REPO_ROOT, 'configs', 'tiny', 'retinanet_dualtoken_s_tiny.py'),
            'work_dirs/retinanet_dualtoken_s_tiny/epoch_8.pth'
        ])
    finally:
        os.chdir(old)


def amp_with_another_wrapper(tmp: str):
    from mmengine.config import Config

    from mmdualtoken.launch import enable_amp
    enable_amp(Config(dict(optim_wrapper=dict(type='ApexOptimWrapper'))))


def resume_pointer_to_missing_checkpoint(tmp: str):
    from mmdualtoken.launch import train_main
    work_dir = osp.join(tmp, 'resume_work')
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, 'epoch_1.pth'), 'wb'):
        pass
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'epoch_2.pth'))
    train_main([
        osp.join(REPO_ROOT, 'configs', 'tiny', 'retinanet_dualtoken_s_tiny.py'), '--work-dir',
        work_dir, '--resume'
    ])


def bad_dist_timeout(tmp: str):
    from mmdualtoken.launch import train_main
    train_main([
        osp.join(REPO_ROOT, 'configs', 'tiny', 'retinanet_dualtoken_s_tiny.py'), '--work-dir',
        osp.join(tmp, 'work'), '--dist-timeout', '0'
    ])


def compile_not_a_setting(tmp: str):
    from mmengine.config import Config

    from mmdualtoken.launch import enable_compile
    enable_compile(Config(dict(compile='yes')), False)


def export_onnx(*args: str):
    """tools/deployment/export_onnx.py with ``args``, as its command line runs it."""
    load_tool('deployment/export_onnx.py').main(list(args))


def export_another_arch(tmp: str):
    path = osp.join(tmp, 'tiny.pth')
    torch.save(dict(state_dict=DualTokenViT(arch='tiny').state_dict()), path)
    export_onnx('--arch', 'small', '--checkpoint', path, '--out', osp.join(tmp, 'x.onnx'))


def unknown_finite_loss_mode(tmp: str):
    from mmdualtoken.engine import FiniteLossHook
    FiniteLossHook(on_nonfinite='ignore')


def gpu_job_without_gpus(tmp: str):
    """tools/train.py in a Slurm step given two GPUs that torch does not see."""
    from unittest import mock

    from mmdualtoken.launch import train_main
    environ = {'SLURM_STEP_GPUS': '0,1', 'CUDA_VISIBLE_DEVICES': '0,1'}
    with mock.patch.dict(os.environ, environ):
        os.environ.pop('MMDUALTOKEN_CPU', None)
        train_main([osp.join(REPO_ROOT, 'configs', 'retinanet_dualtoken_s.py')])


def mmcv_without_cuda_kernels_on_a_gpu(tmp: str):
    """A detector built on a GPU (stand-in: torch.cuda.is_available patched) with the mmcv
    this machine has, built without CUDA."""
    from unittest import mock

    from mmengine.config import Config

    from mmdualtoken.launch import build_runner
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'retinanet_dualtoken_s.py'))
    with mock.patch.object(torch.cuda, 'is_available', lambda: True):
        build_runner(cfg)


def model():
    return DualTokenViT(arch=ARCH).eval()


# (case, exception type, how it is triggered); lambdas take the scratch folder
def fashion_mnist_missing(tmp: str):
    from mmengine.config import Config

    from mmdualtoken.launch import check_dataset_paths
    cfg = Config.fromfile(
        osp.join(REPO_ROOT, 'configs', 'fashion_mnist', 'dualtoken_t_fashion-mnist.py'))
    here = os.getcwd()
    os.chdir(tmp)  # the data folder is relative to where tools/train.py runs
    try:
        check_dataset_paths(cfg, ['train'])
    finally:
        os.chdir(here)


CASES: List[Tuple[str, type, Callable[[str], None]]] = [
    ('unknown arch', ValueError, lambda tmp: DualTokenViT(arch='huge')),
    ('custom arch dict missing keys', ValueError,
     lambda tmp: DualTokenViT(arch=dict(embed_dims=[16, 32, 64], depths=[1, 1, 1]))),
    ('out_indices out of range', ValueError, lambda tmp: DualTokenViT(out_indices=(0, 3))),
    ('frozen_stages out of range', ValueError, lambda tmp: DualTokenViT(frozen_stages=4)),
    ('unknown ablation switch value', ValueError,
     lambda tmp: DualTokenViT(global_tokens='learned')),
    ('misspelt backbone config key', TypeError, lambda tmp: DualTokenViT(drop_path=0.1)),
    ("mmseg base's model.pretrained (a ResNet) reaching the backbone", ValueError,
     lambda tmp: DualTokenViT(pretrained='open-mmlab://resnet50_v1c')),
    ('input not 4-D', ValueError, lambda tmp: model()(torch.rand(3, 224, 224))),
    ('channels not 3', ValueError, lambda tmp: model()(torch.rand(1, 4, 224, 224))),
    ('image below the minimum size', ValueError, lambda tmp: model()(torch.rand(1, 3, 16, 224))),
    ('checkpoint of another arch', ValueError, other_arch_checkpoint),
    ('checkpoint missing keys', ValueError, checkpoint_missing_keys),
    ('corrupt checkpoint file', RuntimeError, corrupt_checkpoint),
    ('training on one 32x32 image (BatchNorm on a 1x1 grid)', ValueError,
     lambda tmp: DualTokenViT(arch=ARCH).train()(torch.rand(1, 3, 32, 32))),
    ('missing dataset path', FileNotFoundError, missing_dataset),
    ('missing config file', FileNotFoundError, missing_config),
    ('missing checkpoint (tools/test.py)', FileNotFoundError, missing_checkpoint),
    ('--amp with another optim wrapper', ValueError, amp_with_another_wrapper),
    ('--resume with last_checkpoint naming a missing file', FileNotFoundError,
     resume_pointer_to_missing_checkpoint),
    ('--dist-timeout not positive', ValueError, bad_dist_timeout),
    ('compile neither True, False nor a dict', ValueError, compile_not_a_setting),
    ('export_onnx.py: checkpoint not found', FileNotFoundError,
     lambda tmp: export_onnx('--checkpoint', osp.join(tmp, 'none.pth'))),
    ('export_onnx.py: checkpoint of another arch', ValueError, export_another_arch),
    ('unknown FiniteLossHook on_nonfinite', ValueError, unknown_finite_loss_mode),
    ('GPUs expected, torch sees none', LaunchError, gpu_job_without_gpus),
    ('a detector on a GPU with mmcv built without CUDA', LaunchError,
     mmcv_without_cuda_kernels_on_a_gpu),
    ('drop_path_rate outside [0, 1)', ValueError,
     lambda tmp: DualTokenViT(arch=ARCH, drop_path_rate=1.)),
    ('Fashion-MNIST files not laid out', FileNotFoundError, fashion_mnist_missing),
]


@pytest.mark.parametrize(
    'index', range(len(CASES)), ids=[re.sub(r'\W+', '_', c[0]).strip('_') for c in CASES])
def test_case_raises_its_error_and_is_documented(index, tmp_path):
    name, expected, trigger = CASES[index]
    with pytest.raises(expected) as caught:
        trigger(str(tmp_path))
    message = str(caught.value).replace(str(tmp_path), '<tmp>')
    # the message names the problem and what is accepted or what to do
    assert len(message) > 30, message
    report('errors.md', '', [name, type(caught.value).__name__, message], index)
