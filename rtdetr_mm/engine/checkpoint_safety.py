"""Load mmengine checkpoints with ``torch.load(weights_only=True)``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``. Since torch 2.6
that means ``weights_only=True``, and the restricted unpickler rejects the
few non-tensor types that mmengine writes into every checkpoint it saves, so
``--resume`` and ``load_from`` fail with "Unsupported global: ...".

We do not turn the restriction off (no ``weights_only=False``, no
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a checkpoint is a pickle, and a pickle
that may call arbitrary globals runs arbitrary code. Instead
:func:`register_safe_globals` allow-lists exactly the globals that an
mmengine ``Runner`` checkpoint contains. They were found by training a tiny
mmdet detector with the Runner (epoch- and iteration-based loops, validation
with ``save_best``, ``EMAHook``, ``max_keep_ckpts``) and listing
``torch.serialization.get_unsafe_globals_in_checkpoint`` of what it saved
(see ``tests/test_engine/test_checkpoint_safety.py``). Everything else in such a
checkpoint (``OrderedDict`` state dicts, tensors, optimizer and scheduler
states, ``meta`` with the config as a *string*, ``dataset_meta``) is already
allowed by torch. The globals are:

* ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's
  ``log_scalars``.
* ``builtins.getattr``: ``HistoryBuffer.__getstate__`` stores its statistics
  methods (``HistoryBuffer.min`` ...), which pickle protocol 2 writes as
  ``getattr(HistoryBuffer, 'min')``. We never allow the real ``getattr``: the
  name is bound to :func:`_history_buffer_getattr`, which only returns
  HistoryBuffer's registered statistics methods.
* numpy: ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray`` and
  ``numpy.dtype`` (the ``float64``/``int64`` arrays inside a HistoryBuffer),
  ``numpy._core.multiarray.scalar`` (numpy scalars in the message hub's
  ``runtime_info``, e.g. ``eta``), plus the classes of the fixed-size numeric
  dtypes (``numpy.dtypes.Float64DType`` ...), which the unpickler must be
  allowed to ``BUILD``. The ``numpy.core.multiarray`` spellings are registered
  too, so checkpoints written under numpy 1 load under numpy 2 and back.
  Object, string and structured dtypes are not allowed.

A file that cannot be read at all (truncated by a killed save, damaged,
random bytes) raises :class:`CorruptCheckpointError` naming the file and its
size, instead of torch's bare zip/pickle error.

mmengine's checkpoint loaders are re-registered with ours, which load
through here (:mod:`rtdetr_mm.engine.checkpoint_loaders`).
"""
import inspect
import os.path as osp
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, List, Optional

import numpy as np
import torch
from torch.serialization import add_safe_globals

__all__ = ['register_safe_globals', 'safe_load_checkpoint', 'classify_load_error',
           'safe_global_names', 'UnsafeCheckpointError', 'CorruptCheckpointError']


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a global outside the ``weights_only`` allow-list."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated, corrupt or not a torch file at all."""


_REGISTERED = False

# Numeric dtypes whose dtype *classes* may be rebuilt. mmengine writes float64
# and int64 (HistoryBuffer) and float64 scalars; the other fixed-size numeric
# types are listed so that a metric logged as e.g. np.float32 still resumes.
_NUMERIC_DTYPES = ('?', 'b', 'B', 'h', 'H', 'i', 'I', 'l', 'L', 'q', 'Q', 'e',
                   'f', 'd', 'g', 'F', 'D', 'G')

# HistoryBuffer's default statistics methods (see its
# ``_set_default_statistics``); methods added with
# ``HistoryBuffer.register_statistics`` are accepted too.
_HISTORY_BUFFER_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Callable:
    """Stand-in for ``builtins.getattr`` inside ``weights_only`` loads.

    Only ``getattr(HistoryBuffer, <statistics method>)`` is answered, which is
    how pickle protocol 2 writes ``HistoryBuffer.min`` & co.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(_HISTORY_BUFFER_DEFAULT_STATISTICS)
    allowed.update(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        value = vars(HistoryBuffer).get(name)
        if inspect.isfunction(value):
            return value
    raise pickle.UnpicklingError(
        'Unsupported global: GLOBAL builtins.getattr is only allowed for '
        f'HistoryBuffer statistics methods, not getattr({obj!r}, {name!r})')


def _multiarray():
    # numpy>=2 moved numpy.core to numpy._core (numpy.core still warns).
    core = getattr(np, '_core', None)
    if core is None:  # numpy 1.x
        core = np.core
    return core.multiarray


def _safe_globals() -> List[Any]:
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = _multiarray()
    entries: List[Any] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for package in ('numpy._core', 'numpy.core'):
        entries.append((multiarray._reconstruct,
                        f'{package}.multiarray._reconstruct'))
        entries.append((multiarray.scalar, f'{package}.multiarray.scalar'))
    # dtype classes: numpy.dtypes.Float64DType (numpy>=1.25) or
    # numpy.dtype[float64] (numpy 1.20-1.24). They are BUILD targets, not
    # globals: np.dtype('f8', False, True) returns an instance of them.
    entries.extend(sorted({type(np.dtype(c)) for c in _NUMERIC_DTYPES},
                          key=lambda t: t.__name__))
    return entries


def safe_global_names() -> List[str]:
    """The names this module adds to torch's ``weights_only`` allow-list."""
    names = []
    for entry in _safe_globals():
        if isinstance(entry, tuple):
            names.append(entry[1])
        else:
            names.append(f'{entry.__module__}.{entry.__qualname__}')
    return names


