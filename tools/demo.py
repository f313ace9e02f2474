"""The rtdetr_mm demo: train a CPU-sized RT-DETRv2 from scratch on the bundled
synthetic shapes data, evaluate COCO bbox mAP (and per-class AP) after every
epoch, then draw predictions and plot the loss / mAP curves.

    make demo                     # installs what is missing, then runs this
    python tools/demo.py [--work-dir work_dirs/demo] [--cfg-options K=V ...]

Steps: (1) generate ``data/shapes`` (400 train / 100 val images, 5 classes;
skipped when it is already there and current); (2) train
``configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py`` with the
config's runner (progress every 10 iterations, COCO evaluation every epoch);
(3) test the final checkpoint (EMA weights) like ``tools/test.py --out``,
drawing its predictions with mmdet's visualizer (score >= ``--score-thr``)
and keeping them in ``<work_dir>/results.pkl``; (4) from those predictions
(no second inference), the operating points at ``--score-thr`` and IoU 0.5 as
``tools/analysis_tools/operating_point.py --results`` computes them: the
per-class table, printed, and its report files in the work dir
(``operating_points.csv``, ``pr_curve.png``, ``f1_curve.png``,
``confusion_matrix.png`` / ``.csv``); (5) plot the training loss and the
validation mAP. It ends by printing the final metrics, the operating-point
table and the paths of the images, the report and the plot.

``--num-train/--num-val/--epochs`` and ``--cfg-options`` shorten the run
(tests/test_tools/test_demo.py runs it on a few tiny images).
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import rtdetr_mm  # noqa: E402,F401
from rtdetr_mm.testing.synthetic import make_synthetic_coco  # noqa: E402
from rtdetr_mm.engine.cli import exit_status, load_config  # noqa: E402
from rtdetr_mm.evaluation import (evaluate_operating_points, format_table,  # noqa: E402
                                  write_report)
from rtdetr_mm.evaluation.metrics.operating_point_metric import check_thresholds  # noqa: E402
from rtdetr_mm.evaluation.results_file import read_results  # noqa: E402
from mmdet.evaluation import DumpDetResults  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402

CONFIG = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
#: IoU of a match for the operating points (OperatingPointMetric's default)
IOU_THR = 0.5
METRIC_KEYS = ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m',
               'bbox_mAP_l')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=CONFIG, help='demo config')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data', 'shapes'))
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--epochs', type=int, default=None, help='override max_epochs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw predictions with at least this score; also the '
                        'operating point of the precision / recall / F1 table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value as in tools/train.py')
    return parser.parse_args(argv)


def demo_config(args: argparse.Namespace, data: dict) -> Config:
    """The demo config pointed at ``data`` and ``args.work_dir``."""
    cfg = load_config(args.config, 'none', args.cfg_options, args.work_dir)
    root = data['data_root'].rstrip('/') + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.val_evaluator.ann_file = data['val_ann']
    cfg.test_evaluator.ann_file = data['val_ann']
    if args.epochs:
        cfg.train_cfg.max_epochs = args.epochs
    return cfg


def read_scalars(log_dir: str):
    """(iteration, loss) and (epoch, mAP) pairs from mmengine's scalars.json."""
    losses, maps = [], []
    path = osp.join(log_dir, 'vis_data', 'scalars.json')
    if not osp.exists(path):
        return losses, maps
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec:
                losses.append((rec['step'], rec['loss']))
            if 'coco/bbox_mAP' in rec:
                maps.append((rec['step'], rec['coco/bbox_mAP']))
    return losses, maps


