"""Every config builds, in its framework's scope, the model it says it builds.

The expected values are literals taken from what the configs state (not the configs parsed
again), so a config that loses its token budget, its drop path or its SyncBN, a neck that no
longer matches the backbone's widths, or a dense config that fine-tunes from the ImageNet
checkpoint of another arch (or from none), fails here.
"""
import glob
import importlib
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from helpers import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmdualtoken.launch import build_runner, revert_sync_bn_in_config, sync_bn_runs
from mmdualtoken.models import DualTokenViT

CONFIG_DIR = osp.join(REPO_ROOT, 'configs')
CONFIGS = sorted(
    osp.relpath(p, CONFIG_DIR) for p in glob.glob(osp.join(CONFIG_DIR, '*.py')) +
    glob.glob(osp.join(CONFIG_DIR, 'tiny', '*.py')))

SMALL = dict(embed_dims=[56, 112, 224], depths=[2, 6, 6], num_heads=[2, 4, 8])
TINY = dict(embed_dims=[48, 96, 192], depths=[2, 3, 4], num_heads=[2, 4, 8])
# the ImageNet checkpoints the dense configs fine-tune from: the last epoch that
# `python tools/train.py configs/dualtoken_<t|s>_in1k.py` writes
S_IN1K = 'work_dirs/dualtoken_s_in1k/epoch_300.pth'
T_IN1K = 'work_dirs/dualtoken_t_in1k/epoch_300.pth'


# pretrained: the checkpoint of the backbone's init_cfg, or None for the default init
def cls(arch, token_mlp='TokenMlp', num_classes=1000):
    return dict(
        scope='mmpretrain',
        task='cls',
        arch=arch,
        token_mlp=token_mlp,
        out_indices=(2, ),
        gap=True,
        drop_path_rate=0.1,
        max_global_tokens=None,
        sync_bn=0,
        num_classes=num_classes,
        pretrained=None)


def det(task, arch, pretrained, num_classes=80):
    return dict(
        scope='mmdet',
        task=task,
        arch=arch,
        token_mlp='TokenMlp',
        out_indices=(0, 1, 2),
        gap=False,
        drop_path_rate=0.1,
        max_global_tokens=196,
        # SyncBN: the backbone's conv_norm_cfg, and Mask R-CNN's TransposedConvFPN
        sync_bn=2 if task == 'mask_rcnn' else 1,
        num_classes=num_classes,
        pretrained=pretrained)


def seg(task, arch, drop_path_rate, sync_bn, pretrained, num_classes=150):
    return dict(
        scope='mmseg',
        task=task,
        arch=arch,
        token_mlp='TokenMlp',
        out_indices=(0, 1, 2),
        gap=False,
        drop_path_rate=drop_path_rate,
        max_global_tokens=None,
        sync_bn=sync_bn,
        num_classes=num_classes,
        pretrained=pretrained)


# sync_bn: how many SyncBN norm configs the model holds (backbone conv_norm_cfg, heads)
EXPECTED = {
    'dualtoken_s_in1k.py':
    cls(SMALL),
    'dualtoken_s-mix_in1k.py':
    cls(SMALL, token_mlp='MixMlp'),
    'dualtoken_t_in1k.py':
    cls(TINY),
    'dualtoken_t-mix_in1k.py':
    cls(TINY, token_mlp='MixMlp'),
    'retinanet_dualtoken_s.py':
    det('retinanet', SMALL, S_IN1K),
    'retinanet_dualtoken_t.py':
    det('retinanet', TINY, T_IN1K),
    'mask_rcnn_dualtoken_s.py':
    det('mask_rcnn', SMALL, S_IN1K),
    'mask_rcnn_dualtoken_t.py':
    det('mask_rcnn', TINY, T_IN1K),
    'fpn_dualtoken_s_ade20k.py':
    seg('fpn', SMALL, 0.1, sync_bn=2, pretrained=S_IN1K),
    'fpn_dualtoken_t_ade20k.py':
    seg('fpn', TINY, 0.1, sync_bn=2, pretrained=T_IN1K),
    'upernet_dualtoken_s_ade20k.py':
    seg('upernet', SMALL, 0.2, sync_bn=3, pretrained=S_IN1K),
    # the tiny configs train from scratch
    'tiny/dualtoken_s_in1k_tiny.py':
    cls(SMALL, num_classes=4),
    'tiny/retinanet_dualtoken_s_tiny.py':
    det('retinanet', SMALL, None, num_classes=3),
    'tiny/mask_rcnn_dualtoken_s_tiny.py':
    det('mask_rcnn', SMALL, None, num_classes=3),
    'tiny/fpn_dualtoken_s_ade20k_tiny.py':
    seg('fpn', SMALL, 0.1, sync_bn=2, pretrained=None, num_classes=5),
    'tiny/upernet_dualtoken_s_ade20k_tiny.py':
    seg('upernet', SMALL, 0.2, sync_bn=3, pretrained=None, num_classes=5),
}
DENSE_CONFIGS = [name for name, e in EXPECTED.items() if e['sync_bn']]
PRETRAINED_CONFIGS = [name for name, e in EXPECTED.items() if e['pretrained']]


