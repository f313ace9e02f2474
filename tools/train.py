"""Train a detector: mmdet 3.3's ``tools/train.py`` command line.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options K=V ...]
        [--launcher {none,pytorch,slurm,mpi}] [--local-rank N]

Unlike mmdet's script this imports ``rtdetr_mm`` itself, so our modules are
registered and checkpoints load with the ``weights_only`` allow-list even
when a config forgets ``custom_imports``.

Exit status 1 with ``error: <message>`` on stderr (no traceback) on an error
in what the user gave (``rtdetr_mm.engine.cli.USER_ERRORS``): a run setting
out of range, a dataset that would train on nothing or on wrong boxes, a
``load_from`` checkpoint that does not fit the model (or a directory), a work
dir held by another training (``train.lock``), ``--resume`` without a
checkpoint of this work dir, a checkpoint that cannot be written (full disk).
"""
import argparse
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.engine.cli import (build_runner, exit_status, load_config,  # noqa: E402
                                  parse_common_args)
from rtdetr_mm.engine.runner.work_dir_lock import WorkDirLock  # noqa: E402
from mmdet.utils import setup_cache_size_limit_of_dynamo  # noqa: E402
from mmengine.config import Config  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    return parse_common_args(parser, argv)


def build_cfg(args) -> Config:
    """The config with the command line applied, as mmdet's script does."""
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)

    if args.amp and cfg.optim_wrapper.get('type') != 'RTDETRv2AmpOptimWrapper':
        # NOTE: mmdet's script selects mmengine's AmpOptimWrapper, which
        # asserts a GPU. Ours runs fp16 + dynamic loss scaling on CUDA and
        # bf16 autocast elsewhere (rtdetr_mm/engine/optimizers/mixed_precision.py).
        cfg.optim_wrapper.type = 'RTDETRv2AmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'float16' if torch.cuda.is_available() else 'bfloat16'

    if args.auto_scale_lr:
        if ('auto_scale_lr' in cfg and 'enable' in cfg.auto_scale_lr
                and 'base_batch_size' in cfg.auto_scale_lr):
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or '
                               '"auto_scale_lr.enable" or '
                               '"auto_scale_lr.base_batch_size" in your'
                               ' configuration file.')

    # --resume without a path: the latest checkpoint in work_dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def train(cfg: Config) -> None:
    """Refuse a work dir another training holds before anything is built
    (the runner's ``train`` then takes the lock atomically), build, train."""
    WorkDirLock(cfg.work_dir).refuse_if_held()
    build_runner(cfg).train()


def main(argv=None) -> int:
    """Train; 0 when done, 1 after an error in the user's input (printed)."""
    args = parse_args(argv)
    # fewer repeated torch.compile recompilations
    setup_cache_size_limit_of_dynamo()
    cfg = build_cfg(args)
    return exit_status(lambda: train(cfg))


if __name__ == '__main__':
    sys.exit(main())
