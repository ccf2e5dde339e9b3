#!/usr/bin/env python
"""Lay Fashion-MNIST's four files under data/fashion_mnist/ from Debian's package.

    python tools/data/prepare_fashion_mnist.py [--out data/fashion_mnist]

Debian's ``dataset-fashion-mnist`` ships the original files (70,000 28x28 grey product
photos, 10 classes) under /usr/share/datasets/fashion-mnist. Where they are missing, the
package is installed (``apt-get install``, as root; otherwise the command to run is
printed). Each file is written uncompressed, which is how mmpretrain's ``FashionMNIST``
reads them with ``download=False``, after a check of its content: the idx header (magic
number, 60,000 or 10,000 items of 28x28), and labels 0-9 with every class equally often, as
in Fashion-MNIST. (The package's archives have other MD5 sums than the ones mmpretrain's
downloader checks, so those cannot be used.) Nothing is downloaded from elsewhere.
"""
import argparse
import gzip
import os
import os.path as osp
import subprocess
import sys

PACKAGE = 'dataset-fashion-mnist'
SOURCE = '/usr/share/datasets/fashion-mnist'
# file: number of items (the idx format: a big-endian magic number 2051 for images, 2049
# for labels, the item count, for images the rows and columns, then one byte per value)
FILES = {
    'train-images-idx3-ubyte.gz': 60000,
    'train-labels-idx1-ubyte.gz': 60000,
    't10k-images-idx3-ubyte.gz': 10000,
    't10k-labels-idx1-ubyte.gz': 10000,
}
INSTALL = f'apt-get install -y {PACKAGE}'


def missing_sources(source: str = SOURCE) -> list:
    return [name for name in FILES if not osp.isfile(osp.join(source, name))]


def install_package() -> None:
    """apt-get install the package (as root), after an index update if apt does not know it."""
    if os.geteuid() != 0:
        sys.exit(f'error: {SOURCE} lacks {", ".join(missing_sources())}: install Debian\'s '
                 f'{PACKAGE} as root (sudo {INSTALL}), then run this again')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    try:
        for command in ([], ['apt-get', 'update', '-q']):
            if command:
                subprocess.run(command, check=True, env=env)
            if subprocess.run(INSTALL.split(), env=env).returncode == 0 and not missing_sources():
                return
    except (OSError, subprocess.CalledProcessError) as e:  # no apt-get, or its index failed
        sys.exit(f'error: `{INSTALL}` failed ({e}): install Debian\'s {PACKAGE}, or lay the '
                 f'four files of Fashion-MNIST out under {SOURCE}')
    sys.exit(f'error: `{INSTALL}` did not give {SOURCE}/{", ".join(missing_sources())}')


def problem(name: str, data: bytes):
    """What is wrong with the uncompressed content of ``name``, or None."""
    count = FILES[name]
    images = 'images' in name
    header = [int.from_bytes(data[i:i + 4], 'big') for i in range(0, 16 if images else 8, 4)]
    expected = [2051, count, 28, 28] if images else [2049, count]
    if header != expected:
        return f'its idx header is {header}, expected {expected}'
    if len(data) != len(expected) * 4 + count * (784 if images else 1):
        return f'it holds {len(data)} bytes, not {count} items'
    if not images:
        labels = data[8:]
        per_class = [labels.count(c) for c in range(10)]
        if per_class != [count // 10] * 10:
            return f'its labels 0-9 occur {per_class} times, not {count // 10} each'
    return None


def prepare(out: str, source: str = SOURCE) -> list:
    """Check and decompress the four files into ``out``; the paths written."""
    os.makedirs(out, exist_ok=True)
    written = []
    for name in FILES:
        path = osp.join(source, name)
        with gzip.open(path, 'rb') as f:
            data = f.read()
        wrong = problem(name, data)
        if wrong:
            sys.exit(f'error: {path} is not a Fashion-MNIST file: {wrong}; reinstall {PACKAGE}')
        target = osp.join(out, name[:-len('.gz')])
        with open(target + '.tmp', 'wb') as f:
            f.write(data)
        os.replace(target + '.tmp', target)
        written.append(target)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/fashion_mnist', help='default: data/fashion_mnist')
    args = parser.parse_args(argv)
    if missing_sources():
        install_package()
    for path in prepare(args.out):
        print(f'{path} ({osp.getsize(path):,} bytes)')


if __name__ == '__main__':
    main()
