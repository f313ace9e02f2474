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

:class:`RTDETRv2RandomStateHook` writes the first three of every rank
(torch CPU, the rank's current CUDA device, numpy, ``random``) and the
sampler's seed into ``checkpoint['rng_state']`` (tensors, ints, floats, strings and lists only:
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
- several processes: the checkpoint holds every rank's states (gathered
  with ``all_gather_object`` at the hook events where a checkpoint may be
  written, while every rank is there; only rank 0 writes the file), and
  each rank resumes with its own (``states[rank]``; the CUDA state onto its
  current device). This needs the same number of processes: resumed by
  another number, every rank takes rank 0's states (a warning says so).
  CPU (gloo) runs are tested; the CUDA generator's part of it cannot run
  on a CPU machine. Augmentation in worker processes is not exact (above).

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
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmdet.registry import HOOKS
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

#: key of the random states in a checkpoint
CKPT_KEY = 'rng_state'
#: 2: one state per rank, ``cuda`` = the rank's current device only
#: (1: rank 0's only, ``cuda`` = a list over every visible device; read too)
_VERSION = 2
_READABLE_VERSIONS = (1, 2)


def capture_rng_state() -> Dict[str, Any]:
    """The global random states of this process, as weights_only-safe data.

    Returns:
        dict: ``torch`` (uint8 CPU tensor), ``cuda`` (uint8 CPU tensor: the
        generator of the current CUDA device, the one this rank computes on;
        None without CUDA), ``numpy`` (dict of the MT19937 state: ``keys``
        int64 tensor (624,), ``pos``, ``has_gauss``, ``cached_gaussian``),
        ``python`` (dict: ``version``, ``internal`` list of 625 ints,
        ``gauss_next``).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        numpy=dict(kind=str(kind), keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss), cached_gaussian=float(cached)),
        python=dict(version=int(version), internal=[int(v) for v in internal],
                    gauss_next=None if gauss_next is None else float(gauss_next)))


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the global random states from :func:`capture_rng_state`'s output
    (tensors may come back on any device: the loader's ``map_location``).
    The CUDA state goes to the current CUDA device (a version-1 checkpoint's
    list of every visible device's state: its entry for the current device,
    else its first)."""
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        device = torch.cuda.current_device()
        if isinstance(cuda, (list, tuple)):  # version 1: every visible device of rank 0
            cuda = cuda[device] if device < len(cuda) else (cuda[0] if cuda else None)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda.cpu(), device)
    np_state = state['numpy']
    np.random.set_state((np_state['kind'], np_state['keys'].cpu().numpy().astype(np.uint32),
                         int(np_state['pos']), int(np_state['has_gauss']),
                         float(np_state['cached_gaussian'])))
    py_state = state['python']
    random.setstate((int(py_state['version']), tuple(int(v) for v in py_state['internal']),
                     py_state['gauss_next']))


def gather_rng_states() -> List[Dict[str, Any]]:
    """Every rank's :func:`capture_rng_state`, indexed by rank.

    Collective in a distributed run (``all_gather_object``): every rank must
    call it at the same point. One process: ``[capture_rng_state()]``.
    """
    state = capture_rng_state()
    if get_world_size() == 1:
        return [state]
    return all_gather_object(state)


def select_rng_state(states: List[Dict[str, Any]], rank: int, world_size: int
                     ) -> Tuple[Dict[str, Any], Optional[str]]:
    """The states rank ``rank`` of ``world_size`` resumes with, and a warning
    when they are not its own.

    Args:
        states (list[dict]): A checkpoint's states, one per rank that wrote
            it (version 1 and a save without a gather: rank 0's only).
        rank (int): This process's rank.
        world_size (int): Processes of the resumed run.

    Returns:
        tuple: ``states[rank]`` when the checkpoint holds one state per rank
        of this run (None: no warning); else ``states[0]`` and the warning.
    """
    if len(states) == world_size:
        return states[rank], None
    return states[0], (f'the checkpoint holds the random states of {len(states)} '
                       f'process(es), this run has {world_size}: every rank resumes with '
                       "rank 0's random streams, so the run will not repeat an "
                       'uninterrupted one exactly')


