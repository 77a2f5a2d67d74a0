"""mxprune: pruning for Apache MXNet Gluon. `pip install -e .` gives a working MXNet 1.9.1 + GluonCV 0.10.5 set."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, 'mxprune', 'version.py'), encoding='utf-8') as f:
    VERSION = re.search(r"__version__ = '([^']+)'", f.read()).group(1)

# mxnet 1.9.1 imports only with numpy 1.23.x (1.24 removed np.bool); GluonCV's unpinned dependencies would pull
# numpy 2, so they are held at releases built for numpy 1.23.
REQUIRES = [
    'mxnet==1.9.1',
    'numpy==1.23.5',
    'gluoncv==0.10.5.post0',
    'scipy>=1.9,<1.12',
    'matplotlib>=3.5,<3.9',
    'pandas>=1.4,<2.1',
    'opencv-python>=4.5,<4.9',
    'pyyaml>=5.4',
    'tqdm>=4.60',
]

setup(
    name='mxprune',
    version=VERSION,
    description='Structured and unstructured pruning for Apache MXNet Gluon / GluonCV models',
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mxprune', 'mxprune.*']),
    python_requires='>=3.8,<3.12',
    install_requires=REQUIRES,
    entry_points={'console_scripts': ['mxprune = mxprune.console:main']},
    extras_require={
        'test': ['pytest>=7', 'pytest-timeout>=2.1', 'hypothesis>=6', 'onnx==1.14.1'],
        # onnxruntime declares numpy>=1.24.2 on every Python 3.11 wheel, which breaks mxnet: install it with
        # `pip install --no-deps onnxruntime==1.16.3 coloredlogs flatbuffers sympy packaging` (see README).
        'onnx': ['onnx==1.14.1'],
    },
    license='Apache-2.0',
)
