"""The OpenMMLab metadata (model-index.yml, configs/metafile.yml, the model page
configs/README.md) and the README's model table say what the configs and the model are.

Every config they name exists; every params and MACs figure they print is recomputed here
with the complexity tool (mmdualtoken.utils.count_complexity, what
tools/analysis/complexity.py writes to docs/complexity.md): the README and the model page
print the backbone's, rounded as printed; the metafile records the classifier each config
builds, exactly, as OpenMMLab's metafiles do. No weights of its configs have been trained
here, so no model may claim weights or results.
"""
import functools
import glob
import os.path as osp
import re

import pytest
import yaml
from helpers import REPO_ROOT

METAFILE = 'configs/metafile.yml'
MODEL_PAGE = 'configs/README.md'
# the row labels of the README's and the model page's tables, and the arch each one is
ROW_ARCHS = {
    '`tiny`': 'tiny',
    '`small`': 'small',
    'DualToken-ViT-T': 'tiny',
    'DualToken-ViT-S': 'small',
    'DualToken-ViT-T (MixMLP)': 'tiny-mix',
    'DualToken-ViT-S (MixMLP)': 'small-mix',
}


def read(path: str) -> str:
    with open(osp.join(REPO_ROOT, path)) as f:
        return f.read()


def metafile() -> dict:
    return yaml.safe_load(read(METAFILE))


@functools.lru_cache(maxsize=None)
def backbone_complexity(arch: str):
    from mmdualtoken.models import DualTokenViT
    from mmdualtoken.utils import count_complexity
    return count_complexity(DualTokenViT(arch=arch), (1, 3, 224, 224))


@functools.lru_cache(maxsize=None)
def load_config(config: str):
    from mmengine.config import Config
    return Config.fromfile(osp.join(REPO_ROOT, config))


def test_model_index_imports_the_metafile_and_modelindex_reads_it():
    import modelindex
    assert yaml.safe_load(read('model-index.yml')) == {'Import': [METAFILE]}
    index = modelindex.load(osp.join(REPO_ROOT, 'model-index.yml'))
    # OpenMMLab writes a collection's README path from the repository root, as its Config
    # paths; modelindex looks for it beside the metafile: test_every_named_file_exists
    # checks it from the root
    errors = [e for e in index.check(silent=True) if 'Path to README file' not in e]
    assert not errors
    index.build_models_with_collections()
    assert [m.name for m in index.models] == [m['Name'] for m in metafile()['Models']]
    assert all(m.in_collection == 'DualToken-ViT' for m in index.models)


def test_every_named_file_exists_and_every_config_is_listed():
    meta = metafile()
    collections = {c['Name'] for c in meta['Collections']}
    for collection in meta['Collections']:
        assert osp.isfile(osp.join(REPO_ROOT, collection['README']))
        assert collection['Paper']['URL'] == 'https://arxiv.org/abs/2309.12424'
    names = [m['Name'] for m in meta['Models']]
    assert len(names) == len(set(names))
    for model in meta['Models']:
        assert model['In Collection'] in collections
        assert osp.isfile(osp.join(REPO_ROOT, model['Config'])), model['Config']
        assert model['Config'] == f'configs/{model["Name"]}.py'
        # nothing trained here: no invented weights or results
        assert model['Weights'] is None and model['Results'] is None, model['Name']
    top_level = sorted(
        osp.relpath(p, REPO_ROOT) for p in glob.glob(osp.join(REPO_ROOT, 'configs', '*.py')))
    assert sorted(m['Config'] for m in meta['Models']) == top_level
    for page in ('README.md', MODEL_PAGE):
        links = re.findall(r'\]\(([^)]+\.py)\)', read(page))
        assert links
        for link in links:
            assert osp.isfile(osp.join(REPO_ROOT, osp.dirname(page), link)), (page, link)


def schedule(cfg) -> dict:
    train_cfg = cfg.train_cfg
    if 'max_epochs' in train_cfg:
        return {'Epochs': train_cfg.max_epochs}
    return {'Iterations': train_cfg.max_iters}


def test_metadata_is_the_configs():
    for model in metafile()['Models']:
        cfg = load_config(model['Config'])
        meta = model['Metadata']
        assert meta['Batch Size'] == cfg.auto_scale_lr.base_batch_size, model['Name']
        assert {k: meta[k] for k in ('Epochs', 'Iterations') if k in meta} == schedule(cfg)
        data = {'mmpretrain': 'ImageNet-1k', 'mmdet': 'COCO', 'mmseg': 'ADE20K'}
        assert meta['Training Data'] == data[cfg.default_scope], model['Name']


