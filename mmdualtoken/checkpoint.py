"""Bring DualToken-ViT checkpoints of other layouts into the one our configs load.

The canonical layout is mmengine's classification checkpoint: ``{'state_dict': {...}}``
with the backbone's tensors under ``backbone.``, which detection and segmentation configs
load with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
Accepted inputs: that layout; a bare state dict; keys without ``backbone.``; DDP's
``module.`` prefix; mmengine EMA weights (``ema_state_dict``, keys under ``module.``, with a
``steps`` counter). Converting a converted checkpoint changes nothing.

:func:`check_pretrained_checkpoint` is what tools/train.py asks before it builds anything:
does the ImageNet checkpoint a dense config fine-tunes from exist?
"""
import os
import os.path as osp
from collections import OrderedDict
from typing import Optional

import torch

from .errors import MissingFileError
from .models import DualTokenViT
from .models.state_dict_check import state_dict_mismatch

BACKBONE_PREFIX = 'backbone.'


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def extract_backbone_weights(checkpoint: dict, use_ema: bool = False) -> 'OrderedDict':
    """The backbone tensors of any accepted layout, keyed as in :class:`DualTokenViT`."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'A checkpoint must be a dict of tensors or hold a state_dict, got '
                        f'{type(checkpoint).__name__}')
    if use_ema:
        if 'ema_state_dict' not in checkpoint:
            raise KeyError('use_ema=True but the checkpoint has no ema_state_dict (it was not '
                           'trained with an EMAHook); keys: ' + ', '.join(sorted(checkpoint)))
        state = checkpoint['ema_state_dict']
    else:
        state = checkpoint.get('state_dict', checkpoint)
    weights = OrderedDict()
    has_backbone = any(_strip(k, 'module.').startswith(BACKBONE_PREFIX) for k in state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or key == 'steps':
            continue
        key = _strip(key, 'module.')
        if has_backbone:
            if not key.startswith(BACKBONE_PREFIX):
                continue  # neck, head: not the backbone's
            key = key[len(BACKBONE_PREFIX):]
        weights[key] = value
    return weights


def check_arch(weights: dict, arch, **backbone_kwargs) -> None:
    """Raise a clear error unless ``weights`` are exactly those of a DualTokenViT(arch).

    A global-token grid of another size is accepted: the backbone resizes it at load time.
    """
    reference = DualTokenViT(arch=arch, **backbone_kwargs).state_dict()
    problem = state_dict_mismatch(weights, reference)
    if problem:
        raise ValueError(
            f'This checkpoint is not a DualTokenViT arch={arch!r} backbone: {problem}. '
            f'Choose the arch it was trained with (one of {sorted(DualTokenViT.arch_zoo)} '
            'or a custom dict).')


def to_backbone_checkpoint(checkpoint: dict,
                           arch,
                           use_ema: bool = False,
                           meta: Optional[dict] = None,
                           **backbone_kwargs) -> dict:
    """Convert to ``{'meta': ..., 'state_dict': {'backbone.<key>': tensor}}`` after checking
    that the weights are those of ``DualTokenViT(arch)``."""
    weights = extract_backbone_weights(checkpoint, use_ema=use_ema)
    check_arch(weights, arch, **backbone_kwargs)
    state_dict = OrderedDict((BACKBONE_PREFIX + k, v) for k, v in weights.items())
    return dict(
        meta=dict(meta or {}, converted_by='mmdualtoken', arch=str(arch)), state_dict=state_dict)


# the ImageNet config that pretrains each named arch (configs/<name>.py); its run writes
# work_dirs/<name>/epoch_300.pth
PRETRAINING_CONFIGS = {
    **dict.fromkeys(['t', 'tiny'], 'dualtoken_t_in1k'),
    **dict.fromkeys(['s', 'small'], 'dualtoken_s_in1k'),
    'tiny-mix': 'dualtoken_t-mix_in1k',
    'small-mix': 'dualtoken_s-mix_in1k',
}
FROM_SCRATCH = '--cfg-options model.backbone.init_cfg=None'


def check_pretrained_checkpoint(cfg) -> None:
    """Stop with one line when the config's DualTokenViT fine-tunes from a local checkpoint
    that does not exist: the file, the pretraining command that writes it, and the override
    that trains the backbone from scratch.

    Only ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=<local path>)`` of a
    DualTokenViT is checked; remote checkpoints (``https://``, ``open-mmlab://``...) are read
    by mmengine when the model is initialised.
    """
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    if not (str(backbone.get('type', '')).split('.')[-1] == 'DualTokenViT'
            and isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'):
        return
    checkpoint = init_cfg.get('checkpoint')
    if not isinstance(checkpoint, str) or '://' in checkpoint or \
            osp.isfile(osp.expanduser(checkpoint)):
        return
    arch = backbone.get('arch', 'small')
    name = PRETRAINING_CONFIGS.get(arch.lower()) if isinstance(arch, str) else None
    if name is None:  # a custom arch dict
        pretrain = ('pretrain this arch on ImageNet (a copy of configs/dualtoken_s_in1k.py '
                    'with this arch dict as model.backbone.arch)')
    else:
        pretrain = f'pretrain it with `python tools/train.py configs/{name}.py`'
        written = osp.join('work_dirs', name, '')
        if not osp.normpath(checkpoint).startswith(written):
            pretrain += f' (it writes {written}epoch_<N>.pth: point the checkpoint there)'
    where = '' if osp.isabs(checkpoint) else f', relative to {os.getcwd()}'
    raise MissingFileError(
        f'Pretrained backbone checkpoint not found: {checkpoint} '
        f'(model.backbone.init_cfg.checkpoint{where}); {pretrain}, or train the backbone '
        f'from scratch with {FROM_SCRATCH}')
