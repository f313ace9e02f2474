"""Test (and evaluate) a detector: mmdet 3.3's ``tools/test.py`` command line.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out X.pkl]
        [--show] [--show-dir DIR] [--wait-time S] [--cfg-options K=V ...]
        [--launcher {none,pytorch,slurm,mpi}] [--tta] [--local-rank N]

Unlike mmdet's script this imports ``rtdetr_mm`` itself, so our modules are
registered and the checkpoint loads with the ``weights_only`` allow-list even
when a config forgets ``custom_imports``.

An RT-DETRv2 checkpoint must fit the config exactly, number of classes
included (``model.checkpoint_fit='exact'``, unless the config sets
``'off'``): metrics of randomly initialised class layers mean nothing. A
checkpoint that does not fit, or a directory given as the checkpoint, exits
with status 1 and the reason on stderr.
"""
import argparse
import os.path as osp
import sys
import warnings
from copy import deepcopy

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.engine.cli import (build_runner, exit_status, load_config,  # noqa: E402
                                  parse_common_args)
from rtdetr_mm.models.detectors.checkpoint_fit import require_exact_fit  # noqa: E402
from mmdet.engine.hooks.utils import trigger_visualization_hook  # noqa: E402
from mmdet.evaluation import DumpDetResults  # noqa: E402
from mmdet.utils import setup_cache_size_limit_of_dynamo  # noqa: E402
from mmengine import ConfigDict  # noqa: E402
from mmengine.config import Config  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMDet test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true')
    return parse_common_args(parser, argv)


def _use_tta(cfg: Config) -> Config:
    """Wrap the model in ``cfg.tta_model`` (default: flip TTA + NMS)."""
    if 'tta_model' not in cfg:
        warnings.warn('Cannot find ``tta_model`` in config, '
                      'we will set it as default.')
        cfg.tta_model = dict(
            type='DetTTAModel',
            tta_cfg=dict(
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
    if 'tta_pipeline' not in cfg:
        warnings.warn('Cannot find ``tta_pipeline`` in config, '
                      'we will set it as default.')
        test_data_cfg = cfg.test_dataloader.dataset
        while 'dataset' in test_data_cfg:  # unwrap dataset wrappers
            test_data_cfg = test_data_cfg['dataset']
        cfg.tta_pipeline = deepcopy(test_data_cfg.pipeline)
        cfg.tta_pipeline[-1] = dict(
            type='TestTimeAug',
            transforms=[
                [
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ],
                [
                    dict(
                        type='PackDetInputs',
                        meta_keys=('img_id', 'img_path', 'ori_shape',
                                   'img_shape', 'scale_factor', 'flip',
                                   'flip_direction'))
                ],
            ])
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def build_cfg(args) -> Config:
    """The config with the command line applied, as mmdet's script does."""
    cfg = load_config(args.config, args.launcher, args.cfg_options, args.work_dir)

    cfg.load_from = args.checkpoint
    require_exact_fit(cfg.model)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg = _use_tta(cfg)
    return cfg


def main(argv=None) -> int:
    """Returns 0, or 1 after an error in the user's input (the checkpoint does
    not fit the config or is a directory, a run setting or the test data is
    wrong); the reason goes to stderr."""
    args = parse_args(argv)
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError('The dump file must be a pkl file.')
    # fewer repeated torch.compile recompilations
    setup_cache_size_limit_of_dynamo()
    cfg = build_cfg(args)

    def build_and_test():
        runner = build_runner(cfg)
        if args.out is not None:
            # a metric that only dumps the predictions to a pickle file
            runner.test_evaluator.metrics.append(
                DumpDetResults(out_file_path=args.out))
        runner.test()
    return exit_status(build_and_test)


if __name__ == '__main__':
    sys.exit(main())
