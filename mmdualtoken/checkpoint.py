"""Bring DualToken-ViT checkpoints of other layouts into the one our configs load.

The canonical layout is mmengine's classification checkpoint: ``{'state_dict': {...}}``
with the backbone's tensors under ``backbone.``, which detection and segmentation configs
load with ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
Accepted inputs: that layout; a bare state dict; keys without ``backbone.``; DDP's
``module.`` prefix; mmengine EMA weights (``ema_state_dict``, keys under ``module.``, with a
``steps`` counter). Converting a converted checkpoint changes nothing.
"""
from collections import OrderedDict
from typing import Optional

import torch

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


def to_backbone_checkpoint(checkpoint: dict, arch, use_ema: bool = False,
                           meta: Optional[dict] = None, **backbone_kwargs) -> dict:
    """Convert to ``{'meta': ..., 'state_dict': {'backbone.<key>': tensor}}`` after checking
    that the weights are those of ``DualTokenViT(arch)``."""
    weights = extract_backbone_weights(checkpoint, use_ema=use_ema)
    check_arch(weights, arch, **backbone_kwargs)
    state_dict = OrderedDict((BACKBONE_PREFIX + k, v) for k, v in weights.items())
    return dict(meta=dict(meta or {}, converted_by='mmdualtoken', arch=str(arch)),
                state_dict=state_dict)
