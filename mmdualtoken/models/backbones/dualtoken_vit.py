"""DualToken-ViT (Chu et al., SDM 2024) as an OpenMMLab backbone."""
import copy
import itertools
import math
import os.path as osp
import pickle
import re
import warnings
from contextlib import contextmanager, nullcontext
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import BadConfigError
from ..layers import ConvStem, DualTokenBlock, ResidualMergePatch, resize_token_grid
from ..layers.token_grid import sizes_are_concrete
from ..state_dict_check import state_dict_mismatch

LOCAL_BRANCHES = ('conv', 'window')
GLOBAL_TOKENS = ('position_aware', 'normal', 'none')
DOWNSAMPLES = ('step_wise', 'one_step')
TOKEN_MLPS = ('mlp', 'mix')


def _check_choice(name: str, value, choices: Sequence):
    if value not in choices:
        raise ValueError(f'{name} must be one of {list(choices)}, got {value!r}')


class DualTokenStage(nn.Module):
    """One stage: merge patch (stages 2 and 3), global-token projection, Dual Token Blocks.

    Between stages the global tokens go through LN -> Linear(C -> C') (LightViT style, our
    choice, docs/architecture.md); their grid is unchanged.
    """

    def __init__(self,
                 in_channels: Optional[int],
                 channels: int,
                 blocks: Sequence[nn.Module],
                 project_tokens: bool,
                 norm_cfg: dict,
                 with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.downsample = (
            ResidualMergePatch(in_channels, channels, norm_cfg)
            if in_channels is not None else None)
        self.token_proj = None
        if in_channels is not None and project_tokens:
            self.token_proj = nn.Sequential(
                build_norm_layer(norm_cfg, in_channels)[1], nn.Linear(in_channels, channels))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, tokens: Optional[torch.Tensor]) -> tuple:
        if self.downsample is not None:
            x = self.downsample(x)
        if self.token_proj is not None:
            tokens = self.token_proj(tokens)
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x, tokens = cp.checkpoint(
                    block,
                    x,
                    tokens,
                    use_reentrant=False,
                    context_fn=lambda block=block: self._checkpoint_contexts(block))
            else:
                x, tokens = block(x, tokens)
        return x, tokens

    @staticmethod
    def _checkpoint_contexts(block: nn.Module) -> tuple:
        """``context_fn`` of the checkpoint: (forward context, recompute context).

        The recomputation in backward must not update the BatchNorm running statistics a
        second time, so it runs every BatchNorm that tracked them in the forward pass on
        copies of its running_mean/var and num_batches_tracked, dropped afterwards. (Turning
        ``track_running_stats`` off instead would make batch_norm save two tensors fewer than
        in the forward pass, which checkpoint refuses: it matches saved tensors by position.)
        """
        tracking = [
            m for m in block.modules()
            if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        ]
        names = ('running_mean', 'running_var', 'num_batches_tracked')

        @contextmanager
        def recompute_on_copies_of_running_statistics():
            originals = [[getattr(m, name) for name in names] for m in tracking]
            for module, buffers in zip(tracking, originals):
                for name, buffer in zip(names, buffers):
                    if buffer is not None:
                        setattr(module, name, buffer.clone())
            try:
                yield
            finally:
                for module, buffers in zip(tracking, originals):
                    for name, buffer in zip(names, buffers):
                        if buffer is not None:
                            setattr(module, name, buffer)

        return nullcontext(), recompute_on_copies_of_running_statistics()


