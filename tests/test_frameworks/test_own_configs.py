"""A user's own config: a framework's stock config with our backbone swapped in, trained by
that framework's own packaged tools/train.py (``<package>/.mim/tools/train.py``).

Each config below is what a user writes: ``_base_`` the stock config, ``custom_imports`` of
mmdualtoken, the backbone replaced with ``_delete_=True`` and the neck or head given its
widths (T: 48/96/192 channels at strides 8/16/32); the rest only points the stock config at
the tiny data and shortens it to two iterations of batch 2, without validation. mmseg's stock
UperNet inherits ``model.pretrained='open-mmlab://resnet50_v1c'`` (its ResNet's checkpoint),
which EncoderDecoder copies into the backbone: set to None it trains, left there it stops the
build with one line saying where it came from and what to set.
"""
import importlib
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, checkpoints, scalars

pytestmark = pytest.mark.slow  # Runner trainings through the frameworks' tools

# What a user writes (T: 48/96/192 channels at strides 8/16/32), then the tiny data and a
# two-iteration schedule without validation; DATA stands for the tiny data folder.
MMDET = """_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmdualtoken'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='DualTokenViT', arch='tiny', out_indices=(0, 1, 2)),
    # strides 8, 16, 32 are P3-P5: the FPN starts at its first input (the stock start_level=1
    # skips ResNet's stride-4 map)
    neck=dict(in_channels=[48, 96, 192], start_level=0),
    bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(128, 96), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='DATA/coco/', indices=4, pipeline=train_pipeline,
                 metainfo=dict(classes=('square', 'circle', 'triangle'))))
val_dataloader, val_cfg, val_evaluator = None, None, None
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""
# mmseg's stock UperNet sets model.pretrained to its ResNet's checkpoint
NO_STOCK_PRETRAINED = "    pretrained=None,  # the stock ResNet checkpoint, not DualTokenViT's\n"
MMSEG = """_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmdualtoken'], allow_failed_imports=False)
crop_size = (64, 64)
model = dict(
""" + NO_STOCK_PRETRAINED + """    data_preprocessor=dict(size=crop_size),
    backbone=dict(_delete_=True, type='DualTokenViT', arch='tiny', out_indices=(0, 1, 2)),
    decode_head=dict(in_channels=[48, 96, 192], in_index=[0, 1, 2], num_classes=5),
    # the stock auxiliary head reads ResNet's stride-16 map: ours is out_index 1
    auxiliary_head=dict(in_channels=96, in_index=1, num_classes=5))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='DATA/ade/ADEChallengeData2016', indices=4,
                 pipeline=train_pipeline,
                 metainfo=dict(classes=('wall', 'building', 'sky', 'floor', 'tree'))))
val_dataloader, val_cfg, val_evaluator = None, None, None
train_cfg = dict(max_iters=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""
MMPRETRAIN = """_base_ = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
custom_imports = dict(imports=['mmdualtoken'], allow_failed_imports=False)
model = dict(
    backbone=dict(_delete_=True, type='DualTokenViT', arch='tiny', out_indices=(2, )),
    head=dict(in_channels=192, num_classes=4))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='DATA/imagenet', indices=4, pipeline=train_pipeline,
                 classes=['red_disc', 'green_square', 'blue_stripes', 'yellow_checker']))
val_dataloader, val_cfg, val_evaluator = None, None, None
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
"""
# package: the user's config, the checkpoint its training writes
USER_CONFIGS = {
    'mmdet': (MMDET, 'epoch_1.pth'),
    'mmseg': (MMSEG, 'iter_2.pth'),
    'mmpretrain': (MMPRETRAIN, 'epoch_1.pth'),
}


def framework_train(package: str, user_config: str, work_dir: str, cwd: str):
    """``python <package>/.mim/tools/train.py user_config --work-dir work_dir``."""
    module = importlib.import_module(package)  # the set-up installs all three frameworks
    tool = osp.join(osp.dirname(module.__file__), '.mim', 'tools', 'train.py')
    assert osp.isfile(tool), f'{package} ships no tools/train.py at {tool}'
    # the installed (editable) mmdualtoken resolves custom_imports already; PYTHONPATH makes a
    # source checkout work as well
    pythonpath = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get('PYTHONPATH')) if p)
    env = dict(
        os.environ,
        OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'),
        PYTHONWARNINGS='ignore',
        PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, tool, user_config, '--work-dir', work_dir],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=env)


def write_user_config(package: str, tiny_workdir, tmp_path, edit=None) -> str:
    text = USER_CONFIGS[package][0].replace('DATA/', f"{tiny_workdir / 'data' / 'tiny'}/")
    if edit:
        text = edit(text)
    path = tmp_path / f'my_{package}_config.py'
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('package', list(USER_CONFIGS))
def test_a_stock_config_with_our_backbone_trains(package, tiny_workdir, tmp_path):
    user_config = write_user_config(package, tiny_workdir, tmp_path)
    work_dir = str(tmp_path / 'work')
    proc = framework_train(package, user_config, work_dir, cwd=str(tmp_path))
    assert proc.returncode == 0, f'{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    output = proc.stdout + proc.stderr
    loss_lines = [line for line in output.splitlines() if 'loss:' in line]
    print(f'{package}:', *loss_lines, sep='\n  ')
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    assert checkpoints(work_dir) == [USER_CONFIGS[package][1]]
    saved = torch.load(
        osp.join(work_dir, USER_CONFIGS[package][1]), map_location='cpu',
        weights_only=False)['state_dict']
    assert 'backbone.global_tokens' in saved  # DualTokenViT's, not the stock ResNet's


def test_mmseg_stock_pretrained_left_in_gives_the_one_line(tiny_workdir, tmp_path):
    """Without ``model.pretrained=None`` the inherited ResNet checkpoint reaches the
    backbone: the build stops with our line, not ``TypeError: unknown argument``."""

    def keep_pretrained(text):
        assert NO_STOCK_PRETRAINED in text
        return text.replace(NO_STOCK_PRETRAINED, '')

    user_config = write_user_config('mmseg', tiny_workdir, tmp_path, keep_pretrained)
    proc = framework_train('mmseg', user_config, str(tmp_path / 'work'), cwd=str(tmp_path))
    assert proc.returncode != 0
    assert 'TypeError' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    print(last)
    assert last.startswith('mmdualtoken.errors.BadConfigError: ')
    assert "DualTokenViT got pretrained='open-mmlab://resnet50_v1c', a checkpoint of " \
        'another backbone' in last
    assert 'model.pretrained of the config' in last and 'Set model.pretrained=None' in last
    assert "init_cfg=dict(type='Pretrained'" in last
