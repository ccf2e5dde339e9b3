"""The paper's ablation study (its Tables 5-9) as data: which config trains each row, and
what the paper reports, so that the complexity tool and the results collector print the
same tables.

What the paper states (its text; the tables' own numbers are not reproduced here):

* Table 5, MLPs: the normal MLP is 0.1% more accurate than MixMLP, with "a little" extra
  FLOPs and params.
* Table 6, global tokens: position-aware tokens perform best and have 1.1 M fewer params
  than "normal" global tokens (Figure 3(c)), at 0.06 G more FLOPs. The paper's third method
  also fuses by multi-head self-attention ("the other two methods"), but its text does not
  describe it well enough to build; our third row is no global tokens at all (our choice).
* Table 7, number of tokens: 7x7 is best. The paper's other counts are not in its text;
  5x5 and 9x9 are our choice.
* Table 8, local attention: the Conv Encoder is 0.8% more accurate than window
  self-attention, with FLOPs and params that "do not increase very much".
* Table 9, downsampling, on DualToken-ViT-S (mix): step-wise is 0.2% more accurate than
  one-step, at 0.03 G more FLOPs and 0.1 M more params.

The paper does not say on which model Tables 5-8 were run; we use S (the model its Table 9
names S (mix) against). A model that is a row of several tables (the S baseline) is one
config, trained once. The paper's top-1 is known for S (79.4%, its main result); the other
rows are compared by the deltas above. "FLOPs" in the paper are multiply-accumulates.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Tuple

ABLATION_DIR = 'ablations'  # the ablation configs' folder, inside the configs folder


@dataclass(frozen=True)
class AblationPair:
    """The paper's choice against an alternative: deltas are ``ours - other``.

    ``paper_*`` are the paper's figures (None where its text gives none); ``paper_note`` is
    what its text says instead.
    """
    ours: str
    other: str
    paper_params: Optional[float] = None  # M
    paper_macs: Optional[float] = None  # G
    paper_top1: Optional[float] = None  # points
    paper_note: str = ''


@dataclass(frozen=True)
class AblationTable:
    """One of the paper's ablation tables: its rows as (label, config name)."""
    number: int
    title: str
    model: str
    rows: Tuple[Tuple[str, str], ...]
    pairs: Tuple[AblationPair, ...]


S = 'dualtoken_s_baseline_in1k'
S_MIX = 'dualtoken_s-mix_baseline_in1k'

PAPER_TOP1 = {S: 79.4}  # the paper's DualToken-ViT-S, its main result at 224

TABLES = (
    AblationTable(5, 'MLPs', 'S', (('MLP', S), ('MixMLP', S_MIX)), (AblationPair(
        S, S_MIX, paper_top1=0.1, paper_note='"a little" more FLOPs and params'), )),
    AblationTable(6, 'Global tokens', 'S',
                  (('position-aware (weighted sum)', S),
                   ('normal (MHSA-fused, Fig. 3(c))', 'dualtoken_s_normal-tokens_in1k'),
                   ('none (our extra row)', 'dualtoken_s_no-tokens_in1k')), (
                       AblationPair(
                           S,
                           'dualtoken_s_normal-tokens_in1k',
                           paper_params=-1.1,
                           paper_macs=0.06,
                           paper_note='position-aware performs best'),
                       AblationPair(S, 'dualtoken_s_no-tokens_in1k'),
                   )),
    AblationTable(7, 'Number of global tokens', 'S', (('5x5', 'dualtoken_s_grid5_in1k'), ('7x7', S),
                                                      ('9x9', 'dualtoken_s_grid9_in1k')),
                  (
                      AblationPair(S, 'dualtoken_s_grid5_in1k', paper_note='7x7 performs best'),
                      AblationPair(S, 'dualtoken_s_grid9_in1k', paper_note='7x7 performs best'),
                  )),
    AblationTable(8, 'Local attention', 'S',
                  (('Conv Encoder', S), ('window self-attention', 'dualtoken_s_window_in1k')),
                  (AblationPair(
                      S,
                      'dualtoken_s_window_in1k',
                      paper_top1=0.8,
                      paper_note='FLOPs and params "do not increase very much"'), )),
    AblationTable(9, 'Downsampling', 'S (mix)',
                  (('step-wise', S_MIX), ('one-step', 'dualtoken_s-mix_one-step_in1k')),
                  (AblationPair(
                      S_MIX,
                      'dualtoken_s-mix_one-step_in1k',
                      paper_params=0.1,
                      paper_macs=0.03,
                      paper_top1=0.2), )),
)


def ablation_configs() -> list:
    """Every config the tables name, once, in table order."""
    names = []
    for table in TABLES:
        names += [config for _, config in table.rows if config not in names]
    return names


def config_path(name: str, configs_dir: str) -> str:
    """The file of ablation config ``name`` under ``configs_dir`` (the repository's configs/,
    which the tools pass)."""
    return osp.join(configs_dir, ABLATION_DIR, name + '.py')


def backbone_kwargs(name: str, configs_dir: str) -> dict:
    """The DualTokenViT arguments of an ablation config (``type`` removed)."""
    from mmengine.config import Config
    backbone = Config.fromfile(config_path(name, configs_dir)).model.backbone.to_dict()
    backbone.pop('type')
    return backbone


def ratio(ours: float, paper: Optional[float]) -> str:
    """ours / paper as text ('-' where the paper gives no figure)."""
    return '-' if not paper else f'{ours / paper:.2f}'


def ablation_switches(backbone: dict) -> dict:
    """What makes a DualTokenViT config one row and not another: the arch's widths and
    depths, the token MLP and the switches, with defaults filled in and aliases resolved.

    ``backbone`` is a config's ``model.backbone`` (its ``type`` is ignored). The model is
    built from it, which validates every argument; the arch and the token grid are read from
    the built model (``arch_settings``, ``grid_size``), so that an arch named by an alias or a
    grid given as one int compares equal to its resolved form.
    """
    import inspect

    from ..models import DualTokenViT
    kwargs = {k: v for k, v in backbone.items() if k != 'type'}
    model = DualTokenViT(**kwargs)
    defaults = {
        name: p.default
        for name, p in inspect.signature(DualTokenViT.__init__).parameters.items()
    }

    def given(name):
        return kwargs.get(name, defaults[name])

    arch = model.arch_settings
    return dict(
        arch={
            k: list(v)
            for k, v in arch.items() if k != 'token_mlp'
        },
        token_mlp=given('token_mlp') or arch.get('token_mlp', 'mlp'),
        grid_size=model.grid_size,
        local_branch=given('local_branch'),
        global_tokens=given('global_tokens'),
        downsample=given('downsample'),
        downsample_steps=tuple(given('downsample_steps')),
        max_global_tokens=given('max_global_tokens'))
