"""mmengine's checkpoint loaders, re-registered to unpickle with ``weights_only=True``.

mmengine picks a loader by the prefix of ``load_from`` / ``--resume``
(``CheckpointLoader``). Its local, pavi and ceph loaders call ``torch.load``
(``weights_only=True`` by default since torch 2.6), but torch's refusal does
not name the file; its http(s), ``torchvision://``, ``open-mmlab://`` and
``mmcls://`` loaders go through ``torch.hub.load_state_dict_from_url``, whose
``weights_only`` defaults to False, i.e. unrestricted unpickling of a
downloaded file.

:func:`register_loaders` registers, through mmengine's public
``CheckpointLoader.register_scheme(..., force=True)``, a loader of our own
for every scheme mmengine 0.10 ships: each loads with ``weights_only=True``
and reports a refused or corrupt file by name
(:mod:`rtdetr_mm.engine.checkpoint_safety`). mmengine's module attributes
and source are left untouched.
"""
import functools
import logging
import os
import os.path as osp
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Optional

import torch
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner import checkpoint as mmengine_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from .checkpoint_safety import (CorruptCheckpointError, UnsafeCheckpointError,
                                classify_load_error, safe_load_checkpoint)

__all__ = ['register_loaders', 'load_from_local', 'load_from_http']


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """mmengine's ``load_from_local`` with ``weights_only=True``."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_load_checkpoint(filename, map_location=map_location)


def _load_url(url: str, model_dir: Optional[str], map_location: Optional[Any],
              progress: bool) -> Any:
    try:
        return torch.hub.load_state_dict_from_url(
            url, model_dir=model_dir, map_location=map_location, progress=progress,
            weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise classify_load_error(url, err) from None


def load_from_http(filename: str, map_location: Optional[Any] = None,
                   model_dir: Optional[str] = None, progress: bool = os.isatty(0)) -> Any:
    """mmengine's ``load_from_http`` (rank 0 downloads first, the other
    ranks then read the cached file) with ``weights_only=True``."""
    rank, world_size = get_dist_info()
    checkpoint = None
    if rank == 0:
        checkpoint = _load_url(filename, model_dir, map_location, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = _load_url(filename, model_dir, map_location, progress)
    return checkpoint


def load_from_torchvision(filename: str, map_location: Optional[Any] = None) -> Any:
    """``torchvision://<name>`` (and the deprecated ``modelzoo://``)."""
    prefix, name = filename.split('://', 1)
    if prefix == 'modelzoo':
        print_log('The URL scheme of "modelzoo://" is deprecated, please use '
                  '"torchvision://" instead', logger='current', level=logging.WARNING)
    url = mmengine_checkpoint.get_torchvision_models()[name]
    return load_from_http(url, map_location=map_location)


def load_from_openmmlab(filename: str, map_location: Optional[Any] = None) -> Any:
    """``open-mmlab://<name>`` / ``openmmlab://<name>``: a URL or a file
    under mmengine's home, from mmengine's model lists."""
    prefix, name = filename.split('://', 1)
    deprecated = mmengine_checkpoint.get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}://{name} is deprecated in favor of {prefix}://{deprecated[name]}',
                  logger='current', level=logging.WARNING)
        name = deprecated[name]
    url = mmengine_checkpoint.get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location=map_location)
    home = os.path.expanduser(os.getenv('MMENGINE_HOME', os.path.join(
        os.getenv('XDG_CACHE_HOME', '~/.cache'), 'mmengine')))
    return load_from_local(osp.join(home, url), map_location=map_location)


def load_from_mmcls(filename: str, map_location: Optional[Any] = None) -> Any:
    """``mmcls://<name>``: the backbone weights of an mmcls checkpoint
    (``backbone.`` stripped), as mmengine's loader returns them."""
    url = mmengine_checkpoint.get_mmcls_models()[filename.split('://', 1)[1]]
    checkpoint = load_from_http(url, map_location=map_location)
    state_dict = checkpoint.get('state_dict', checkpoint)
    return dict(state_dict=OrderedDict(
        (key[len('backbone.'):], value) for key, value in state_dict.items()
        if key.startswith('backbone.')))


def _with_clear_errors(loader: Callable) -> Callable:
    """A loader that calls ``torch.load`` itself (pavi, ceph), reporting
    refused and corrupt files by name."""

    @functools.wraps(loader)
    def wrapped(filename, *args, **kwargs):
        try:
            return loader(filename, *args, **kwargs)
        except (UnsafeCheckpointError, CorruptCheckpointError):
            raise
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as err:
            raise classify_load_error(filename, err) from None

    return wrapped


def register_loaders() -> None:
    """Register the loaders above for mmengine 0.10's schemes (idempotent:
    ``force=True`` replaces)."""
    schemes = {
        '': load_from_local,
        ('http://', 'https://'): load_from_http,
        ('modelzoo://', 'torchvision://'): load_from_torchvision,
        ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
        'mmcls://': load_from_mmcls,
        'pavi://': _with_clear_errors(mmengine_checkpoint.load_from_pavi),
        (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'):
            _with_clear_errors(mmengine_checkpoint.load_from_ceph),
    }
    for prefixes, loader in schemes.items():
        CheckpointLoader.register_scheme(prefixes, loader, force=True)
