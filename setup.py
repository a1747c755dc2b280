"""Install mmbake: BAKE self-distillation for mmpretrain.

``pip install -e .`` for development; ``pip install .`` for a normal install,
which also ships ``configs/``, ``tools/``, ``model-index.yml`` and the
released weights of ``checkpoints/`` inside the package (``mmbake/.mim/``),
the way OpenMMLab packages do for ``mim``: the model index names them
relative to that folder.
"""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
MIM_ITEMS = ('configs', 'tools', 'model-index.yml', 'checkpoints')


def get_version() -> str:
    """Read ``__version__`` from ``mmbake/version.py`` without importing it."""
    namespace: dict = {}
    with open(osp.join(HERE, 'mmbake', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), namespace)
    return namespace['__version__']


def add_mim_extension() -> None:
    """Copy configs, tools, the model index and weights into ``mmbake/.mim``.

    Only for building a wheel or a normal install: an editable install reads
    them from the repository itself (see ``mmbake/model_zoo.py``).
    """
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        return
    mim_root = osp.join(HERE, 'mmbake', '.mim')
    os.makedirs(mim_root, exist_ok=True)
    for item in MIM_ITEMS:
        src, dst = osp.join(HERE, item), osp.join(mim_root, item)
        if osp.isdir(dst):
            shutil.rmtree(dst)
        elif osp.exists(dst):
            os.remove(dst)
        if osp.isdir(src):
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        elif osp.isfile(src):
            shutil.copyfile(src, dst)


# Runtime requirements. mmcv is deliberately not listed: mmcv-lite (pure
# Python) is enough, but a user who already has the compiled mmcv must keep
# it, and pip cannot express "one of the two". Pick one with an extra:
# ``pip install mmbake[lite]`` or ``pip install mmbake[full]``.
INSTALL_REQUIRES = [
    'torch>=2.0',
    'mmengine>=0.10.0,<1.0',
    'mmpretrain>=1.2.0,<2.0',
    # numpy 2.4 removed np.in1d, which mmpretrain 1.2.0's metrics call.
    'numpy<2.4',
    # setuptools 81 removed pkg_resources, which mmengine 0.10.7 needs to
    # resolve ``mmpretrain::`` base configs.
    'setuptools<81',
]

EXTRAS_REQUIRE = {
    'lite': ['mmcv-lite>=2.0.0,<2.4.0'],
    'full': ['mmcv>=2.0.0,<2.4.0'],
    # pycls: the reference networks of the pycls checkpoint converter's
    # tests (tools/model_converters/pycls_to_mmpretrain.py).
    # pytest-xdist: pytest.ini runs the suite on every core, in groups that
    # pytest 9 ignores.
    'tests': [
        'mmcv-lite>=2.0.0,<2.4.0', 'pytest>=7,<9', 'pytest-xdist>=3.5',
        'matplotlib>=3.5', 'pycls==0.1.1'
    ],
}

if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmbake',
        version=get_version(),
        description='BAKE (Batch Knowledge Ensembling) self-distillation '
        'for mmpretrain',
        long_description=open(osp.join(HERE, 'README.md'),
                              encoding='utf-8').read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        python_requires='>=3.8',
        packages=find_packages(
            exclude=('tests', 'tests.*', 'configs', 'tools', 'benchmarks')),
        include_package_data=True,
        package_data={'mmbake': ['.mim/**/*', '.mim/*']},
        install_requires=INSTALL_REQUIRES,
        extras_require=EXTRAS_REQUIRE,
        zip_safe=False,
        classifiers=[
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
    )
