"""Fashion-MNIST, real images: Debian's files laid out by tools/data/prepare_fashion_mnist.py
and trained on through mmpretrain's FashionMNIST dataset and tools/train.py.

The set-up installs Debian's dataset-fashion-mnist as root (the preparation tool does where it
is missing); where it cannot (not root, no apt) the tests marked ``fashion_mnist`` fail in one
line that says what to install, as the Slurm test does.
"""
import os
import os.path as osp
import re
import shutil

import pytest
from helpers import REPO_ROOT, config, load_tool, run_tool

CONFIG = config('fashion_mnist/dualtoken_t_fashion-mnist.py')
PREPARE = 'python tools/data/prepare_fashion_mnist.py'


@pytest.fixture(scope='module')
def fashion_mnist(tmp_path_factory):
    """A folder holding data/fashion_mnist, written by the documented command as it stands."""
    work = tmp_path_factory.mktemp('fashion_mnist')
    proc = run_tool('data/prepare_fashion_mnist.py', cwd=str(work), timeout=900, check=False)
    if proc.returncode:  # as root the tool installs the package; elsewhere it says what to run
        pytest.fail(
            f'{proc.stderr.strip().splitlines()[-1]}; or leave these tests out with '
            '-m "not fashion_mnist"',
            pytrace=False)
    files = sorted(os.listdir(work / 'data' / 'fashion_mnist'))
    assert files == [
        't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', 'train-images-idx3-ubyte',
        'train-labels-idx1-ubyte'
    ], files
    assert 'data/fashion_mnist/train-images-idx3-ubyte (47,040,016 bytes)' in proc.stdout
    return work


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_two_iterations_on_the_real_files(fashion_mnist):
    """Two epochs of one iteration (2 images, batch 2): the warm-up epoch and the cosine."""
    proc = run_tool(
        'train.py',
        CONFIG,
        '--work-dir',
        'work_dirs/fm',
        '--cfg-options',
        'train_dataloader.dataset.indices=2',
        'train_dataloader.batch_size=2',
        'val_dataloader.dataset.indices=4',
        'train_cfg.max_epochs=2',
        'default_hooks.logger.interval=1',
        cwd=str(fashion_mnist))
    log = proc.stdout + proc.stderr
    assert len(re.findall(r'Epoch\(train\) \[\d\]\[1/1\]', log)) == 2, log[-3000:]
    assert re.search(r'accuracy/top1: \d+\.\d+', log), log[-3000:]
    assert (fashion_mnist / 'work_dirs' / 'fm' / 'epoch_2.pth').is_file()


def test_missing_files_stop_with_one_line_naming_them_and_the_command(tmp_path):
    proc = run_tool('train.py', CONFIG, cwd=str(tmp_path), check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert line.startswith('error: Dataset files not found (train_dataloader.dataset, '
                           f'relative to {tmp_path}): data/fashion_mnist/train-images-idx3-ubyte,')
    assert line.endswith(f'Lay them out with {PREPARE}.')


@pytest.mark.fashion_mnist
def test_a_file_that_is_not_fashion_mnist_is_refused(fashion_mnist):
    """The content checks: the idx header, the size, and the balanced labels."""
    tool = load_tool('data/prepare_fashion_mnist.py')
    labels = (fashion_mnist / 'data' / 'fashion_mnist' / 't10k-labels-idx1-ubyte').read_bytes()
    name = 't10k-labels-idx1-ubyte.gz'
    assert tool.problem(name, labels) is None
    assert 'idx header' in tool.problem(name, b'\x00\x00\x08\x03' + labels[4:])
    assert 'bytes, not 10000 items' in tool.problem(name, labels[:-1])
    relabelled = labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]
    assert 'occur' in tool.problem(name, relabelled)


def table(text: str, which: int = 0) -> dict:
    """A report's table (the first: the models; the second: the epochs) as its rows' cells by
    the first cell."""
    tables = [block for block in text.split('\n\n') if block.startswith('| ')]
    rows = [line.strip('| ').split(' | ') for line in tables[which].splitlines()[2:]]
    return {row[0]: row[1:] for row in rows}


