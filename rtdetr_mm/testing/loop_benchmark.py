"""What an iteration of ``tools/train.py`` costs beyond the model's own step
(``benchmark_vs_hf.py --loop``; issue 10 item 8: at most 1.1x).

For each dataloader setting (``num_workers``; ``persistent_workers`` when
there are workers; ``pin_memory`` on CUDA), back to back in this process:

1. **the loop**: ``tools/train.py``'s runner (:func:`rtdetr_mm.engine.cli.build_runner`)
   on the config for ``iters`` iterations (the training set cut to
   ``iters x batch`` images, one epoch, no validation, no checkpoint), with
   :class:`IterationClock` timing every iteration from the end of the
   previous one: waiting for the batch, the hooks (logger, EMA, timer...),
   the data preprocessor, forward, loss, backward, the optimizer step;
2. **the model step alone**: ``model.train_step(batch, optim_wrapper)`` on
   the same raw batches, kept from the loop, with the runner's model and
   optim wrapper (preprocessor, forward, loss, backward, optimizer step; no
   data loading, no hooks).

Ratio = median loop iteration / median step, the first ``warmup``
iterations of each left out (worker start, first allocations).
"""
import copy
import os.path as osp
import statistics
import time
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

LOOP_COLUMNS = ['num_workers', 'persistent_workers', 'pin_memory', 'iters', 'loop_ms',
                'step_ms', 'ratio', 'loop_mean_ms', 'step_mean_ms']


class IterationClock(Hook):
    """Wall time of every training iteration, measured from the end of the
    previous one (so it includes waiting for the batch and every hook), and
    deep copies of the first ``keep`` raw batches (the copy's time is not
    counted). Runs after every other hook of an iteration."""

    priority = 'LOWEST'

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.seconds: List[float] = []
        self.batches: List[dict] = []
        self._last: Optional[float] = None

    def before_train(self, runner) -> None:
        self._last = time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if len(self.batches) < self.keep:
            start = time.perf_counter()
            self.batches.append(copy.deepcopy(data_batch))
            self._last += time.perf_counter() - start

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


def loop_config(cfg: Config, iters: int, num_workers: int, pin_memory: bool,
                work_dir: str) -> Config:
    """``cfg`` cut to one epoch of ``iters`` iterations with the given
    dataloader setting, no validation and no checkpoint files."""
    cfg = copy.deepcopy(cfg)
    loader = cfg.train_dataloader
    loader.num_workers = num_workers
    loader.persistent_workers = num_workers > 0
    loader.pin_memory = pin_memory
    loader.dataset.indices = iters * loader.batch_size  # mmengine's BaseDataset: the first N
    cfg.train_cfg.max_epochs = 1
    # no validation: mmengine builds the val loop (and its dataset) in
    # train() whenever one is configured, even if it never runs
    cfg.train_cfg.pop('val_interval', None)
    cfg.train_cfg.pop('val_begin', None)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**9, save_last=False)
    cfg.work_dir = work_dir
    # mmengine keeps one visualizer and one logger per name for the process:
    # a second runner would write into the first one's (deleted) work_dir
    cfg.experiment_name = cfg.visualizer.name = f'loop_benchmark_{osp.basename(work_dir)}'
    return cfg


def _median_ms(seconds: Sequence[float]) -> float:
    return 1000 * statistics.median(seconds)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure_loop(cfg: Config, iters: int, warmup: int, num_workers: int,
                 work_dir: str) -> dict:
    """One setting: the loop's iterations, then the model step alone on the
    same batches (see the module docstring). Returns a :data:`LOOP_COLUMNS` row."""
    from rtdetr_mm.engine.cli import build_runner
    if iters <= warmup:
        raise ValueError(f'iters ({iters}) must exceed warmup ({warmup})')
    pin_memory = torch.cuda.is_available()
    run_cfg = loop_config(cfg, iters, num_workers, pin_memory, work_dir)
    clock = IterationClock(keep=iters)
    runner = build_runner(run_cfg)
    runner.register_hook(clock)
    runner.train()
    loop = clock.seconds[warmup:]

    model, optim_wrapper = runner.model, runner.optim_wrapper
    device = next(model.parameters()).device
    model.train()
    step = []
    for batch in clock.batches:
        _sync(device)
        start = time.perf_counter()
        model.train_step(batch, optim_wrapper)
        _sync(device)
        step.append(time.perf_counter() - start)
    step = step[warmup:]
    loop_ms, step_ms = _median_ms(loop), _median_ms(step)
    return dict(num_workers=num_workers, persistent_workers=num_workers > 0,
                pin_memory=pin_memory, iters=len(loop), loop_ms=round(loop_ms, 1),
                step_ms=round(step_ms, 1), ratio=round(loop_ms / step_ms, 3),
                loop_mean_ms=round(1000 * statistics.mean(loop), 1),
                step_mean_ms=round(1000 * statistics.mean(step), 1))
