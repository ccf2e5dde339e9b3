"""Dense configs fine-tune from the ImageNet checkpoint of their arch: tools/train.py loads it
when it is there, stops with one line before building anything when it is not, and
``--cfg-options model.backbone.init_cfg=None`` trains from scratch."""
import os
import time

import numpy as np
import pytest
import torch
from helpers import checkpoints, config, run_tool, scalars
from mmengine.config import Config

from mmdualtoken.checkpoint import check_pretrained_checkpoint
from mmdualtoken.errors import MissingFileError

# the real RetinaNet-S config's init_cfg on the tiny RetinaNet config (which trains from
# scratch): the path the real config names, relative to the working folder
DENSE = 'retinanet_dualtoken_s.py'
TINY = 'tiny/retinanet_dualtoken_s_tiny.py'
ONE_ITERATION = [
    'train_dataloader.dataset.indices=2',
    'train_dataloader.batch_size=2',
    'train_cfg.max_epochs=1',
    'train_cfg.val_interval=2',  # no validation
    'default_hooks.logger.interval=1',
    'default_hooks.checkpoint.interval=1',
]
PRETRAINING = 'python tools/train.py configs/dualtoken_s_in1k.py'
FROM_SCRATCH = '--cfg-options model.backbone.init_cfg=None'


@pytest.fixture(scope='module')
def real_init_cfg():
    init_cfg = Config.fromfile(config(DENSE)).model.backbone.init_cfg.to_dict()
    assert init_cfg['type'] == 'Pretrained' and '://' not in init_cfg['checkpoint']
    return init_cfg


@pytest.fixture
def workdir(tiny_workdir, tmp_path, real_init_cfg):
    """A working folder with the tiny data and a config that fine-tunes the tiny RetinaNet
    from the checkpoint the real config names (not there yet). The tiny config's init_cfg is
    None: mmengine merges a dict over it only with _delete_."""
    os.symlink(tiny_workdir / 'data', tmp_path / 'data')
    (tmp_path / 'retinanet_pretrained.py').write_text(
        f'_base_ = {config(TINY)!r}\n'
        f'model = dict(backbone=dict(init_cfg=dict(_delete_=True, **{real_init_cfg!r})))\n')
    return tmp_path


def train(workdir, *options, check=True):
    start = time.perf_counter()
    proc = run_tool(
        'train.py',
        'retinanet_pretrained.py',
        '--work-dir',
        'run',
        '--cfg-options',
        *ONE_ITERATION,
        *options,
        cwd=str(workdir),
        check=check)
    return proc, time.perf_counter() - start


def losses(work_dir):
    found = [r['loss'] for r in scalars(str(work_dir)) if 'loss' in r]
    assert found and all(np.isfinite(found)), found
    return found


@pytest.mark.slow  # a Runner training
def test_found_and_loaded(workdir, real_init_cfg):
    """An ImageNet run's checkpoint (the whole classifier under backbone. and head., as
    mmengine saves it) at the path the config names loads into the detector's backbone;
    lr 0 keeps the weights, so the checkpoint saved after the iteration shows what loaded."""
    from mmpretrain.apis import get_model
    torch.manual_seed(0)
    classifier = get_model(config('dualtoken_s_in1k.py'))
    path = workdir / real_init_cfg['checkpoint']
    path.parent.mkdir(parents=True)
    torch.save(dict(meta=dict(epoch=300), state_dict=classifier.state_dict()), path)
    backbone = {k: v for k, v in classifier.state_dict().items() if k.startswith('backbone.')}

    proc, _ = train(workdir, 'optim_wrapper.optimizer.lr=0')
    output = proc.stdout + proc.stderr
    line = f'Loaded {len(backbone)} DualTokenViT tensors from {real_init_cfg["checkpoint"]}'
    assert line in output, output[-3000:]
    print(next(out for out in output.splitlines() if line in out))
    print(f'losses: {losses(workdir / "run")}')
    assert checkpoints(str(workdir / 'run')) == ['epoch_1.pth']
    trained = torch.load(
        workdir / 'run' / 'epoch_1.pth', map_location='cpu', weights_only=False)['state_dict']
    for key, value in backbone.items():
        if 'running_' not in key and 'num_batches_tracked' not in key:  # BN statistics move
            torch.testing.assert_close(trained[key], value, rtol=0, atol=0, msg=key)


