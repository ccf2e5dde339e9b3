from .attention import MultiheadCrossAttention, MultiheadSelfAttention
from .bidim_attention import BiDimAttention
from .conv_encoder import ConvEncoder
from .drop_path import ResidualDropPath
from .dual_token_block import DualTokenBlock
from .global_token_module import GlobalTokenModule, TokenDownsample, fit_token_budget
from .merge_patch import ResidualMergePatch
from .mlp import MixMlp, Mlp, TokenMlp
from .stem import ConvStem
from .token_grid import resize_token_grid
from .window_attention import WindowSelfAttention

__all__ = [
    'BiDimAttention', 'ConvEncoder', 'ConvStem', 'DualTokenBlock', 'GlobalTokenModule', 'MixMlp',
    'Mlp', 'MultiheadCrossAttention', 'MultiheadSelfAttention', 'ResidualDropPath',
    'ResidualMergePatch', 'TokenDownsample', 'TokenMlp', 'WindowSelfAttention', 'fit_token_budget',
    'resize_token_grid'
]
