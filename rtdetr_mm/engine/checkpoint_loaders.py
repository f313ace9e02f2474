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

Two more things every loader does:

* a directory given as a checkpoint is refused with what to do (a Hugging
  Face model directory is converted first; a work dir holds ``*.pth``
  files), instead of mmengine's "can not be found";
* the state dict returned carries the file it came from
  (:func:`tag_source`), so the detector's checkpoint fit check
  (``rtdetr_mm/models/detectors/checkpoint_fit.py``) names it, whichever
  tool loads it.
"""
import functools
import glob
import json
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

from ..models.detectors.checkpoint_fit import SOURCE_METADATA_KEY
from .checkpoint_safety import (CorruptCheckpointError, UnsafeCheckpointError,
                                classify_load_error, safe_load_checkpoint)

__all__ = ['register_loaders', 'load_from_local', 'load_from_http', 'tag_source',
           'directory_error']

CONVERTER = 'tools/model_converters/rtdetrv2_to_mmdet.py'


def directory_error(path: str) -> IsADirectoryError:
    """The error for a directory given as a checkpoint: what it holds (a
    Hugging Face ``config.json`` and its ``model_type``, checkpoint files)
    and what to do."""
    base = osp.normpath(path)
    message = (f'{path} is a directory, not a checkpoint file; for a Hugging Face model '
               f'directory run {CONVERTER} {path} {base}.pth --config CONFIG and load '
               f'{base}.pth.')
    config_json = osp.join(path, 'config.json')
    if osp.isfile(config_json):
        try:
            with open(config_json) as f:
                model_type = json.load(f).get('model_type')
        except (OSError, ValueError, AttributeError):
            model_type = None
        message += f' It holds a Hugging Face config.json (model_type {model_type!r})'
        message += (': convert it as above.' if model_type == 'rt_detr_v2' else
                    ": the converter reads RT-DETRv2 models (model_type 'rt_detr_v2') only.")
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(glob.escape(path), '*.pth')))
    if found:
        more = f' (+{len(found) - 5} more)' if len(found) > 5 else ''
        message += (f' It holds checkpoint files: {", ".join(found[:5])}{more}; pass one of '
                    'them.')
    return IsADirectoryError(message)


def tag_source(checkpoint: Any, filename: str) -> Any:
    """Record ``filename`` in the root entry of the state dict's
    ``_metadata`` (under ``SOURCE_METADATA_KEY``), where the detector's
    ``load_state_dict`` pre hook reads it.

    NOTE: a plain-dict state dict (e.g. a converted checkpoint) becomes an
    ``OrderedDict`` (same items): only that can carry ``_metadata``, as the
    state dicts torch writes do.

    Args:
        checkpoint: As a loader returns it: ``{'state_dict': ...}`` or a
            bare state dict; anything else is returned unchanged.

    Returns:
        The checkpoint (a bare plain-dict state dict is replaced).
    """
    if not isinstance(checkpoint, dict):
        return checkpoint
    nested = isinstance(checkpoint.get('state_dict'), dict)
    state_dict = checkpoint['state_dict'] if nested else checkpoint
    if not isinstance(state_dict, OrderedDict):
        state_dict = OrderedDict(state_dict)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is None:
        metadata = OrderedDict()
    metadata[''] = dict(metadata.get('', {}), **{SOURCE_METADATA_KEY: str(filename)})
    state_dict._metadata = metadata
    if nested:
        checkpoint['state_dict'] = state_dict
        return checkpoint
    return state_dict


def load_from_local(filename: str, map_location: Optional[Any] = None) -> Any:
    """mmengine's ``load_from_local`` with ``weights_only=True``; a
    directory is refused with what to do (:func:`directory_error`)."""
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise directory_error(filename)
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


def _tagging(loader: Callable) -> Callable:
    """A loader whose result names its file (:func:`tag_source`)."""

    @functools.wraps(loader)
    def wrapped(filename, *args, **kwargs):
        return tag_source(loader(filename, *args, **kwargs), filename)

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
        CheckpointLoader.register_scheme(prefixes, _tagging(loader), force=True)
