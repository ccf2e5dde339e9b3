"""mmdualtoken: DualToken-ViT for mmpretrain, mmdet and mmsegmentation.

The pins are the versions the project tests together (see README.md, "Set-up"):
mmdet 3.3.0 and mmsegmentation 1.2.2 accept only mmcv < 2.2.0, and mmcv 2.1.0's compiled
ops must be built against the installed torch (tools/setup_env.sh does that).
"""
import os.path as osp

from setuptools import find_packages, setup


def read_version():
    namespace = {}
    with open(osp.join(osp.dirname(__file__), 'mmdualtoken', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


install_requires = [
    'torch==2.14.1',
    'torchvision==0.29.1',  # mmpretrain imports it at import time
    'mmengine==0.10.7',
    'mmcv==2.1.0',  # with compiled ops: built by tools/setup_env.sh
    'mmdet==3.3.0',
    'mmsegmentation==1.2.2',
    'mmpretrain==1.2.0',
    # undeclared import-time needs of the stack
    'ftfy',  # mmseg
    'regex',  # mmseg
    'setuptools<82',  # pkg_resources: mmengine resolves `mmdet::` configs through it
    'pycocotools',
    'tqdm',
    'matplotlib',
]

extras_require = {
    'tests': [
        'pytest',
        'pytest-xdist',
        'hypothesis',
        'onnx',
        'onnxruntime',
        'onnxscript',
    ],
}

setup(
    name='mmdualtoken',
    version=read_version(),
    description='DualToken-ViT: a position-aware efficient vision transformer backbone '
    'for OpenMMLab (mmpretrain, mmdet, mmsegmentation)',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdualtoken', 'mmdualtoken.*']),
    python_requires='>=3.11',
    install_requires=install_requires,
    extras_require=extras_require,
    license='Apache-2.0',
    zip_safe=False,
)