def test_missing_stops_in_one_line_before_building_anything(workdir, real_init_cfg):
    proc, seconds = train(workdir, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    print(f'exit {proc.returncode} after {seconds:.1f} s: {proc.stderr.strip()}')
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f'error: Pretrained backbone checkpoint not found: '
                               f'{real_init_cfg["checkpoint"]} ')
    assert f'`{PRETRAINING}`' in lines[0] and lines[0].endswith(FROM_SCRATCH)
    # nothing was built: the Runner would have made the work dir and its log
    assert not (workdir / 'run').exists()
    assert 'Loaded' not in proc.stdout and 'Traceback' not in proc.stderr


@pytest.mark.slow  # a Runner training
def test_from_scratch_override_trains(workdir):
    proc, _ = train(workdir, 'model.backbone.init_cfg=None')
    assert 'DualTokenViT tensors from' not in proc.stdout + proc.stderr
    print(f'losses: {losses(workdir / "run")}')
    assert checkpoints(str(workdir / 'run')) == ['epoch_1.pth']
    saved = Config.fromfile(workdir / 'run' / 'retinanet_pretrained.py')  # the Runner's dump
    assert saved.model.backbone.init_cfg is None  # the backbone's default init


@pytest.mark.parametrize('name, pretraining',
                         [('retinanet_dualtoken_s.py', 'dualtoken_s_in1k'),
                          ('retinanet_dualtoken_t.py', 'dualtoken_t_in1k'),
                          ('mask_rcnn_dualtoken_t.py', 'dualtoken_t_in1k'),
                          ('fpn_dualtoken_t_ade20k.py', 'dualtoken_t_in1k'),
                          ('upernet_dualtoken_s_ade20k.py', 'dualtoken_s_in1k')])
def test_the_check_names_the_pretraining_of_the_config_arch(name, pretraining, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(config(name))
    with pytest.raises(MissingFileError) as error:
        check_pretrained_checkpoint(cfg)
    message = str(error.value)
    assert f'not found: work_dirs/{pretraining}/epoch_300.pth ' in message
    assert f'`python tools/train.py configs/{pretraining}.py`' in message
    assert '(it writes' not in message  # the config names what that command writes
    (tmp_path / 'work_dirs' / pretraining).mkdir(parents=True)
    (tmp_path / 'work_dirs' / pretraining / 'epoch_300.pth').write_bytes(b'')
    check_pretrained_checkpoint(cfg)  # there: nothing to say


def test_the_check_leaves_remote_scratch_and_other_backbones_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(config('fpn_dualtoken_s_ade20k.py'))
    for checkpoint in ('https://example.org/dualtoken_s.pth', 'open-mmlab://resnet50_v1c',
                       'torchvision://resnet50'):
        cfg.model.backbone.init_cfg.checkpoint = checkpoint
        check_pretrained_checkpoint(cfg)
    cfg.model.backbone.init_cfg = None
    check_pretrained_checkpoint(cfg)
    check_pretrained_checkpoint(Config.fromfile(config(TINY)))
    resnet = Config(
        dict(
            model=dict(
                backbone=dict(
                    type='ResNet', init_cfg=dict(type='Pretrained', checkpoint='nowhere.pth')))))
    check_pretrained_checkpoint(resnet)  # not ours to judge


def test_the_check_points_elsewhere_and_custom_archs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(config('retinanet_dualtoken_t.py'))
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'mine.pth')
    with pytest.raises(
            MissingFileError,
            match=r'not found: .*mine.pth \(model.backbone.init_'
            r'cfg.checkpoint\); pretrain it with `python tools/train.py configs/'
            r'dualtoken_t_in1k.py` \(it writes work_dirs/dualtoken_t_in1k/epoch_'):
        check_pretrained_checkpoint(cfg)
    cfg.model.backbone.arch = dict(embed_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4])
    with pytest.raises(MissingFileError, match='pretrain this arch on ImageNet'):
        check_pretrained_checkpoint(cfg)
