"""rtdetr_mm: RT-DETRv2 as an MMDetection 3.3 plugin.

Install with ``make install`` (tools/install.sh), not with a bare
``pip install .``: see the comment on ``install_requires``.
"""
from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


setup(
    name='rtdetr_mm',
    version='0.1.0',
    description='RT-DETRv2 registered into MMDetection 3.3 as a plugin',
    long_description=readme(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['rtdetr_mm', 'rtdetr_mm.*']),
    include_package_data=False,
    package_data={},
    # torch and mmcv are deliberately NOT listed (the exact pins live in
    # requirements/runtime.txt and tools/install.sh installs them):
    # - mmcv 2.1.0 has no wheel on PyPI for current torch, so a requirement
    #   on it makes pip resolve it again and try to build the sdist in an
    #   isolated env, which fails (no pkg_resources with setuptools>=82) or
    #   yields an mmcv without compiled ops, replacing the working build;
    # - a bare `torch` requirement makes pip pull the multi-GB CUDA wheel
    #   on a CPU machine where the CPU wheel was intended.
    # mmdet's own metadata does not require mmcv/mmengine either (only its
    # `mim` extra does), so listing it here is harmless.
    install_requires=[
        'mmengine>=0.10.7,<1.0.0',
        'mmdet==3.3.0',
        # mmengine 0.10.7 imports pkg_resources at runtime (`mmdet::` base
        # configs); setuptools 82 removed it.
        'setuptools>=77,<81',
        'matplotlib',
        'numpy',
        'pycocotools',
        'scipy',
        'shapely',
        'six',
        'terminaltables',
        'tqdm',
        'safetensors',
    ],
    extras_require={
        'hf': ['transformers==5.24.0'],
        'tests': ['pytest', 'pytest-timeout'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Operating System :: OS Independent',
    ],
    zip_safe=False,
)
