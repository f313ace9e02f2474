"""Export an RT-DETRv2 checkpoint to ONNX and check it against PyTorch.

    python tools/deployment/export_onnx.py CONFIG CHECKPOINT [--out FILE]
        [--opset {16,17,18}] [--image-size H W] [--sampling {grid_sample,discrete}]
        [--batch N] [--dynamic-batch] [--no-orig-target-sizes] [--no-check]
        [--score-tol S] [--box-tol PX]
        [--score-thr T] [--nms-iou IOU] [--nms-class-agnostic]

The file has the official deploy model's interface:

    inputs   images             (N, 3, H, W) float32, RGB, values in [0, 1]
                                (pixels / 255, resized to H x W without keeping
                                the aspect ratio; the config's mean/std are
                                applied inside the graph)
             orig_target_sizes  (N, 2) int64, (w, h) of the original images
                                (left out with --no-orig-target-sizes)
    outputs  labels (N, K) int64, boxes (N, K, 4) float32 xyxy pixels of
             orig_target_sizes (else of H x W), scores (N, K) float32;
             K = test_cfg.max_per_img, sorted by score, no threshold applied.

With the config's model.test_cfg.score_thr / model.test_cfg.nms (the keys
tools/test.py applies; or --score-thr, --nms-iou, --nms-class-agnostic,
which override them), the graph applies them after the top-K (ONNX
NonMaxSuppression) and the shapes stay fixed: a 4th output

             num_dets (N,) int64: row b holds num_dets[b] kept detections,
             by score, then padding (label -1, box 0, score 0).

RepVGG branches are merged and every BN folded into its conv
(``fuse_for_deploy``, the copy the detector's own inference runs) before
export; the check runs
onnxruntime on deterministic images and compares its detections, matched as
sets, with the UNFUSED PyTorch model, prints the largest score and box
differences and exits with status 1 when they exceed the tolerances.
``--sampling discrete`` replaces grid_sample (GridSample, TensorRT >= 8.5) by
nearest-pixel gathering; a model trained with grid_sample then moves boxes
by up to a few pixels, so fine-tune with discrete sampling for deployment.

The checkpoint must fit the config exactly, number of classes included
(``model.checkpoint_fit='exact'`` unless the config sets ``'off'``); one
that does not, or a directory, exits with status 1 before anything is
written, the reason on stderr.
"""
import argparse
import os
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.deployment.onnx_export import (DEFAULT_OPSET, SAMPLING_METHODS,  # noqa: E402
                                              SUPPORTED_OPSETS, build_detector,
                                              config_input_size, export_onnx,
                                              fuse_for_deploy, verify_onnx)
from rtdetr_mm.engine.runner.image_size import check_image_size  # noqa: E402
from rtdetr_mm.models.detectors.checkpoint_fit import CheckpointMismatchError  # noqa: E402
from rtdetr_mm.models.layers.postprocess import DuplicateControlError  # noqa: E402