def register_safe_globals() -> None:
    """Allow-list the types mmengine writes into checkpoints (idempotent).

    Also registers our loaders for mmengine's checkpoint schemes
    (:func:`rtdetr_mm.engine.checkpoint_loaders.register_loaders`): every one
    unpickles with ``weights_only=True`` and names a refused file.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    add_safe_globals(_safe_globals())
    from .checkpoint_loaders import register_loaders  # it imports this module
    register_loaders()
    _REGISTERED = True


_GLOBAL_PATTERNS = (
    re.compile(r'GLOBAL ([\w.]+)'),
    re.compile(r'unrecognized function (.+?)(?: which belongs to|$)', re.M),
    re.compile(r'via `add_safe_globals`, but got (\S+)'),
)


def _offending_global(message: str) -> Optional[str]:
    for pattern in _GLOBAL_PATTERNS:
        match = pattern.search(message)
        if match:
            name = match.group(1).rstrip('.')
            # torch prints builtins without their module ("GLOBAL eval")
            return name if '.' in name or '<' in name else f'builtins.{name}'
    return None


def _is_weights_only_error(err: BaseException) -> bool:
    # torch prefixes every complaint of its restricted unpickler with this.
    text = str(err)
    return 'weights_only' in text or 'Weights only load failed' in text


_TORCH_BOILERPLATE = ('weights_only', 'Weights only load failed',
                      'Check the documentation', 'WeightsUnpickler error',
                      'file an issue', 'trust the source')


def _torch_detail(message: str) -> str:
    """torch's reason, without its advice to pass ``weights_only=False``."""
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines
            if line and not any(b in line for b in _TORCH_BOILERPLATE)]
    return ' '.join(kept) or 'rejected by the weights_only unpickler'


def _refusal(filename: Any, err: BaseException) -> RuntimeError:
    name = _offending_global(str(err))
    if name is None:
        # a corrupt file (e.g. "invalid load key") or an opcode the restricted
        # unpickler lacks: nothing allow-listing could fix
        return _corrupt(filename, err)
    return UnsafeCheckpointError(
        f'refusing to unpickle {name} from {filename}: checkpoints may only '
        'contain tensors and the types mmengine writes; rtdetr_mm loads them '
        'with torch.load(weights_only=True) and the allow-list in '
        'rtdetr_mm/engine/checkpoint_safety.py. If you trust this file and '
        f'{name} is plain data, allow-list it with '
        'torch.serialization.add_safe_globals([...]) before loading.')


# What torch says about a truncated zip archive or a damaged pickle stream.
_CORRUPT_MARKERS = ('PytorchStreamReader', 'archive is corrupted', 'central directory',
                    'unexpected EOF', 'Ran out of input', 'invalid load key',
                    'truncated', 'not a zip file', 'Invalid magic number',
                    'could not find', 'is a zip archive')


def _corrupt(filename: Any, err: BaseException) -> CorruptCheckpointError:
    size = ''
    try:
        size = f' ({osp.getsize(filename)} bytes)'
    except (OSError, TypeError):
        pass
    return CorruptCheckpointError(
        f'cannot read checkpoint {filename}{size}: the file is truncated or corrupt, or not '
        f'a torch checkpoint ({type(err).__name__}: {_torch_detail(str(err))}). A run killed '
        'while saving leaves the previous checkpoints intact: the last_checkpoint file of '
        'the work dir names the newest complete one.')


def _looks_corrupt(err: BaseException) -> bool:
    if isinstance(err, (EOFError, zipfile.BadZipFile)):
        return True
    return any(marker in str(err) for marker in _CORRUPT_MARKERS)


def safe_load_checkpoint(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` with a clear refusal message.

    Raises:
        UnsafeCheckpointError: a ``RuntimeError``: the file holds a global
            that is not allow-listed (for example a pickled callable); the
            message names the file and the global.
        CorruptCheckpointError: a ``RuntimeError``: the file is truncated
            (e.g. a save that was killed), damaged or not a torch file; the
            message names the file and its size.
    """
    register_safe_globals()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - classified below, else re-raised
        if _is_weights_only_error(err):
            raise _refusal(path, err) from None
        if _looks_corrupt(err) or isinstance(err, _UNPICKLER_FAILURES):
            raise _corrupt(path, err) from err
        raise


def classify_load_error(filename: Any, err: BaseException) -> BaseException:
    """The error to raise for ``err`` from loading ``filename``: an
    :class:`UnsafeCheckpointError` or :class:`CorruptCheckpointError` naming
    the file, or ``err`` itself when it is neither."""
    if _is_weights_only_error(err):
        return _refusal(filename, err)
    if _looks_corrupt(err):
        return _corrupt(filename, err)
    return err


#: What the pickle reader raises on bytes that are not a complete checkpoint
#: (a non-zip file goes to the legacy reader, where random or damaged opcodes
#: fail with any of these).
_UNPICKLER_FAILURES = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, IndexError,
                       KeyError, TypeError, AttributeError, OverflowError, struct.error,
                       UnicodeDecodeError)