def resolved(text: str, folder: str) -> str:
    """``text`` with its links to configs made absolute (they are relative to its folder)."""
    return re.sub(r'\]\(([^)]+\.py)\)', lambda m: f'](<{osp.realpath(osp.join(folder, m[1]))}>)',
                  text)


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_the_comparison_trains_every_model_with_one_recipe_and_writes_the_table(fashion_mnist):
    """tools/analysis/fashion_mnist.py --quick (8 images, 2 epochs): the three models trained
    by tools/train.py into work_dirs/fashion_mnist_quick, the tables written and their records
    kept beside them; a second run reuses the finished runs and keeps the text written by hand,
    the records rebuild the tables with --no-train (in place too), a run with other settings
    trains again, and a failed run voids the settings of the one before."""
    tool = load_tool('analysis/fashion_mnist.py')
    out = fashion_mnist / 'report' / 'fashion_mnist.md'
    quick = ['analysis/fashion_mnist.py', '--quick', '--epochs', '2']
    run_tool(*quick, '--out', str(out), cwd=str(fashion_mnist), timeout=900)
    text = out.read_text()
    rows = table(text)
    assert list(rows) == ['DualToken-ViT-T', 'ResNet-18', 'EdgeNeXt-xsmall']
    for (name, row), drop in zip(rows.items(), ('0.1', '0', '0.1')):
        params, macs, drop_path, epochs, top1, ips, wall, config_link, log = row
        assert float(params) > 1 and float(macs) > 0 and epochs == '2', row
        assert drop_path == drop and 0 <= float(top1) <= 100 and float(ips) > 0, row
        kept = out.parent / re.fullmatch(r'\[log\]\((.+)\)', log).group(1)
        assert kept.is_file() and 'Epoch(val) [2]' in kept.read_text(), log
        assert wall == f'{tool.wall_time(str(kept.parent)) / 60:.1f}', row
        config_file = re.fullmatch(r'\[.+\]\((.+)\)', config_link).group(1)
        assert osp.samefile(out.parent / config_file, tool.config_path(name)), row
    assert 'batch 4, 2 epochs' in text  # the batch the runs trained with (--quick's)
    assert text.endswith(tool.BY_HAND + '\n')
    epochs = table(text, 1)
    assert list(epochs) == ['1', '2'] and all(len(cells) == 3 for cells in epochs.values())
    assert all(
        re.fullmatch(r'\d+\.\d\d \(loss \d+\.\d{3}\)', cell) for cells in epochs.values()
        for cell in cells), epochs
    assert epochs['2'][0].startswith(rows['DualToken-ViT-T'][4])  # the last epoch's top-1
    records = out.parent / 'fashion_mnist'
    for stem in ('dualtoken_t', 'resnet18', 'edgenext-xsmall'):
        name = f'{stem}_fashion-mnist'
        assert (fashion_mnist / 'work_dirs' / 'fashion_mnist_quick' / name /
                'epoch_2.pth').is_file()
        record = sorted(os.listdir(records / name))
        assert record[1:] == ['comparison.json', f'{name}.py'], record  # and the session
    out.write_text(text + 'Written by hand.\n')
    for _ in range(2):  # the same page each time
        again = run_tool(*quick, '--out', str(out), cwd=str(fashion_mnist), timeout=900)
        assert again.stdout.count('not trained again') == 3
        assert out.read_text() == text + 'Written by hand.\n'
    rebuilt = fashion_mnist / 'rebuilt' / 'fashion_mnist.md'  # as deep: the same links
    from_records = ['--work-dirs', str(records), '--no-train']
    run_tool(*quick, *from_records, '--out', str(rebuilt), cwd=str(fashion_mnist), timeout=900)
    assert table(rebuilt.read_text()) == rows and table(rebuilt.read_text(), 1) == epochs
    files = {p: p.read_bytes() for p in records.rglob('*') if p.is_file()}
    run_tool(*quick, *from_records, '--out', str(out), cwd=str(fashion_mnist), timeout=900)
    assert {p: p.read_bytes() for p in records.rglob('*') if p.is_file()} == files
    assert table(out.read_text()) == rows
    no_run = run_tool(
        'analysis/fashion_mnist.py',
        '--quick',
        '--epochs',
        '3',
        *from_records,
        cwd=str(fashion_mnist),
        check=False)
    assert no_run.returncode == 1 and 'holds no finished run of DualToken-ViT-T' in no_run.stderr
    edgenext = ['--models', 'EdgeNeXt-xsmall']
    other = run_tool(*quick[:-1], '3', *edgenext, cwd=str(fashion_mnist), timeout=900)
    assert 'not trained again' not in other.stdout and '| 3 |' in other.stdout
    work_dir = fashion_mnist / 'work_dirs' / 'fashion_mnist_quick' / 'edgenext-xsmall_fashion-mnist'
    failed = run_tool(
        *quick,
        *edgenext,
        '--cfg-options',
        'optim_wrapper.optimizer.type=NoSuchOptimizer',
        cwd=str(fashion_mnist),
        timeout=900,
        check=False)
    assert failed.returncode != 0 and not (work_dir / 'comparison.json').exists()
    retrained = run_tool(*quick[:-1], '3', *edgenext, cwd=str(fashion_mnist), timeout=900)
    assert 'not trained again' not in retrained.stdout


