"""The rtdetr_mm demo: generate a small shapes dataset, train a CPU-sized
RT-DETRv2 on it from scratch, evaluate COCO bbox mAP (per class too), draw
predictions and plot the loss / mAP curves.

    make demo          # installs what is missing, then runs this script
    python tools/demo.py [--work-dir work_dirs/demo] [--epochs N]
"""
import argparse
import glob
import json
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

import rtdetr_mm  # noqa: E402,F401
from rtdetr_mm.datasets import make_shapes_dataset  # noqa: E402

CONFIG = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb8-24e_shapes.py')


def plot_curves(work_dir: str, out_path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    steps, losses, epochs, maps = [], [], [], []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if 'loss' in rec:
                    steps.append(rec['step']); losses.append(rec['loss'])
                if 'coco/bbox_mAP' in rec:
                    epochs.append(rec['step']); maps.append(rec['coco/bbox_mAP'])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, losses); ax1.set_xlabel('iteration'); ax1.set_ylabel('total loss')
    ax2.plot(epochs, maps, marker='o'); ax2.set_xlabel('epoch'); ax2.set_ylabel('bbox mAP')
    fig.tight_layout(); fig.savefig(out_path, dpi=100); plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs/demo'))
    parser.add_argument('--data-root', default=osp.join(ROOT, 'data/shapes'))
    parser.add_argument('--epochs', type=int, default=None, help='override max_epochs')
    args = parser.parse_args()
    from mmengine.config import Config
    from mmengine.runner import Runner

    t0 = time.time()
    data = make_shapes_dataset(args.data_root, image_size=(256, 256))
    print(f'[demo] dataset: {data["data_root"]} (240 train / 60 val images, 4 classes)', flush=True)
    cfg = Config.fromfile(CONFIG)
    root = args.data_root.rstrip('/') + '/'
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = root
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = data['val_ann']
    cfg.val_evaluator.classwise = cfg.test_evaluator.classwise = True
    if args.epochs:
        cfg.train_cfg.max_epochs = args.epochs
        cfg.train_cfg.val_interval = min(cfg.train_cfg.val_interval, args.epochs)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=0)
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook', draw=True,
                                           interval=6, score_thr=0.3,
                                           test_out_dir='predictions')
    runner = Runner.from_cfg(cfg)
    runner.train()
    t_train = time.time() - t0
    # Test from the last checkpoint, as tools/test.py would: its state_dict
    # holds the EMA weights. (runner.test() on the training runner would
    # rebuild the EMA from the raw weights in EMAHook.before_run.)
    test_cfg = cfg.copy()
    test_cfg.load_from = osp.join(args.work_dir, f'epoch_{cfg.train_cfg.max_epochs}.pth')
    metrics = Runner.from_cfg(test_cfg).test()
    curve = osp.join(args.work_dir, 'curves.png')
    plot_curves(args.work_dir, curve)
    images = sorted(glob.glob(osp.join(args.work_dir, '*', 'predictions', '*.png')))
    print('\n[demo] final COCO bbox metrics on the validation split (EMA weights):')
    for key in ('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l'):
        print(f'  {key:<12} {metrics.get("coco/" + key, float("nan")):.3f}')
    print(f'[demo] training + validation took {t_train / 60:.1f} min, total {(time.time() - t0) / 60:.1f} min')
    print(f'[demo] prediction images ({len(images)}), e.g.:')
    for path in images[:4]:
        print(f'  {path}')
    print(f'[demo] loss / mAP curves: {curve}')


if __name__ == '__main__':
    main()