def load(name: str) -> Config:
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def build_model(cfg: Config):
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model)


def sync_bn_configs(node) -> int:
    """How many norm configs of type SyncBN lie under ``node``."""
    if isinstance(node, dict):
        return (node.get('type') == 'SyncBN') + sum(sync_bn_configs(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(sync_bn_configs(v) for v in node)
    return 0


def test_every_config_has_expectations():
    assert CONFIGS == sorted(EXPECTED)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_config_builds_the_model_it_states(name):
    expected = EXPECTED[name]
    cfg = load(name)
    assert cfg.default_scope == expected['scope']
    imports = cfg.custom_imports['imports']
    assert 'mmdualtoken' in imports and 'mmdualtoken.engine' in imports
    # configs/_base_/reliability.py and the AtomicCheckpointHook line of each config
    assert [h['type'] for h in cfg.custom_hooks] == ['RandomStateHook', 'FiniteLossHook']
    assert dict(type='FiniteLossHook', on_nonfinite='stop') in cfg.custom_hooks
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    model = build_model(cfg)
    if not expected['sync_bn']:  # classification: plain BN
        assert 'SyncBN' not in cfg.pretty_text
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
        assert any(type(m) is nn.BatchNorm2d for m in model.backbone.modules())

    backbone = model.backbone
    assert type(backbone).__name__ == 'DualTokenViT'
    arch = expected['arch']
    assert backbone.embed_dims == arch['embed_dims']
    assert backbone.depths == arch['depths']
    assert backbone.num_heads == arch['num_heads']
    assert [len(stage.blocks) for stage in backbone.stages] == arch['depths']
    token_mlp = backbone.stages[0].blocks[0].global_module.token_mlp
    assert type(token_mlp).__name__ == expected['token_mlp']
    assert backbone.out_indices == expected['out_indices']
    assert backbone.gap_before_final_norm is expected['gap']
    # drop path rises linearly to the config's rate in the last block
    assert backbone.stages[-1].blocks[-1].drop_path.drop_prob == \
        pytest.approx(expected['drop_path_rate'])
    assert backbone.max_global_tokens == expected['max_global_tokens']
    for stage in backbone.stages:
        for block in stage.blocks:
            assert block.global_module.downsample.max_global_tokens == \
                expected['max_global_tokens']
    if expected['pretrained']:
        assert backbone.init_cfg == dict(
            type='Pretrained', prefix='backbone.', checkpoint=expected['pretrained'])
    else:
        assert backbone.init_cfg == DualTokenViT.default_init_cfg

    dims = arch['embed_dims']
    task = expected['task']
    if task == 'cls':
        assert model.head.in_channels == dims[2]
        assert model.head.num_classes == expected['num_classes']
    elif task == 'retinanet':
        assert list(model.neck.in_channels) == dims
        assert model.bbox_head.num_classes == expected['num_classes']
    elif task == 'mask_rcnn':
        # the stride-4 level is made from the stride-8 map by a transposed convolution
        assert type(model.neck).__name__ == 'TransposedConvFPN'
        assert model.neck.upsample[0].in_channels == dims[0]
        assert list(model.neck.fpn.in_channels) == [dims[0], *dims]
        assert model.roi_head.bbox_head.num_classes == expected['num_classes']
    elif task == 'fpn':
        assert list(model.neck.in_channels) == dims
        assert model.decode_head.num_classes == expected['num_classes']
    else:  # upernet
        assert list(model.decode_head.in_channels) == dims
        assert model.auxiliary_head.in_channels == dims[1]
        assert model.decode_head.num_classes == expected['num_classes']
        assert model.auxiliary_head.num_classes == expected['num_classes']


@pytest.mark.parametrize('name', PRETRAINED_CONFIGS)
def test_dense_configs_name_the_checkpoint_their_arch_pretraining_writes(name):
    """The checkpoint is the last one the ImageNet run of the same arch saves: mmengine's
    work_dir of that config, epoch_<max_epochs>.pth, saved at the last epoch and kept."""
    cfg = load(name)
    checkpoint = cfg.model.backbone.init_cfg.checkpoint
    folder, file = osp.split(checkpoint)
    assert osp.dirname(folder) == 'work_dirs'
    pretraining = load(osp.basename(folder) + '.py')
    assert pretraining.default_scope == 'mmpretrain'
    assert pretraining.model.backbone.arch == cfg.model.backbone.arch
    max_epochs = pretraining.train_cfg.max_epochs
    hook = pretraining.default_hooks.checkpoint
    # CheckpointHook saves the last epoch when the interval divides it or save_last holds
    assert hook.get('by_epoch', True)
    assert max_epochs % hook.interval == 0 or hook.get('save_last', True)
    assert file == f'epoch_{max_epochs}.pth'


def trained_norm_parts(model, task: str) -> list:
    """The modules of a dense model whose BatchNorms are trained: the backbone's stem and
    token downsampling, and the head (segmentation) or the neck's upsampling (Mask R-CNN)."""
    parts = [model.backbone.stem, model.backbone.stages[0].blocks[0].global_module.downsample]
    if task in ('fpn', 'upernet'):
        parts.append(model.decode_head)
    elif task == 'mask_rcnn':
        parts.append(model.neck.upsample)
    return parts


@pytest.mark.parametrize('name', DENSE_CONFIGS)
def test_dense_configs_use_sync_bn_and_revert_to_bn(name):
    """At 2 (detection) or 4 (segmentation) images per GPU, every BatchNorm the dense models
    train is SyncBN: mmengine's DDP broadcasts no buffers, so plain BN would give each rank
    statistics of its own, used in its validation, with only rank 0's saved."""
    cfg = load(name)
    task = EXPECTED[name]['task']
    assert cfg.model.backbone.conv_norm_cfg.type == 'SyncBN'
    if task in ('fpn', 'upernet'):
        assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert sync_bn_configs(cfg.model) == EXPECTED[name]['sync_bn']
    model = build_model(cfg)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    for part in trained_norm_parts(model, task):
        assert any(isinstance(m, nn.SyncBatchNorm) for m in part.modules())

    assert revert_sync_bn_in_config(cfg.model) == EXPECTED[name]['sync_bn']
    assert sync_bn_configs(cfg.model) == 0
    assert 'SyncBN' not in str(cfg.model)
    model = build_model(cfg)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    for part in trained_norm_parts(model, task):
        assert any(type(m) is nn.BatchNorm2d for m in part.modules())
    # and the model trains a step with it on CPU (SyncBN would refuse CPU tensors)
    model.backbone.train()
    outs = model.backbone(torch.rand(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()


def test_sync_bn_runs_only_distributed_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert sync_bn_runs(Config(dict(launcher='none'))) is False
    assert sync_bn_runs(Config(dict())) is False  # no launcher: a single process
    assert sync_bn_runs(Config(dict(launcher='pytorch'))) is False  # gloo on CPU
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert sync_bn_runs(Config(dict(launcher='pytorch'))) is True
    assert sync_bn_runs(Config(dict(launcher='none'))) is False


@pytest.mark.parametrize('launcher, cuda, kept', [('none', False, False), ('none', True, False),
                                                  ('pytorch', True, True)])
def test_build_runner_reverts_sync_bn_where_it_cannot_run(monkeypatch, tmp_path, launcher, cuda,
                                                          kept):
    """tools/train.py and test.py build through build_runner: the Runner gets BN unless
    SyncBN can run (several processes with CUDA)."""
    from mmengine.runner import Runner
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.setattr(Runner, 'from_cfg', classmethod(lambda runner_cls, cfg: cfg))
    cfg = load('tiny/fpn_dualtoken_s_ade20k_tiny.py')
    cfg.launcher = launcher
    cfg.work_dir = str(tmp_path)
    given = build_runner(cfg)
    assert sync_bn_configs(given.model) == (2 if kept else 0)


# The protocol each full-data config follows, as the field runs it: processes x images per
# process, the lr at that total batch, the schedule.
PROTOCOLS = {
    # LightViT's recipe (DeiT's lr 5e-4 per 512 images, at 1024)
    'cls': dict(processes=8, images=128, lr=1e-3, epochs=300),
    # mmdet's 1x schedule with AdamW, as PVT and LightViT detect
    'retinanet': dict(processes=8, images=2, lr=1e-4, epochs=12),
    'mask_rcnn': dict(processes=8, images=2, lr=1e-4, epochs=12),
    # the Swin/ConvNeXt UperNet protocol
    'upernet': dict(processes=8, images=2, lr=6e-5, iterations=160000),
    # PVT's Semantic FPN: "8 gpu instead of 4 in mmsegmentation, so lr*2 and max_iters/2"
    'fpn': dict(processes=8, images=4, lr=2e-4, iterations=40000),
}
FULL_DATA_CONFIGS = [name for name in CONFIGS if not name.startswith('tiny/')] + sorted(
    osp.relpath(p, CONFIG_DIR) for p in glob.glob(osp.join(CONFIG_DIR, 'ablations', '*.py')))


@pytest.mark.parametrize('name', FULL_DATA_CONFIGS)
def test_configs_follow_their_protocol(name):
    """Images per process, auto_scale_lr's base batch (processes x images), the lr and the
    schedule are the protocol's, and the usage line in the config's header launches that
    many processes: --auto-scale-lr on that many keeps the protocol's lr."""
    cfg = load(name)
    task = EXPECTED[name]['task'] if name in EXPECTED else 'cls'
    protocol = PROTOCOLS[task]
    assert cfg.train_dataloader.batch_size == protocol['images']
    assert cfg.auto_scale_lr.base_batch_size == protocol['processes'] * protocol['images']
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(protocol['lr'])
    if 'epochs' in protocol:
        assert cfg.train_cfg.max_epochs == protocol['epochs']
    else:
        assert cfg.train_cfg.max_iters == protocol['iterations']
    with open(osp.join(CONFIG_DIR, name)) as f:
        usage = re.findall(r'^#\s+tools/dist_train\.sh (\S+) (\d+)', f.read(), flags=re.M)
    assert all(path == f'configs/{name}' and int(n) == protocol['processes']
               for path, n in usage), usage


@pytest.mark.parametrize(
    'name',
    [n for n in FULL_DATA_CONFIGS if (EXPECTED[n]['task'] if n in EXPECTED else 'cls') == 'cls'])
def test_imagenet_loaders_keep_a_gpu_fed_and_the_best_checkpoint(name):
    """8 workers per process (tools/slurm_train.sh asks for 9 CPUs a task), kept between
    epochs, batches in pinned memory; the last 3 checkpoints and the best top-1 kept."""
    cfg = load(name)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert (loader.num_workers, loader.persistent_workers, loader.pin_memory) == (8, True, True)
    hook = cfg.default_hooks.checkpoint
    assert (hook.max_keep_ckpts, hook.save_best, hook.rule) == (3, 'accuracy/top1', 'greater')


def no_decay_promised(name: str, param) -> bool:
    """Whether the configs promise no weight decay for this backbone parameter: norms, biases,
    1-D parameters (the fusion weights weight_aggregated / weight_tokens among them) and the
    global tokens."""
    return param.ndim <= 1 or name == 'global_tokens'


# the weight decay each config's comment promises on the backbone's weight matrices, and
# whether it promises none on its norms, biases, 1-D parameters and global tokens (Semantic
# FPN: PVT's AdamW with one weight decay for every parameter)
DECAY = {
    'cls': (0.04, True),
    'retinanet': (0.05, True),
    'mask_rcnn': (0.05, True),
    'upernet': (0.01, True),
    'fpn': (1e-4, False)
}


@pytest.mark.parametrize('name', [n for n in FULL_DATA_CONFIGS if not n.startswith('ablations/')])
def test_the_optimizer_built_keeps_the_configs_weight_decay_promise(name):
    """The optim wrapper built from the config as its framework builds it (the Runner's
    build_optim_wrapper in the config's scope): parameter by parameter of the backbone, the
    weight decay its comment promises to every trainable parameter; the lr is the config's
    everywhere."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(name)
    task = EXPECTED[name]['task']
    model = build_model(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    decay, promised = DECAY[task]
    seen = {'decayed': 0, 'not decayed': 0}
    for param_name, param in model.backbone.named_parameters():
        if not param.requires_grad:  # the norms of stages that are no output: not optimised
            assert id(param) not in group_of
            continue
        group = group_of[id(param)]
        assert group['lr'] == pytest.approx(cfg.optim_wrapper.optimizer.lr), param_name
        expected = 0.0 if promised and no_decay_promised(param_name, param) else decay
        assert group['weight_decay'] == pytest.approx(expected), param_name
        seen['not decayed' if expected == 0 else 'decayed'] += 1
    assert seen['decayed'] > 0 and (seen['not decayed'] > 0) == promised
    # the fusion weights of the weighted sum are among them
    fusion = [n for n, _ in model.backbone.named_parameters() if n.endswith('weight_tokens')]
    assert fusion


FASHION_MNIST = [
    'fashion_mnist/dualtoken_t_fashion-mnist.py', 'fashion_mnist/resnet18_fashion-mnist.py',
    'fashion_mnist/edgenext-xsmall_fashion-mnist.py'
]


def test_the_fashion_mnist_models_get_one_recipe_and_their_optimizers_one_rule():
    """No tuning for one model: the three configs differ in the model alone (backbone, neck,
    head width, T's init as its ImageNet config's), and the optimizer built as the Runner
    builds it gives every parameter, backbone and head, of each model the same lr and the same
    rule: weight decay 0.05 on weight matrices and kernels, none on norms, biases, 1-D
    parameters and global tokens."""
    from mmengine.optim import build_optim_wrapper
    configs = [load(name) for name in FASHION_MNIST]
    recipes = [{k: v for k, v in cfg.to_dict().items() if k != 'model'} for cfg in configs]
    assert recipes[1] == recipes[0] and recipes[2] == recipes[0]
    models = [{
        k: v
        for k, v in cfg.model.items() if k not in ('backbone', 'neck', 'init_cfg')
    } for cfg in configs]
    assert all({
        **m, 'head': {
            **m['head'], 'in_channels': 0
        }
    } == {
        **models[0], 'head': {
            **models[0]['head'], 'in_channels': 0
        }
    } for m in models)
    for name, cfg in zip(FASHION_MNIST, configs):
        model = build_model(cfg)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
        for param_name, param in model.named_parameters():
            if not param.requires_grad:  # the norms of stages that are no output
                assert id(param) not in group_of and 'norm' in param_name
                continue
            group = group_of[id(param)]
            assert group['lr'] == pytest.approx(1e-3), (name, param_name)
            bare = param_name.split('.', 1)[1]  # without backbone. / head.
            expected = 0.0 if no_decay_promised(bare, param) else 0.05
            assert group['weight_decay'] == pytest.approx(expected), (name, param_name)


def test_the_fashion_mnist_t_is_initialised_as_its_imagenet_config():
    """T's init_cfg takes effect in the classifier the Runner builds: truncated normal, std
    0.02, on the backbone's Linear layers, LayerNorms at weight 1 and bias 0 (a check of the
    initialisation behind docs/fashion_mnist.md)."""
    cfg = load(FASHION_MNIST[0])
    assert cfg.model.init_cfg == load('dualtoken_t_in1k.py').model.init_cfg
    model = build_model(cfg)
    model.init_weights()
    linears = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    large = [m.weight for m in linears if m.weight.numel() >= 4096]
    assert len(large) > 50 and all(0.017 < w.std() < 0.023 for w in large)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
