"""Fashion-MNIST, real images: Debian's files laid out by tools/data/prepare_fashion_mnist.py
and trained on through mmpretrain's FashionMNIST dataset and tools/train.py.

The set-up installs Debian's dataset-fashion-mnist as root (the preparation tool does where it
is missing); where it cannot be had (not root, no apt) these tests are skipped.
"""
import os
import re

import pytest
from helpers import config, load_tool, run_tool

CONFIG = config('fashion_mnist/dualtoken_t_fashion-mnist.py')
PREPARE = 'python tools/data/prepare_fashion_mnist.py'


@pytest.fixture(scope='module')
def fashion_mnist(tmp_path_factory):
    """A folder holding data/fashion_mnist, written by the documented command as it stands."""
    work = tmp_path_factory.mktemp('fashion_mnist')
    proc = run_tool('data/prepare_fashion_mnist.py', cwd=str(work), timeout=900, check=False)
    if proc.returncode and os.geteuid() != 0:  # the set-up installs the package as root
        pytest.skip(f'Fashion-MNIST not available here: {proc.stderr.strip()[-300:]}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(os.listdir(work / 'data' / 'fashion_mnist'))
    assert files == [
        't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', 'train-images-idx3-ubyte',
        'train-labels-idx1-ubyte'
    ], files
    assert 'data/fashion_mnist/train-images-idx3-ubyte (47,040,016 bytes)' in proc.stdout
    return work


@pytest.mark.slow
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
