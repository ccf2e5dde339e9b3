"""mmdualtoken: DualToken-ViT for mmpretrain, mmdet and mmsegmentation.

Requirements are ranges (requirements/*.txt, OpenMMLab's layout), so that installing the
package into an existing OpenMMLab environment keeps its torch and mmcv:

* install_requires: runtime.txt (torch >= 2.1) and mminstall.txt (mmcv, mmengine);
* extras per task: ``[det]`` (mmdet), ``[seg]`` (mmsegmentation), ``[cls]`` (mmpretrain),
  ``[all]`` (the three); ``[deploy]`` (onnx and onnxruntime: ONNX export and inference),
  ``[tests]`` (the suite).

The exact versions our own set-up installs (tools/setup_env.sh) are pinned in
requirements/constraints.txt only.
"""
import os.path as osp
import re
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    namespace = {}
    with open(osp.join(HERE, 'mmdualtoken', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_requirements(name):
    """The requirement lines of requirements/<name>.txt, comments stripped."""
    with open(osp.join(HERE, 'requirements', name + '.txt')) as f:
        lines = (re.sub(r'\s+#.*', '', line).strip() for line in f)
        return [line for line in lines if line and not line.startswith('#')]


TASKS = ('det', 'seg', 'cls')
extras_require = {task: read_requirements(task) for task in TASKS}
extras_require['all'] = sorted({r for task in TASKS for r in extras_require[task]})
extras_require['deploy'] = read_requirements('deploy')
extras_require['tests'] = read_requirements('tests')

setup(
    name='mmdualtoken',
    version=read_version(),
    description='DualToken-ViT: a position-aware efficient vision transformer backbone '
    'for OpenMMLab (mmpretrain, mmdet, mmsegmentation)',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdualtoken', 'mmdualtoken.*']),
    python_requires='>=3.8',
    install_requires=read_requirements('runtime') + read_requirements('mminstall'),
    extras_require=extras_require,
    license='Apache-2.0',
    zip_safe=False,
)
