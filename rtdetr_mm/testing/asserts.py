"""Assertions the tests share."""
import torch


def assert_same(a, b, where: str = '') -> None:
    """Recursive ``torch.equal`` / ``==`` over checkpoint contents (dicts,
    lists, tuples, tensors of the same dtype and shape); the message names
    the path of the first difference."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f'{where}: max diff {(a.double() - b.double()).abs().max()}'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys {set(a) ^ set(b)}'
        for k in a:
            assert_same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'