def test_model_page_schedules_are_the_configs():
    rows = [line for line in read(MODEL_PAGE).splitlines() if re.search(r'\| (1x|\d+k) \|', line)]
    assert len(rows) == 7
    for row in rows:
        config = osp.join('configs', re.search(r'\]\(([^)]+\.py)\)', row).group(1))
        lr_schedule = re.search(r'\| (1x|\d+k) \|', row).group(1)
        expected = {
            'Epochs': 12
        } if lr_schedule == '1x' else {
            'Iterations': int(lr_schedule[:-1]) * 1000
        }
        assert schedule(load_config(config)) == expected, row


@pytest.mark.parametrize(
    'name',
    ['dualtoken_t_in1k', 'dualtoken_s_in1k', 'dualtoken_t-mix_in1k', 'dualtoken_s-mix_in1k'])
def test_metafile_params_and_flops_are_the_classifiers(name):
    """The classifier the config builds, counted at 224x224 like docs/complexity.md."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmdualtoken.utils import count_complexity
    model = next(m for m in metafile()['Models'] if m['Name'] == name)
    cfg = load_config(model['Config'])
    init_default_scope('mmpretrain')
    classifier = MODELS.build(cfg.model)
    counted = count_complexity(classifier, (1, 3, 224, 224))
    assert (model['Metadata']['Parameters'], model['Metadata']['FLOPs']) == (counted.params,
                                                                             counted.macs)
    # the backbone's share, as the README and the model page print it
    backbone = backbone_complexity(cfg.model.backbone.arch)
    head = cfg.model.head  # one Linear(in_channels -> num_classes)
    assert counted.params == backbone.params + (head.in_channels + 1) * head.num_classes


def test_only_classifiers_carry_params_and_flops():
    for model in metafile()['Models']:
        classifier = model['Name'].startswith('dualtoken_')
        assert ('Parameters' in model['Metadata']) == classifier, model['Name']
        assert ('FLOPs' in model['Metadata']) == classifier, model['Name']


def figure_rows(page: str) -> list:
    """(label, params cell, MACs cell) of the rows of every table whose header has a params
    and a MACs column."""
    rows, columns = [], None
    for line in read(page).splitlines():
        if not line.startswith('|'):
            columns = None
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if columns is None:
            lower = [c.lower() for c in cells]
            params = [i for i, c in enumerate(lower) if c.startswith('params')]
            macs = [i for i, c in enumerate(lower) if c.startswith('macs')]
            columns = (params[0], macs[0]) if params and macs else ()
        elif columns and not set(''.join(cells)) <= set('-: '):
            rows.append((cells[0], cells[columns[0]], cells[columns[1]]))
    return rows


def assert_rounded(printed: str, value: float, unit: str, where: str):
    """``printed`` (e.g. '6.48 M' or '0.505') is ``value`` rounded to its decimals."""
    match = re.fullmatch(r'(\d+\.(\d+))(?: ' + unit + ')?', printed)
    assert match, f'{where}: {printed!r} is not a figure in {unit}'
    decimals = len(match.group(2))
    assert abs(float(match.group(1)) - value) <= 0.5 * 10**-decimals + 1e-9, \
        f'{where}: {printed} printed, the complexity tool counts {value:.6f} {unit}'


@pytest.mark.parametrize('page, labels', [
    ('README.md', ['`tiny`', '`small`']),
    (MODEL_PAGE, [
        'DualToken-ViT-T', 'DualToken-ViT-S', 'DualToken-ViT-T (MixMLP)', 'DualToken-ViT-S (MixMLP)'
    ]),
])
def test_printed_params_and_macs_are_the_backbones(page, labels):
    rows = figure_rows(page)
    assert [label for label, _, _ in rows] == labels
    for label, params, macs in rows:
        counted = backbone_complexity(ROW_ARCHS[label])
        assert_rounded(params, counted.params / 1e6, 'M', f'{page} {label}')
        assert_rounded(macs, counted.macs / 1e9, 'G', f'{page} {label}')


def test_the_paper_is_cited_and_its_accuracy_labelled_as_its_own():
    bibtex = [
        re.search(r'```bibtex\n(.*?)```', read(page), flags=re.S).group(1)
        for page in ('README.md', MODEL_PAGE)
    ]
    assert bibtex[0] == bibtex[1] and 'arXiv:2309.12424' in bibtex[0]
    for page in ('README.md', MODEL_PAGE):
        header = next(
            line for line in read(page).splitlines()
            if line.startswith('|') and 'top-1' in line.lower())
        assert 'paper' in header.lower()
        assert read(page).count('not trained here') >= 2