@MODELS.register_module()
class DualTokenViT(BaseModule):
    """DualToken-ViT: Position-aware Efficient Vision Transformer with Dual Token Fusion.

    A PyTorch implementation of `DualToken-ViT <https://arxiv.org/abs/2309.12424>`_,
    reconstructed from the paper (no official code exists). Three stages at strides
    8/16/32 on LightViT's stem and merge patches; each Dual Token Block fuses a
    convolutional local branch with position-aware global tokens that are carried from block
    to block through all stages (see :class:`DualTokenBlock`).

    The global tokens: ``grid_size`` is the number of position-aware global tokens every
    block carries and broadcasts (7x7, the paper's best; the paper finds other counts worse
    because of "the interpolation method" and keeps 7x7 to bound the complexity). Per stage
    the Position-aware Token Module downsamples M = (2, 1, 0) times, so at 224x224 every X_ds
    is 7x7. The rule (docs/architecture.md; the ``reference`` below is X_ds's grid at
    224, 7x7 with the default steps):

    * the grid the global branch works on at a block is X_ds's grid scaled by
      ``grid_size / reference`` (ceil-rounded): at 224 it is ``grid_size`` in every block;
    * at 224 with the default 7 nothing is interpolated. With another count X_ga is
      interpolated (bicubic) to G's grid for the weighted sum, G_new has that many tokens and
      the broadcast attends to them, so MACs grow with the count (params stay equal but for
      the tokens themselves and MixMLP's token-mixing layer, which is sized by the count);
    * at other input sizes G is resized (bicubic, align_corners=False) to the scaled grid
      once and the resized tokens flow on (again where a stage's X_ds grid differs);
    * ``max_global_tokens`` caps X_ds and that grid (the largest grid of the same aspect
      ratio within the budget);
    * a checkpoint whose grid differs from ``grid_size`` is resized (bicubic) at load time.

    Args:
        arch (str | dict): A name in :attr:`arch_zoo` (``'tiny'``/``'t'``, ``'small'``/``'s'``,
            ``'tiny-mix'``, ``'small-mix'``) or a dict with keys ``embed_dims``, ``depths``,
            ``num_heads`` (3 entries each) and optionally ``mlp_ratio``, ``token_mlp``.
            Defaults to 'small'.
        in_channels (int): Image channels. Defaults to 3.
        grid_size (int | tuple): Number of global tokens (rows, columns) at 224, see
            above. Defaults to 7.
        max_global_tokens (int, optional): Token budget: where X_ds would hold more tokens
            (high resolution), it is average-pooled to the largest grid that fits, and the
            global tokens' grid is capped the same way. None keeps the paper's behaviour.
            Defaults to None.
        local_branch (str): ``'conv'`` or ``'window'`` (ablation). Defaults to 'conv'.
        global_tokens (str): ``'position_aware'``, ``'normal'`` or ``'none'`` (ablations).
            Defaults to 'position_aware'.
        downsample (str): ``'step_wise'`` or ``'one_step'`` (ablation). Defaults to
            'step_wise'.
        token_mlp (str, optional): ``'mlp'`` or ``'mix'``; None takes the arch's. Defaults
            to None.
        downsample_steps (Sequence[int]): M per stage. Defaults to (2, 1, 0).
        drop_path_rate (float): Stochastic depth, linear over all blocks. Defaults to 0.
        out_indices (int | Sequence[int]): Stages to output (negative counts from the last).
            Defaults to (0, 1, 2).
        frozen_stages (int): -1 freezes nothing; 0 the stem and the global tokens; k also
            stages 1..k with their output norms (ResNet's meaning). Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training. Defaults to
            False.
        with_cp (bool): Gradient checkpointing per block. Defaults to False.
        gap_before_final_norm (bool): Output the globally average-pooled, normed (B, C)
            vector of each out stage (classification) instead of its map. Defaults to False.
        norm_cfg (dict): Token norm. Defaults to ``dict(type='LN', eps=1e-6)``.
        conv_norm_cfg (dict): Norm after convolutions. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation. Defaults to ``dict(type='GELU')``.
        pretrained (str, optional): mmdet's and mmseg's deprecated form of ``init_cfg``
            (mmseg's EncoderDecoder copies a config's ``model.pretrained`` here), read as
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')``
            with a warning; a name of the ``open-mmlab://``/``torchvision://`` model zoos (a
            ResNet's) is refused with what to set. Not together with ``init_cfg``. Defaults
            to None.
        init_cfg (dict | list[dict], optional): Initialization config. None: truncated
            normal (std .02) Linear weights and unit LayerNorms (:attr:`default_init_cfg`);
            ``dict(type='Pretrained', checkpoint, prefix)`` loads a checkpoint strictly. The
            global tokens start truncated normal (std .02). Defaults to None.

    Example:
        >>> import torch
        >>> from mmdualtoken.models import DualTokenViT
        >>> model = DualTokenViT(arch='small').eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 56, 28, 28)
        (1, 112, 14, 14)
        (1, 224, 7, 7)
    """
    # Sizes tuned so that MACs at 224 (attention included) land on the paper's 0.5 G (tiny)
    # and 1.0 G (small): see docs/complexity.md. The paper does not publish its widths.
    num_stages = 3
    num_normal_tokens = 8  # LightViT's count, for global_tokens='normal'
    min_input_size = 32
    arch_zoo = {
        **dict.fromkeys(
            ['t', 'tiny'], {
                'embed_dims': [48, 96, 192],
                'depths': [2, 3, 4],
                'num_heads': [2, 4, 8],
                'token_mlp': 'mlp'
            }),
        **dict.fromkeys(
            ['s', 'small'], {
                'embed_dims': [56, 112, 224],
                'depths': [2, 6, 6],
                'num_heads': [2, 4, 8],
                'token_mlp': 'mlp'
            }),
        'tiny-mix': {
            'embed_dims': [48, 96, 192],
            'depths': [2, 3, 4],
            'num_heads': [2, 4, 8],
            'token_mlp': 'mix'
        },
        'small-mix': {
            'embed_dims': [56, 112, 224],
            'depths': [2, 6, 6],
            'num_heads': [2, 4, 8],
            'token_mlp': 'mix'
        },
    }
    required_arch_keys = ('embed_dims', 'depths', 'num_heads')
    optional_arch_keys = ('mlp_ratio', 'token_mlp')
    # the init of init_cfg=None (and pretrained=None), as mmdet's ResNet has its own
    default_init_cfg = [
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ]
    # model zoos of mmengine's CheckpointLoader that hold other backbones only (ResNets and
    # other CNNs): what OpenMMLab's stock configs name in model.pretrained
    foreign_model_zoos = ('open-mmlab://', 'openmmlab://', 'torchvision://', 'modelzoo://',
                          'mmcls://')

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 grid_size: Union[int, Sequence[int]] = 7,
                 max_global_tokens: Optional[int] = None,
                 local_branch: str = 'conv',
                 global_tokens: str = 'position_aware',
                 downsample: str = 'step_wise',
                 token_mlp: Optional[str] = None,
                 downsample_steps: Sequence[int] = (2, 1, 0),
                 drop_path_rate: float = 0.,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 gap_before_final_norm: bool = False,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 conv_norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 pretrained: Optional[str] = None,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **unknown):
        if unknown:
            self._reject_unknown_arguments(unknown)
        super().__init__(init_cfg=self._resolve_init_cfg(pretrained, init_cfg))
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = list(self.arch_settings['embed_dims'])
        self.depths = list(self.arch_settings['depths'])
        self.num_heads = list(self.arch_settings['num_heads'])
        mlp_ratio = self.arch_settings.get('mlp_ratio', 4.)
        token_mlp = token_mlp if token_mlp is not None else self.arch_settings.get(
            'token_mlp', 'mlp')
        _check_choice('local_branch', local_branch, LOCAL_BRANCHES)
        _check_choice('global_tokens', global_tokens, GLOBAL_TOKENS)
        _check_choice('downsample', downsample, DOWNSAMPLES)
        _check_choice('token_mlp', token_mlp, TOKEN_MLPS)
        self.grid_size = self._parse_grid_size(grid_size)
        if max_global_tokens is not None and (not isinstance(max_global_tokens, int)
                                              or max_global_tokens < 1):
            raise ValueError('max_global_tokens must be None (no budget) or a positive int, '
                             f'got {max_global_tokens!r}')
        if len(downsample_steps) != self.num_stages or any(not isinstance(m, int) or m < 0
                                                           for m in downsample_steps):
            raise ValueError(f'downsample_steps must be {self.num_stages} ints >= 0, got '
                             f'{downsample_steps!r}')
        if in_channels < 1:
            raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1) (the probability of dropping '
                             f'the last block\'s branches), got {drop_path_rate!r}')
        self.in_channels = in_channels
        self.downsample_steps = tuple(downsample_steps)
        self.out_indices = self._parse_out_indices(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}] (-1: none, '
                             f'0: stem and global tokens, k: also stages 1..k), '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.gap_before_final_norm = gap_before_final_norm
        self.global_token_mode = global_tokens
        self.max_global_tokens = max_global_tokens

        self.stem = ConvStem(in_channels, self.embed_dims[0], conv_norm_cfg, norm_cfg, act_cfg)
        if global_tokens == 'position_aware':
            self.global_tokens = nn.Parameter(torch.zeros(1, *self.grid_size, self.embed_dims[0]))
        elif global_tokens == 'normal':
            self.global_tokens = nn.Parameter(
                torch.zeros(1, 1, self.num_normal_tokens, self.embed_dims[0]))
        else:
            self.register_parameter('global_tokens', None)
        if self.global_tokens is not None:
            trunc_normal_(self.global_tokens, std=.02)

        # X_ds's grid at 224 in each stage: the scale of the global-token grid (see above)
        reference_grids = self._token_grids(224, 224)
        total_depth = sum(self.depths)
        rates = [r.item() for r in torch.linspace(0, drop_path_rate, total_depth)]
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            blocks = [
                DualTokenBlock(
                    self.embed_dims[i],
                    self.num_heads[i],
                    downsample_steps[i],
                    mlp_ratio=mlp_ratio,
                    local_branch=local_branch,
                    global_tokens=global_tokens,
                    downsample=downsample,
                    token_mlp=token_mlp,
                    grid_size=self.grid_size,
                    reference_grid=reference_grids[i],
                    max_global_tokens=max_global_tokens,
                    drop_path=rates[sum(self.depths[:i]) + j],
                    norm_cfg=norm_cfg,
                    conv_norm_cfg=conv_norm_cfg,
                    act_cfg=act_cfg) for j in range(self.depths[i])
            ]
            self.stages.append(
                DualTokenStage(
                    self.embed_dims[i - 1] if i > 0 else None,
                    self.embed_dims[i],
                    blocks,
                    project_tokens=global_tokens != 'none',
                    norm_cfg=norm_cfg,
                    with_cp=with_cp))
        # Every stage has its output norm, so that checkpoints move between classification
        # (out_indices=(2, )) and dense configs (0, 1, 2) with no missing keys; the norms of
        # stages that are not output are unused and frozen (DDP then needs no
        # find_unused_parameters).
        for i in range(self.num_stages):
            norm = build_norm_layer(norm_cfg, self.embed_dims[i])[1]
            if i not in self.out_indices:
                norm.requires_grad_(False)
            self.add_module(f'norm{i}', norm)
        self.num_features = [self.embed_dims[i] for i in self.out_indices]

        self._register_load_state_dict_pre_hook(self._resize_global_tokens_on_load)
        self._freeze_stages()

    # ------------------------------------------------------------------ arguments
    @classmethod
    def _reject_unknown_arguments(cls, unknown: dict):
        """A misspelt config key gets its likely intended name and the accepted ones."""
        import difflib
        import inspect
        accepted = [
            p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'unknown')
        ]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=1)
            hints.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
        raise TypeError(f'DualTokenViT got unknown argument(s) {", ".join(hints)}; accepted: '
                        f'{", ".join(accepted)}')

    @classmethod
    def _resolve_init_cfg(cls, pretrained: Optional[str], init_cfg):
        """The init_cfg of ``pretrained`` and ``init_cfg``, read as mmdet's ResNet reads them.

        ``pretrained`` reaches the backbone from a config's ``model.pretrained`` (mmseg's
        stock bases set it to their ResNet's checkpoint, and EncoderDecoder copies it into the
        backbone): a model-zoo name cannot load into DualTokenViT and stops the build with one
        line saying where it came from and what to set, not at the first training step.
        """
        if pretrained is None:
            return copy.deepcopy(cls.default_init_cfg) if init_cfg is None else init_cfg
        if not isinstance(pretrained, str):
            raise TypeError(f'pretrained must be a checkpoint (str) or None, got '
                            f'{type(pretrained).__name__}')
        replacement = ("init_cfg=dict(type='Pretrained', checkpoint=<DualToken-ViT ImageNet "
                       "checkpoint, work_dirs/dualtoken_<t|s>_in1k/epoch_300.pth>, "
                       "prefix='backbone.')")
        if init_cfg is not None:
            raise BadConfigError(f'DualTokenViT got both pretrained={pretrained!r} and '
                                 f'init_cfg={init_cfg!r}: pretrained is the deprecated form '
                                 f'of init_cfg; keep only init_cfg')
        if pretrained.startswith(cls.foreign_model_zoos):
            raise BadConfigError(
                f'DualTokenViT got pretrained={pretrained!r}, a checkpoint of another backbone '
                f'(that model zoo holds ResNets and other CNNs, no DualToken-ViT): it cannot '
                f'load into DualTokenViT. It comes from model.pretrained of the config, '
                f"inherited from the framework's base config (mmseg's EncoderDecoder copies it "
                f'into the backbone). Set model.pretrained=None in your config; to start from '
                f'ImageNet weights give the backbone {replacement}.')
        warnings.warn(f'DualTokenViT: pretrained={pretrained!r} is deprecated (mmdet\'s and '
                      f"mmseg's older form); read as init_cfg=dict(type='Pretrained', "
                      f"checkpoint={pretrained!r}, prefix='backbone.')")
        return dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(f'Unknown arch {arch!r} for DualTokenViT: choose one of '
                                 f'{sorted(cls.arch_zoo)} or pass a dict with keys '
                                 f'{list(cls.required_arch_keys)}')
            return copy.deepcopy(cls.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = [k for k in cls.required_arch_keys if k not in arch]
        unknown = [k for k in arch if k not in cls.required_arch_keys + cls.optional_arch_keys]
        if missing or unknown:
            raise ValueError(f'Custom arch dict must have keys {list(cls.required_arch_keys)} '
                             f'(optional {list(cls.optional_arch_keys)}); missing {missing}, '
                             f'unknown {unknown}')
        for key in cls.required_arch_keys:
            if len(arch[key]) != cls.num_stages:
                raise ValueError(f'arch[{key!r}] needs {cls.num_stages} entries (one per '
                                 f'stage), got {arch[key]!r}')
        for c, h in zip(arch['embed_dims'], arch['num_heads']):
            if c % h:
                raise ValueError(f'embed_dims {list(arch["embed_dims"])} must divide by '
                                 f'num_heads {list(arch["num_heads"])}')
        return copy.deepcopy(dict(arch))

    @staticmethod
    def _parse_grid_size(grid_size) -> tuple:
        size = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        if len(size) != 2 or any(not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f'grid_size must be a positive int or a pair of them, got '
                             f'{grid_size!r}')
        return size

    @classmethod
    def _parse_out_indices(cls, out_indices) -> tuple:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise TypeError(f'out_indices must be an int or a non-empty sequence of ints, got '
                            f'{out_indices!r}')
        parsed = []
        for index in out_indices:
            if not isinstance(index, int) or not -cls.num_stages <= index < cls.num_stages:
                raise ValueError(f'out_indices entries must be ints in '
                                 f'[{-cls.num_stages}, {cls.num_stages - 1}] (the model has '
                                 f'{cls.num_stages} stages), got {out_indices!r}')
            parsed.append(index % cls.num_stages)
        return tuple(sorted(set(parsed)))

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'DualTokenViT expects a 4-D image batch (B, C, H, W), got {shape}')
        if not sizes_are_concrete():
            return  # exporting: the sizes are symbolic; the example input was checked eagerly
        B, C, H, W = x.shape
        if C != self.in_channels:
            raise ValueError(f'DualTokenViT was built for {self.in_channels}-channel images '
                             f'(in_channels), got {C} channels in {tuple(x.shape)}')
        if H < self.min_input_size or W < self.min_input_size:
            raise ValueError(f'DualTokenViT needs H, W >= {self.min_input_size}, got {(H, W)}')
        if B == 1 and self.training:
            self._check_batch_norm_statistics(H, W)

    def _token_grids(self, H: int, W: int) -> list:
        """The X_ds grid of each stage for an H x W input (before any token budget)."""
        grids, h, w = [], math.ceil(H / 8), math.ceil(W / 8)  # stem: stride 8
        for i, steps in enumerate(self.downsample_steps):
            if i > 0:
                h, w = math.ceil(h / 2), math.ceil(w / 2)  # merge patch
            grids.append((math.ceil(h / 2**steps), math.ceil(w / 2**steps)))
        return grids

    def _check_batch_norm_statistics(self, H: int, W: int):
        """A BatchNorm in training needs more than one value per channel: with a batch of one
        image, a token downsampling that reaches a 1x1 grid cannot train. Say so before
        BatchNorm fails deep inside the forward pass."""

        def trains_bn(stage):
            module = stage.blocks[0].global_module
            return module is not None and any(
                isinstance(m, _BatchNorm) and m.training for m in module.downsample.modules())

        def single_token_stage(h, w):
            grids = zip(self._token_grids(h, w), self.stages)
            return next(
                (i for i, (grid, stage) in enumerate(grids) if grid == (1, 1) and trains_bn(stage)),
                None)

        stage = single_token_stage(H, W)
        if stage is not None:
            side = next(
                s for s in itertools.count(self.min_input_size)
                if single_token_stage(s, self.min_input_size) is None)
            raise ValueError(
                f'DualTokenViT cannot train on a batch of one {H}x{W} image: the token '
                f'downsampling of stage {stage + 1} reaches a 1x1 grid, and its BatchNorm needs '
                'more than one value per channel. Use a batch of 2 or more, inputs of at least '
                f'{side} px on one side, or norm_eval=True.')

    def forward(self, x: torch.Tensor) -> tuple:
        self._check_input(x)
        x = self.stem(x)
        tokens = self.global_tokens
        outs = []
        for i, stage in enumerate(self.stages):
            x, tokens = stage(x, tokens)
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs.append(norm(x.mean(dim=(1, 2))))
                else:
                    outs.append(norm(x).permute(0, 3, 1, 2))
        return tuple(outs)

    # ------------------------------------------------------------------ checkpoints
    def _resize_global_tokens_on_load(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's global-token grid to this model's (bicubic) and log it."""
        key = prefix + 'global_tokens'
        if key not in state_dict or self.global_tokens is None:
            return
        loaded = state_dict[key]
        if self.global_token_mode != 'position_aware' or loaded.dim() != 4 or \
                loaded.shape == self.global_tokens.shape or \
                loaded.shape[-1] != self.global_tokens.shape[-1]:
            return  # identical, or a mismatch load_state_dict reports itself
        state_dict[key] = resize_token_grid(loaded.float(), self.grid_size).to(loaded.dtype)
        MMLogger.get_current_instance().info(
            f'Resized {key} from a {loaded.shape[1]}x{loaded.shape[2]} grid to '
            f'{self.grid_size[0]}x{self.grid_size[1]} (bicubic).')

    def init_weights(self):
        """Initialise, or load ``init_cfg=dict(type='Pretrained', checkpoint, prefix)``.

        A pretrained checkpoint is loaded strictly (mmengine's own Pretrained init only warns
        about missing or mis-shaped keys and goes on half-loaded): a checkpoint that cannot
        be read, has no tensors under ``prefix`` or does not match this arch raises one
        error that says so. Another global-token grid is resized (see the load hook).
        """
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self.load_pretrained(self.init_cfg['checkpoint'], self.init_cfg.get('prefix'))
            self._is_init = True
            return
        super().init_weights()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None):
        """Load this backbone's tensors from ``checkpoint`` (keys under ``prefix``).

        A local file is read by :func:`mmdualtoken.safe_loading.load_checkpoint_safely`
        (weights-only on every torch, also < 2.4 where ``torch.load`` would unpickle fully);
        other schemes (``https://``, ``open-mmlab://``...) by mmengine's CheckpointLoader."""
        from mmengine.runner.checkpoint import CheckpointLoader

        from ...safe_loading import load_checkpoint_safely
        local = '://' not in checkpoint
        try:
            if local:
                loaded = load_checkpoint_safely(osp.expanduser(checkpoint), map_location='cpu')
            else:
                loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        except FileNotFoundError:
            raise FileNotFoundError(f'Pretrained checkpoint not found: {checkpoint}') from None
        except pickle.UnpicklingError as e:  # weights-only loading refused an object
            refused = re.search(r'Unsupported global: GLOBAL \S+|Refusing getattr[^:]*', str(e))
            raise RuntimeError(f'Refusing to load the pretrained checkpoint {checkpoint}: it '
                               'holds an object that safe (weights_only) loading does not '
                               f'allow ({refused.group(0) if refused else type(e).__name__}). '
                               'Only tensors and mmengine\'s own checkpoint types load.') \
                from None
        except Exception as e:  # a truncated or foreign file
            raise RuntimeError(f'Cannot read the pretrained checkpoint {checkpoint} as a torch '
                               f'checkpoint ({type(e).__name__}: {str(e)[:200]}). Is the file '
                               'complete?') from None
        state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else None
        if not isinstance(state, dict):
            raise TypeError(f'{checkpoint} holds a {type(loaded).__name__}, not a state dict')
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not weights:
                roots = sorted({k.split('.')[0] + '.' for k in state})[:5]
                raise ValueError(f'No tensors under prefix {prefix!r} in {checkpoint}; its keys '
                                 f'start with {roots}. Use one of those as init_cfg.prefix, or '
                                 'tools/model_converters/to_backbone_checkpoint.py.')
        else:
            weights = dict(state)
        problem = state_dict_mismatch(weights, self.state_dict())
        if problem:
            raise ValueError(f'{checkpoint} does not fit DualTokenViT(arch='
                             f'{self.arch_settings}): {problem}. Was it trained with another '
                             'arch?')
        self.load_state_dict(weights, strict=True)
        MMLogger.get_current_instance().info(
            f'Loaded {len(weights)} DualTokenViT tensors from {checkpoint}')

    # ------------------------------------------------------------------ training
    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.stem.eval()
            for param in self.stem.parameters():
                param.requires_grad = False
            if self.global_tokens is not None:
                self.global_tokens.requires_grad = False
        for i in range(self.frozen_stages):
            for module in (self.stages[i], getattr(self, f'norm{i}')):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> tuple:
        """Layer depth of a parameter for layer-wise lr decay.

        The stem and global tokens are layer 0, block j of stage i is layer
        ``sum(depths[:i]) + j + 1`` (a stage's merge patch and token projection share its
        first block's depth), and everything else (output norms, a head) the last layer.

        Returns:
            tuple[int, int]: the layer depth and the number of layers.
        """
        num_layers = sum(self.depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith(('stem', 'global_tokens')):
            return 0, num_layers
        if name.startswith('stages'):
            parts = name.split('.')
            stage_id = int(parts[1])
            block_id = int(parts[3]) if parts[2] == 'blocks' else 0
            return sum(self.depths[:stage_id]) + block_id + 1, num_layers
        return num_layers - 1, num_layers
