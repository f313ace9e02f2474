"""Which confidence threshold should we ship? Precision, recall and F1 per
class at a score threshold, the F1-maximising threshold, the curves and the
confusion matrix of a model on the test set of its config.

    python tools/analysis_tools/operating_point.py CONFIG CHECKPOINT
        [--score-thr 0.5] [--iou-thr 0.5] [--work-dir DIR] [--cfg-options K=V ...]
    python tools/analysis_tools/operating_point.py CONFIG --results results.pkl [...]

With CHECKPOINT it runs the test set as ``tools/test.py CONFIG CHECKPOINT
--out WORK_DIR/results.pkl`` does (the config's test evaluator, e.g. COCO mAP,
runs too); with ``--results`` it reads predictions that ``tools/test.py
--out`` wrote. The ground truth is the config's test dataset (as mmdet's
``tools/analysis_tools/confusion_matrix.py`` reads it), matched by image id.

It prints the per-class table and writes to the work dir
(``./work_dirs/<config name>`` unless ``--work-dir``):
``operating_points.csv``, ``pr_curve.png``, ``f1_curve.png``,
``confusion_matrix.png`` and ``confusion_matrix.csv``. The matching rules
are in ``rtdetr_mm/evaluation/functional/operating_point.py``.

Exit status 1 with ``error: ...`` on stderr when an input is wrong (a
threshold out of range, a results file that is not ``tools/test.py --out``'s
or that belongs to another dataset, a checkpoint that does not fit).
"""
import argparse
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.engine.cli import build_runner, exit_status, load_config  # noqa: E402
from rtdetr_mm.evaluation import (evaluate_operating_points, format_table,  # noqa: E402
                                  write_report)
from rtdetr_mm.evaluation.metrics.operating_point_metric import check_thresholds  # noqa: E402
from rtdetr_mm.evaluation.results_file import read_results  # noqa: E402
from rtdetr_mm.models.detectors.checkpoint_fit import require_exact_fit  # noqa: E402
from mmdet.evaluation import DumpDetResults  # noqa: E402
from mmdet.registry import DATASETS  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file (its test dataloader is the ground truth)')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint to run on the test set')
    parser.add_argument('--results', help='predictions of tools/test.py --out (instead of '
                        'CHECKPOINT)')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='keep predictions with score >= it (default 0.5)')
    parser.add_argument('--iou-thr', type=float, default=0.5,
                        help='IoU of a match (default 0.5)')
    parser.add_argument('--work-dir', help='where the report goes (default '
                        './work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as tools/test.py')
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.results is None):
        parser.error('give either CHECKPOINT or --results results.pkl')
    return args


def run(args: argparse.Namespace) -> None:
    """Evaluate, print the table, write the report (see the module)."""
    check_thresholds(args.score_thr, args.iou_thr, 'tools/analysis_tools/operating_point.py',
                     ('--score-thr', '--iou-thr'))
    cfg = load_config(args.config, 'none', args.cfg_options, args.work_dir)
    results = args.results
    if results is None:
        results = osp.join(cfg.work_dir, 'results.pkl')
        cfg.load_from = args.checkpoint
        require_exact_fit(cfg.model)
        runner = build_runner(cfg)
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=results))
        runner.test()
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    images = read_results(results, dataset, args.config)
    ops = evaluate_operating_points(images, dataset.metainfo['classes'], args.score_thr,
                                    args.iou_thr)
    print(format_table(ops))
    paths = write_report(ops, cfg.work_dir)
    print('written: ' + ', '.join(paths[k] for k in sorted(paths)))


def main(argv=None) -> int:
    """0, or 1 after an error in the user's input (printed as ``error: ...``)."""
    args = parse_args(argv)
    return exit_status(lambda: run(args))


if __name__ == '__main__':
    sys.exit(main())
