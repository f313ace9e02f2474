"""Random states in checkpoints, so that ``--resume`` continues the same run.

What draws random numbers in an rtdetr_mm training run, and from where:

======================================  ====================================
consumer                                generator
======================================  ====================================
data augmentation (mmdet/mmcv           numpy's global ``np.random`` (in the
transforms: flip, crop, photometric)    process that runs the pipeline)
multi-scale size                        Python's ``random``
(``RTDETRv2BatchResize``)
denoising queries (label flips, box     torch's global generator of the
noise in ``layers/denoising.py``),      model's device (CPU or CUDA)
dropout
sample order (``DefaultSampler`` /     the sampler's own ``torch.Generator``
``RTDETRv2ResumableSampler``)           seeded with ``seed + epoch``
======================================  ====================================

:class:`RTDETRv2RandomStateHook` writes the first three (torch CPU, every
CUDA device, numpy, ``random``) and the sampler's seed into
``checkpoint['rng_state']`` (tensors, ints, floats, strings and lists only:
it loads with ``torch.load(weights_only=True)`` without extending the
allow-list) and puts them back when the run resumes.

Guarantee: a run with ``train_dataloader.num_workers=0`` on one process that
is interrupted (even with SIGKILL) and resumed with ``--resume`` from any
checkpoint written by ``RTDETRv2CheckpointHook`` (epoch, mid-epoch
``iter_<n>.pth`` or best) ends with bit-identical weights, EMA weights,
optimizer and scheduler states to a run that was never interrupted (same
device, same thread count; ``tests/test_engine/test_resume_exact.py``).

What is not bit-identical:

- ``num_workers > 0``: the pipeline runs in worker processes. mmengine's
  ``worker_init_fn`` seeds every worker with ``seed + worker_id + rank *
  num_workers`` each time the workers start, i.e. at every epoch (or once,
  with ``persistent_workers=True``), and the workers' streams are not in the
  main process's state. A resume at an epoch boundary with non-persistent
  workers therefore reproduces the augmentation; a resume inside an epoch
  restarts the workers' streams from their seed (and shifts which worker
  loads which batch), so augmentation differs from there on. The sample
  order, the multi-scale sizes and the denoising noise stay exact.
- several processes: only rank 0 writes the checkpoint, so every rank
  resumes with rank 0's streams (the ranks' streams had diverged, since the
  denoising noise and augmentation draw per ground-truth box).

Two more things this hook does, both needed for the guarantee:

- the sampler seed: without ``randomness.seed`` mmengine draws a new seed per
  process. On resume it re-seeds the globals with the checkpoint's seed, but
  the sampler (built earlier) keeps the new one, so the data order of the
  resumed epochs would change. The sampler seed (and the seed bound to
  mmengine's ``worker_init_fn``) are set back to the checkpoint's.
- ``DataLoader`` draws a base seed from torch's *global* generator each time
  an epoch (or a validation) starts iterating. A validation that follows an
  epoch checkpoint would thus consume a draw that a run resumed from that
  checkpoint never makes. ``before_train`` gives the train and val
  dataloaders their own ``torch.Generator`` (seeded from the run's seed)
  when they have none. NOTE: the base seed only seeds worker processes, and
  mmengine's ``worker_init_fn`` re-seeds them anyway, so this changes no
  augmentation.
"""
import functools
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

#: key of the random states in a checkpoint
CKPT_KEY = 'rng_state'
_VERSION = 1


def capture_rng_state() -> Dict[str, Any]:
    """The global random states of this process, as weights_only-safe data.

    Returns:
        dict: ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors, one
        per visible device, or None without CUDA), ``numpy`` (dict of the
        MT19937 state: ``keys`` int64 tensor (624,), ``pos``, ``has_gauss``,
        ``cached_gaussian``), ``python`` (dict: ``version``, ``internal``
        list of 625 ints, ``gauss_next``).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return dict(
        torch=torch.get_rng_state(),
        cuda=list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
        numpy=dict(kind=str(kind), keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        python=dict(version=int(version), internal=[int(v) for v in internal],
                    gauss_next=None if gauss_next is None else float(gauss_next)))


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the global random states from :func:`capture_rng_state`'s output
    (tensors may come back on any device: the loader's ``map_location``)."""
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), device)
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].cpu().numpy().astype(np.uint32),
                         int(np_state['pos']), int(np_state['has_gauss']),
                         float(np_state['cached_gaussian'])))
    py_state = state['python']
    random.setstate((int(py_state['version']), tuple(int(v) for v in py_state['internal']),
                     py_state['gauss_next']))