# Default tolerances of the check (score, box px) per sampling method: the
# exported graph computes the same function, so only float noise differs;
# discrete sampling rounds to pixel centres, where float noise can flip a
# sample to the neighbouring pixel.
DEFAULT_TOLERANCES = {'grid_sample': (5e-4, 0.05), 'discrete': (5e-3, 2.0)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export RT-DETRv2 to ONNX (boxes, scores, labels) and check it '
        'against PyTorch with onnxruntime')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (mmdet format)')
    parser.add_argument('--out', help='output .onnx file (default: the checkpoint path '
                        'with the sampling method and .onnx)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, choices=SUPPORTED_OPSETS,
                        help='ONNX opset (TensorRT parses 16-18)')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='network input size, multiples of 32 (default: the size of '
                        "the config's test pipeline, after its image_size)")
    parser.add_argument('--sampling', choices=sorted(SAMPLING_METHODS), default='grid_sample',
                        help='deformable-attention sampling: grid_sample (bilinear, '
                        'GridSample op) or discrete (nearest pixel, Gather only)')
    parser.add_argument('--batch', type=int, default=1, help='batch size of the export '
                        'example (the fixed batch unless --dynamic-batch)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='make the batch axis dynamic')
    parser.add_argument('--no-orig-target-sizes', action='store_true',
                        help='no orig_target_sizes input: boxes in pixels of H x W')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the onnxruntime check against PyTorch')
    parser.add_argument('--score-tol', type=float, help='largest allowed score '
                        'difference (default 5e-4; 5e-3 with --sampling discrete)')
    parser.add_argument('--box-tol', type=float, help='largest allowed box difference '
                        'in pixels (default 0.05; 2.0 with --sampling discrete)')
    parser.add_argument('--score-thr', type=float, metavar='T',
                        help='keep detections scoring above T in the graph '
                        '(model.test_cfg.score_thr; default: the config\'s, none)')
    parser.add_argument('--nms-iou', type=float, metavar='IOU',
                        help='NMS after the top-K in the graph, removing a box that '
                        'overlaps a higher-scoring one of its class by IoU > IOU '
                        '(model.test_cfg.nms; default: the config\'s, none)')
    parser.add_argument('--nms-class-agnostic', action='store_true',
                        help='NMS across classes (model.test_cfg.nms.class_agnostic)')
    return parser.parse_args(argv)


def duplicate_cfg_options(args) -> dict:
    """``cfg_options`` for the --score-thr / --nms-iou / --nms-class-agnostic
    flags given (checked with the config by ``build_detector``)."""
    options = {}
    if args.score_thr is not None:
        options['model.test_cfg.score_thr'] = args.score_thr
    if args.nms_iou is not None:
        options['model.test_cfg.nms'] = dict(type='nms', iou_threshold=args.nms_iou,
                                             class_agnostic=args.nms_class_agnostic)
    elif args.nms_class_agnostic:  # the config's NMS, across classes (or an
        # error naming model.test_cfg.nms.iou_threshold when it has none)
        options['model.test_cfg.nms.class_agnostic'] = True
    return options


def main(argv=None) -> int:
    args = parse_args(argv)
    input_size = (check_image_size(tuple(args.image_size), key='--image-size')
                  if args.image_size else config_input_size(args.config))
    out = args.out or osp.splitext(osp.normpath(args.checkpoint))[0] + f'_{args.sampling}.onnx'
    try:
        model = build_detector(args.config, args.checkpoint, args.sampling,
                               cfg_options=duplicate_cfg_options(args))
    except (CheckpointMismatchError, IsADirectoryError, DuplicateControlError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    fused = fuse_for_deploy(model)
    export_onnx(fused, out, input_size, opset=args.opset, batch=args.batch,
                dynamic_batch=args.dynamic_batch,
                with_orig_target_sizes=not args.no_orig_target_sizes)
    print(f'exported {out} (opset {args.opset}, {args.sampling} sampling, input '
          f'{input_size[0]}x{input_size[1]}, batch '
          f'{"dynamic" if args.dynamic_batch else args.batch}, RepVGG and BN fused, '
          f'{_filters_text(model.bbox_head.test_cfg)})')
    if args.no_check:
        return 0

    score_tol, box_tol = DEFAULT_TOLERANCES[args.sampling]
    score_tol = args.score_tol if args.score_tol is not None else score_tol
    box_tol = args.box_tol if args.box_tol is not None else box_tol
    # A dynamic file is also checked at another batch size than the traced one.
    batches = [args.batch, args.batch + 1] if args.dynamic_batch else [args.batch]
    test_cfg = model.bbox_head.test_cfg
    filters = test_cfg.get('score_thr') is not None or test_cfg.get('nms') is not None
    failed = False
    for batch in batches:
        diffs = verify_onnx(out, model, input_size, batch=batch)
        # with a score threshold the check images (random shapes) may keep
        # nothing: then only the counts (0 on both sides) are compared
        ok = ((diffs['matched'] > 0 or filters) and diffs['max_score_diff'] <= score_tol
              and diffs['max_box_diff'] <= box_tol)
        failed |= not ok
        print(f'onnxruntime vs PyTorch (unfused), batch {batch}: '
              f'max score diff {diffs["max_score_diff"]:.3g} (tol {score_tol:g}), '
              f'max box diff {diffs["max_box_diff"]:.3g} px (tol {box_tol:g}), '
              f'{diffs["matched"]} detections matched, '
              f'{diffs["count_mismatches"]} count mismatches: {"OK" if ok else "FAILED"}')
    return 1 if failed else 0


def _filters_text(test_cfg: dict) -> str:
    """'score_thr 0.3, class-aware NMS at IoU 0.7' or 'no score threshold, no NMS'."""
    score_thr, nms = test_cfg.get('score_thr'), test_cfg.get('nms')
    parts = ['no score threshold' if score_thr is None else f'score_thr {score_thr:g}']
    if nms is None:
        parts.append('no NMS')
    else:
        kind = 'class-agnostic' if nms.get('class_agnostic', False) else 'class-aware'
        parts.append(f'{kind} NMS at IoU {nms["iou_threshold"]:g}; outputs padded, '
                     'num_dets per image')
    if nms is None and score_thr is not None:
        parts[-1] += '; outputs padded, num_dets per image'
    return ', '.join(parts)


if __name__ == '__main__':
    sys.exit(main())
