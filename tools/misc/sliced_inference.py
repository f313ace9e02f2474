"""How do we find small objects in a 4000-pixel image? Sliced inference.

    python tools/misc/sliced_inference.py CONFIG CHECKPOINT IMAGES
        [--patch-size 640] [--overlap 0.25] [--batch-size 1]
        [--full-image | --no-full-image] [--nms-iou 0.5] [--score-thr 0.0]
        [--draw-thr 0.3] [--edge-margin 2] [--out-dir outputs/sliced]
        [--device cpu] [--cfg-options K=V ...]

IMAGES is an image file, a folder (its images, recursively) or a quoted glob
pattern ('data/*.tif'). Each image is cut into patch-size squares that
overlap by the given share (the last row and column end on the image edge);
every patch goes through the model's own test pipeline (resized to its input
size, so small objects keep their pixels), in batches of --batch-size; the
boxes are shifted back to the image, a full-image pass (the whole image
downscaled by the same pipeline; --no-full-image skips it) adds the objects
larger than a patch, and class-wise NMS at --nms-iou merges everything.

Writes to --out-dir: ``predictions.json`` (COCO-style results of every
image: ``file_name`` relative to IMAGES, ``category_id`` = class index + 1
in the checkpoint's (else the config's) classes, ``category_name``,
``bbox`` [x, y, w, h] pixels, ``score``) and ``vis/<file_name>`` (the image
with its boxes of score above --draw-thr, mmdet's DetLocalVisualizer).

The function behind it: ``rtdetr_mm.apis.sliced_inference``. Exit status 1
with ``error: ...`` on stderr when an input is wrong (an option out of
range, a missing file, an image that does not decode, a checkpoint that does
not fit the config).
"""
import argparse
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from rtdetr_mm.apis import SlicedInferenceError, run_sliced_inference  # noqa: E402
from rtdetr_mm.engine.cli import USER_ERRORS  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file of the model')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('images', help='an image file, a folder or a quoted glob pattern')
    parser.add_argument('--patch-size', type=int, default=640,
                        help='side of the square patches, in image pixels (default 640, '
                        'at least 32)')
    parser.add_argument('--overlap', type=float, default=0.25,
                        help='share of a patch that its neighbour covers too, in [0, 1) '
                        '(default 0.25); objects up to overlap x patch-size pixels are whole '
                        'in some patch')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='patches per forward pass (default 1)')
    parser.add_argument('--full-image', action=argparse.BooleanOptionalAction, default=True,
                        help='also detect on the whole (downscaled) image, for objects larger '
                        'than the overlap (default: on)')
    parser.add_argument('--nms-iou', type=float, default=0.5,
                        help='boxes of one class overlapping more are merged (default 0.5)')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='predictions under this score are dropped before the merge and '
                        'left out of the json (default 0: all)')
    parser.add_argument('--draw-thr', type=float, default=0.3,
                        help='boxes drawn on the images score above this (default 0.3)')
    parser.add_argument('--edge-margin', type=float, default=2.0,
                        help='a patch box within this many pixels of a cut edge, whose far side '
                        'the neighbouring patch also covers, is a truncated copy and dropped '
                        '(default 2)')
    parser.add_argument('--out-dir', default=osp.join('outputs', 'sliced'),
                        help='where predictions.json and vis/ go (default outputs/sliced)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda:0, ... (default: cuda:0 when available, else cpu)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value as in tools/test.py')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    return run_sliced_inference(
        args.config, args.checkpoint, args.images, args.out_dir, patch_size=args.patch_size,
        overlap=args.overlap, batch_size=args.batch_size, full_image=args.full_image,
        nms_iou=args.nms_iou, score_thr=args.score_thr, draw_thr=args.draw_thr,
        edge_margin=args.edge_margin, device=args.device, cfg_options=args.cfg_options)


def main(argv=None) -> int:
    """0, or 1 after an error in the user's input (printed as ``error: ...``)."""
    args = parse_args(argv)
    try:
        run(args)
    except (SlicedInferenceError, ) + USER_ERRORS as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
