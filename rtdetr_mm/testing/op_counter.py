"""Count what a piece of torch code would make a GPU wait for, on any device.

On a GPU every read of a device value on the host (``.item()``, ``bool(t)``,
``.cpu()``, ``.tolist()``, an op whose output shape depends on the data
such as ``nonzero``) stalls the host until the device has caught up. On a
CPU none of them costs anything, so they are counted, not timed:
:class:`HostSyncCounter` records them at two levels while it is active.

- torch's dispatcher (a ``TorchDispatchMode``): ``_local_scalar_dense``
  (what ``.item()``, ``bool``, ``int`` and ``float`` of a tensor call),
  ``nonzero``, ``masked_select``, ``unique``, ``repeat_interleave`` with
  tensor repeats and indexing with a boolean mask. It also counts every
  aten op, a stand-in for kernel launches.
- tensor methods (a ``TorchFunctionMode``): ``.cpu()`` and ``.tolist()``,
  which copy to the host without an aten op when the tensor is already
  there, and ``.to('cpu')`` of a tensor on another device. On a CPU a
  ``.to('cpu')`` cannot be told from a host-to-device copy, so it is not
  counted there: the project's code writes device-to-host copies as
  ``.cpu()``.

Autograd's backward runs under the same modes, so a training step's
backward is counted too. Used by the sync-count test and by
``tools/analysis_tools/benchmark_vs_hf.py``.
"""
from collections import Counter
from typing import Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that read a device value on the host or whose output shape
#: depends on the data (the host must know it).
SYNCING_ATEN_OPS = ('_local_scalar_dense', 'nonzero', 'masked_select', '_unique2',
                    'unique_dim', 'unique_consecutive', 'repeat_interleave')

#: Tensor methods that copy a tensor to the host.
HOST_COPY_METHODS = ('cpu', 'tolist')


class _DispatchCounter(TorchDispatchMode):

    def __init__(self, owner: 'HostSyncCounter') -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.owner.aten_ops += 1
        if name in SYNCING_ATEN_OPS:
            if name != 'repeat_interleave' or isinstance(args[1] if len(args) > 1 else
                                                          (kwargs or {}).get('repeats'),
                                                          torch.Tensor):
                self.owner.record(f'aten.{name}')
        elif name in ('index', 'index_put', 'index_put_') and _has_bool_index(args[1]):
            self.owner.record(f'aten.{name}(bool mask)')
        return func(*args, **(kwargs or {}))


class _FunctionCounter(TorchFunctionMode):

    def __init__(self, owner: 'HostSyncCounter') -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        if name in HOST_COPY_METHODS or (name == 'to' and args[0].device.type != 'cpu'
                                         and _targets_cpu(args[1:], kwargs)):
            self.owner.record(f'Tensor.{name}')
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """Context manager counting host syncs and aten ops (see module doc).

    Example::

        with HostSyncCounter() as counter:
            loss = model.loss(...)
        counter.syncs   # Counter({'Tensor.cpu': 1})
        counter.total   # 1
        counter.aten_ops

    Attributes:
        syncs (Counter): Host syncs by kind (``'aten.nonzero'``,
            ``'aten._local_scalar_dense'``, ``'Tensor.cpu'``...).
        aten_ops (int): Every aten op dispatched (forward and backward).
    """

    def __init__(self) -> None:
        self.syncs: Counter = Counter()
        self.aten_ops = 0
        self._modes = (_FunctionCounter(self), _DispatchCounter(self))

    @property
    def total(self) -> int:
        return sum(self.syncs.values())

    def record(self, kind: str) -> None:
        self.syncs[kind] += 1

    def __enter__(self) -> 'HostSyncCounter':
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> Optional[bool]:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return None


def _has_bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
               for i in (indices if isinstance(indices, (list, tuple)) else [indices]))


def _targets_cpu(args, kwargs) -> bool:
    """Whether a ``Tensor.to(...)`` call names the CPU as its device."""
    candidates = list(args) + [(kwargs or {}).get('device')]
    for value in candidates:
        if isinstance(value, (str, torch.device)) and torch.device(value).type == 'cpu':
            return True
    return False