def test_the_docs_tables_are_rebuilt_from_their_records(tmp_path):
    """docs/fashion_mnist.md, every column and word, from the records kept beside it (the
    runs' saved configs, scalars.json, logs and stamps): the tool on a copy of them with
    --no-train; rewriting the page keeps the text written by hand below the tables."""
    tool = load_tool('analysis/fashion_mnist.py')
    doc = osp.join(REPO_ROOT, 'docs', 'fashion_mnist.md')
    with open(doc) as f:
        text = f.read()
    command = 'python tools/analysis/fashion_mnist.py --out docs/fashion_mnist.md'
    assert f'Generated by `{command}`.' in text and tool.BY_HAND in text
    shutil.copytree(osp.join(REPO_ROOT, 'docs', 'fashion_mnist'), tmp_path / 'records')
    out = tmp_path / 'fashion_mnist.md'
    rebuild = [
        'analysis/fashion_mnist.py', '--work-dirs',
        str(tmp_path / 'records'), '--no-train', '--out',
        str(out)
    ]
    proc = run_tool(*rebuild, cwd=str(tmp_path), timeout=600)
    assert proc.stdout.count('not trained again') == 3
    rebuilt = out.read_text().replace(
        'python tools/analysis/fashion_mnist.py ' + ' '.join(rebuild[1:]), command)
    generated = text.partition(tool.BY_HAND)[0] + tool.BY_HAND + '\n'
    assert resolved(rebuilt, str(tmp_path)) == resolved(generated, osp.dirname(doc))
    shutil.copyfile(doc, out)
    run_tool(*rebuild, cwd=str(tmp_path), timeout=600)
    assert out.read_text().partition(tool.BY_HAND)[2] == text.partition(tool.BY_HAND)[2]


def test_the_pages_quote_the_docs_result_of_t():
    """The README's models table and the model page quote T's Fashion-MNIST top-1 as
    docs/fashion_mnist.md has it, next to the paper's ImageNet figure, with the doc's input
    size and epochs (and, on the model page, its log)."""
    with open(osp.join(REPO_ROOT, 'docs', 'fashion_mnist.md')) as f:
        text = f.read()
    t = table(text)['DualToken-ViT-T']
    size = re.search(r'\| MACs at (\d+x\d+) \(G\) \|', text).group(1)
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        tiny, = [line for line in f if line.startswith('| `tiny` |')]
    assert '| 75.4 |' in tiny and f'Fashion-MNIST {t[4]}' in tiny, tiny
    assert f'[{size}, {t[3]} epochs, CPU](docs/fashion_mnist.md)' in tiny, tiny
    with open(osp.join(REPO_ROOT, 'configs', 'README.md')) as f:
        fashion, = [line for line in f if line.startswith('| DualToken-ViT-T | ' + size)]
    log = re.search(r'\[log\]\((.+?)\)', t[-1]).group(1)
    assert fashion.startswith(f'| DualToken-ViT-T | {size} | {t[3]} | {t[4]} | 75.4 |'), fashion
    assert f'[log](../docs/{log})' in fashion, fashion
