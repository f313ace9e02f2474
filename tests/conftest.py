import random

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope='session')
def _mmdet_scope():
    import rtdetr_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


@pytest.fixture(autouse=True)
def _seed_global_generators():
    """Every test starts from the same global random states (torch, numpy,
    random), whatever ran before it: no result depends on test order. Tests
    that draw numbers also seed their own generators where the values
    matter; module-scoped fixtures seed themselves."""
    import torch
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