@HOOKS.register_module()
class RTDETRv2RandomStateHook(Hook):
    """Save the random states in every checkpoint and restore them on resume.

    See the module docstring for what is saved and what a resumed run then
    reproduces. ``load_from`` (fine-tuning) does not restore anything: only
    ``resume``. A resumed checkpoint without random states (written without
    this hook) resumes as mmengine does, with a warning.
    """
    # Before the checkpoint hook (VERY_LOW): it writes the file on rank 0
    # only (``Runner.save_checkpoint`` is master_only), so the ranks' states
    # are gathered at its events by this hook's handler, while every rank is
    # still there. Restores in before_train after every hook of higher
    # priority; the ones after it (checkpoint, early stopping) draw nothing.
    priority = 'LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._gathered: Optional[List[dict]] = None
        self._gathered_at: Optional[Tuple[int, int]] = None
        self._gather_every_iter = False

    # -- saving ---------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Add ``checkpoint['rng_state']`` (``version``, ``world_size``,
        ``states``: one :func:`capture_rng_state` per rank, by rank,
        ``sampler_seed``).

        In a distributed run the states are the ones gathered at this
        iteration's hook event (:meth:`_gather`); a save at a point where
        none was gathered keeps rank 0's only (every rank then resumes with
        them, as a resume with another number of processes)."""
        states = [capture_rng_state()]
        if get_world_size() > 1:
            if self._gathered is not None and self._gathered_at == _position(runner):
                states = self._gathered
            else:
                print_log('RTDETRv2RandomStateHook: a checkpoint written where the ranks\' '
                          "random states were not gathered keeps rank 0's only",
                          logger='current', level=30)
        checkpoint[CKPT_KEY] = dict(version=_VERSION, world_size=get_world_size(),
                                    states=states, sampler_seed=_sampler_seed(runner))

    def _gather(self, runner) -> None:
        """Every rank's random states, at a hook event where the checkpoint
        hook may save next (distributed runs only; collective)."""
        if get_world_size() > 1:
            self._gathered = gather_rng_states()
            self._gathered_at = _position(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._gather_every_iter:  # a checkpoint hook that saves by iteration
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        self._gather(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._gather(runner)  # save_best

    def after_mid_epoch_val(self, runner) -> None:
        self._gather(runner)  # iter_<n>.pth (the train loop's custom event)

    def after_train(self, runner) -> None:
        self._gather(runner)  # save_last of a run stopped early

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
        if not isinstance(saved, dict) or saved.get('version') not in _READABLE_VERSIONS:
            raise ValueError(f'checkpoint[{CKPT_KEY!r}]: unknown format (version '
                             f'{saved.get("version") if isinstance(saved, dict) else saved!r})')
        self._pending = saved

    def before_train(self, runner) -> None:
        """Isolate the dataloaders' base-seed draws, then restore the random
        states and the sampler seed of a resumed checkpoint."""
        self._isolate_dataloader_draws(runner)
        self._gather_every_iter = get_world_size() > 1 and any(
            isinstance(hook, CheckpointHook) and not hook.by_epoch for hook in runner.hooks)
        saved, self._pending = self._pending, None
        if saved is None:
            return
        state, warning = select_rng_state(saved['states'], get_rank(), get_world_size())
        if warning:
            print_log(f'RTDETRv2RandomStateHook: {warning}.', logger='current', level=30)
        restore_rng_state(state)
        seed = saved.get('sampler_seed')
        if seed is not None:
            _set_data_seed(runner, int(seed))
        print_log(f'RTDETRv2RandomStateHook: restored the torch, numpy and random states'
                  f'{" (and CUDA)" if state.get("cuda") is not None else ""} of the checkpoint '
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


def _position(runner) -> Tuple[int, int]:
    """Where the run is: (epoch, iteration)."""
    return int(runner.epoch), int(runner.iter)


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
