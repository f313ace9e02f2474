import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for path in (ROOT, osp.dirname(osp.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(autouse=True, scope='session')
def _mmdet_scope():
    import rtdetr_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