@HOOKS.register_module()
class RTDETRv2RandomStateHook(Hook):
    """Save the random states in every checkpoint and restore them on resume.

    See the module docstring for what is saved and what a resumed run then
    reproduces. ``load_from`` (fine-tuning) does not restore anything: only
    ``resume``. A resumed checkpoint without random states (written without
    this hook) resumes as mmengine does, with a warning.
    """
    # Restore after every other before_train (nothing may draw in between).
    priority = 'LOWEST'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    # -- saving ---------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add ``checkpoint['rng_state']`` (``version``, ``world_size``,
        ``states``: list with rank 0's :func:`capture_rng_state`,
        ``sampler_seed``)."""
        checkpoint[CKPT_KEY] = dict(version=_VERSION, world_size=get_world_size(),
                                    states=[capture_rng_state()],
                                    sampler_seed=_sampler_seed(runner))

    # -- restoring ------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the states of a resumed checkpoint for ``before_train``.

        Not restored here: ``Runner.resume`` re-seeds every generator with
        the checkpoint's seed after this hook runs.
        """
        if not runner.cfg.get('resume', False):  # what mmengine's load_or_resume acts on
            return
        saved = checkpoint.get(CKPT_KEY)
        if saved is None:
            print_log('RTDETRv2RandomStateHook: the resumed checkpoint has no random states '
                      '(saved without this hook); the run continues with fresh random '
                      'streams, so it will not repeat an uninterrupted run exactly.',
                      logger='current', level=30)
            return
        if not isinstance(saved, dict) or saved.get('version') != _VERSION:
            raise ValueError(f'checkpoint[{CKPT_KEY!r}]: unknown format (version '
                             f'{saved.get("version") if isinstance(saved, dict) else saved!r})')
        self._pending = saved

    def before_train(self, runner) -> None:
        """Isolate the dataloaders' base-seed draws, then restore the random
        states and the sampler seed of a resumed checkpoint."""
        self._isolate_dataloader_draws(runner)
        saved, self._pending = self._pending, None
        if saved is None:
            return
        states: List[dict] = saved['states']
        if saved.get('world_size', 1) != 1 or get_world_size() != 1:
            print_log(f'RTDETRv2RandomStateHook: checkpoint written by {saved.get("world_size")} '
                      f'process(es), resumed by {get_world_size()}: every rank resumes with '
                      "rank 0's random streams.", logger='current', level=30)
        restore_rng_state(states[0])
        seed = saved.get('sampler_seed')
        if seed is not None:
            _set_data_seed(runner, int(seed))
        print_log(f'RTDETRv2RandomStateHook: restored the torch, numpy and random states'
                  f'{" (and CUDA)" if states[0].get("cuda") else ""} of the checkpoint '
                  f'(rank {get_rank()}), sampler seed {seed}', logger='current')

    def _isolate_dataloader_draws(self, runner) -> None:
        loaders = [runner.train_dataloader]
        val_loop = getattr(runner, '_val_loop', None)
        if val_loop is not None and hasattr(val_loop, 'dataloader'):
            loaders.append(val_loop.dataloader)
        for i, loader in enumerate(loaders):
            if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
                generator = torch.Generator()
                generator.manual_seed((int(runner.seed or 0) + 1000 * i) % 2**63)
                loader.generator = generator


def _sampler_seed(runner) -> Optional[int]:
    seed = getattr(getattr(runner.train_dataloader, 'sampler', None), 'seed', None)
    return int(seed) if isinstance(seed, (int, np.integer)) else None


def _set_data_seed(runner, seed: int) -> None:
    """Give the train sampler and mmengine's ``worker_init_fn`` the seed the
    checkpoint's run used."""
    loader = runner.train_dataloader
    sampler = getattr(loader, 'sampler', None)
    if sampler is not None and getattr(sampler, 'seed', None) not in (None, seed):
        print_log(f'RTDETRv2RandomStateHook: sampler seed {sampler.seed} -> {seed} (the '
                  'checkpoint\'s), so the resumed epochs keep their data order',
                  logger='current')
        sampler.seed = seed
    init_fn = getattr(loader, 'worker_init_fn', None)
    if isinstance(init_fn, functools.partial) and 'seed' in init_fn.keywords \
            and init_fn.keywords['seed'] != seed:
        loader.worker_init_fn = functools.partial(init_fn.func, *init_fn.args,
                                                  **dict(init_fn.keywords, seed=seed))