def plot_curves(losses, maps, out_path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    if losses:
        ax1.plot(*zip(*losses))
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('training loss (sum of all terms)')
    if maps:
        ax2.plot(*zip(*maps), marker='o')
    ax2.set_xlabel('epoch')
    ax2.set_ylabel('val bbox mAP (EMA weights)')
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    # before training: the table at the end needs a valid threshold
    check_thresholds(args.score_thr, IOU_THR, 'tools/demo.py', ('--score-thr', 'IoU'))
    t0 = time.time()
    data = make_synthetic_coco(args.data_root, num_train=args.num_train, num_val=args.num_val)
    print(f'[demo] data: {data["data_root"]} ({args.num_train} train / {args.num_val} val '
          f'images), made or checked in {time.time() - t0:.0f} s', flush=True)

    cfg = demo_config(args, data)
    runner = RUNNERS.build(cfg)
    runner.train()
    t_train = time.time() - t0
    losses, maps = read_scalars(runner.log_dir)

    # Test the final checkpoint as tools/test.py --out would: its state_dict
    # holds the EMA weights. Predictions are drawn into
    # <work_dir>/<time>/predictions and dumped (mmdet's DumpDetResults) for
    # the operating points below and for mmdet's analysis tools.
    test_cfg = cfg.copy()
    with open(osp.join(cfg.work_dir, 'last_checkpoint')) as f:
        test_cfg.load_from = f.read().strip()
    test_cfg.default_hooks.visualization = dict(
        type='DetVisualizationHook', draw=True, interval=1, score_thr=args.score_thr,
        test_out_dir='predictions')
    tester = RUNNERS.build(test_cfg)
    results = osp.join(cfg.work_dir, 'results.pkl')
    tester.test_evaluator.metrics.append(DumpDetResults(out_file_path=results))
    metrics = tester.test()
    classes = tester.test_dataloader.dataset.metainfo['classes']
    ops = evaluate_operating_points(
        read_results(results, tester.test_dataloader.dataset, args.config), classes,
        args.score_thr, IOU_THR)
    report = write_report(ops, cfg.work_dir)
    images = sorted(glob.glob(osp.join(tester.log_dir, 'predictions', '**', '*.png'),
                              recursive=True))
    curve = osp.join(cfg.work_dir, 'curves.png')
    plot_curves(losses, maps, curve)

    print(f'\n[demo] final COCO bbox metrics on the {args.num_val} validation images '
          f'({osp.basename(test_cfg.load_from)}, EMA weights):')
    for key in METRIC_KEYS:
        print(f'  {key:<12} {metrics.get("coco/" + key, float("nan")):.3f}')
    print('[demo] per-class AP:')
    for name in classes:
        print(f'  {name:<12} {metrics.get(f"coco/{name}_precision", float("nan")):.3f}')
    if maps:
        best_epoch, best = max(maps, key=lambda m: m[1])
        print(f'[demo] mAP after each epoch: {" ".join(f"{m:.3f}" for _, m in maps)} '
              f'(best {best:.3f} at epoch {best_epoch})')
    print(f'[demo] operating points of the final checkpoint on the {args.num_val} validation '
          'images:')
    print(format_table(ops))
    print(f'[demo] training + validation {t_train / 60:.1f} min, total '
          f'{(time.time() - t0) / 60:.1f} min')
    print(f'[demo] prediction images ({len(images)}, boxes with score >= {args.score_thr}):')
    for path in images[:3]:
        print(f'  {path}')
    if len(images) > 3:
        print(f'  ... in {osp.dirname(images[0])}{os.sep}')
    print('[demo] operating-point report (table, PR and F1 curves, confusion matrix):')
    for key in ('csv', 'pr_curve', 'f1_curve', 'confusion_png', 'confusion_csv'):
        print(f'  {report[key]}')
    print(f'[demo] predictions (tools/test.py --out format): {results}')
    print(f'[demo] loss / mAP curves: {curve}')
    return dict(metrics=metrics, images=images, curve=curve, maps=maps, ops=ops, report=report,
                results=results)


if __name__ == '__main__':
    # an input error (e.g. --score-thr out of [0, 1]) is printed as `error: ...`, exit 1
    sys.exit(exit_status(main))
