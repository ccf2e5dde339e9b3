"""Comparing a checkpoint's tensors with a model's, with one clear message on mismatch."""
from typing import Mapping, Optional

import torch


def state_dict_mismatch(weights: Mapping[str, torch.Tensor],
                        reference: Mapping[str, torch.Tensor],
                        resizable: tuple = ('global_tokens', )) -> Optional[str]:
    """Describe how ``weights`` differ from ``reference`` (keys and shapes), or None.

    Keys in ``resizable`` may differ in shape (the backbone resizes them at load time).
    """
    missing = [k for k in reference if k not in weights]
    unexpected = [k for k in weights if k not in reference]
    mismatched = [
        f'{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}'
        for k, v in reference.items()
        if k in weights and k not in resizable and weights[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return None

    def head(items):
        return ', '.join(items[:3]) + (f' ... ({len(items)} in all)' if len(items) > 3 else '')

    problems = [
        f'{len(missing)} missing ({head(missing)})' if missing else '',
        f'{len(unexpected)} unexpected ({head(unexpected)})' if unexpected else '',
        f'{len(mismatched)} of another shape ({head(mismatched)})' if mismatched else ''
    ]
    return '; '.join(p for p in problems if p)
