"""Generate the synthetic shapes dataset (COCO format, no download).

    python tools/misc/make_demo_data.py                      # data/shapes, 400/100 images
    python tools/misc/make_demo_data.py --out data/tiny --num-train 16 --num-val 8 \\
        --min-size 96 --max-size 128

Nothing is written when ``<out>/manifest.json`` records the same generator
version and parameters (and its files exist); ``--force`` regenerates.
The output is byte-identical for the same arguments (``--check`` verifies
the stored sha256 of every file).
"""
import argparse
import hashlib
import json
import os.path as osp
import sys
import time
from collections import Counter

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

# Imported directly (not through `rtdetr_mm`) so that making data needs only
# numpy and OpenCV.
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    'rtdetr_mm_synthetic', osp.join(ROOT, 'rtdetr_mm', 'testing', 'synthetic.py'))
synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=osp.join(ROOT, 'data', 'shapes'),
                        help='output folder (default: data/shapes)')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--min-size', type=int, default=256,
                        help='smallest image height/width in px (default 256)')
    parser.add_argument('--max-size', type=int, default=320,
                        help='largest image height/width in px (default 320)')
    parser.add_argument('--classes', nargs='+', default=list(synthetic.DEFAULT_CLASSES),
                        choices=synthetic.KNOWN_SHAPES, help='shape classes, ids 1..C in order')
    parser.add_argument('--min-objects', type=int, default=0)
    parser.add_argument('--max-objects', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--ext', default='.png', choices=('.png', '.jpg'))
    parser.add_argument('--force', action='store_true', help='regenerate even if up to date')
    parser.add_argument('--check', action='store_true',
                        help='verify the sha256 of every file against the manifest')
    return parser.parse_args(argv)


def verify(out_dir: str) -> int:
    """Number of files whose sha256 differs from the manifest (or are missing)."""
    with open(osp.join(out_dir, 'manifest.json')) as f:
        manifest = json.load(f)
    bad = 0
    for rel, digest in manifest['files'].items():
        path = osp.join(out_dir, rel)
        if not osp.isfile(path):
            bad += 1
            continue
        with open(path, 'rb') as f:
            bad += hashlib.sha256(f.read()).hexdigest() != digest
    return bad


def main(argv=None) -> int:
    args = parse_args(argv)
    size = ((args.min_size, args.max_size), (args.min_size, args.max_size))
    kwargs = dict(num_train=args.num_train, num_val=args.num_val, image_size=size,
                  classes=args.classes, seed=args.seed, min_objects=args.min_objects,
                  max_objects=args.max_objects, img_ext=args.ext)
    params = synthetic.synthetic_params(**kwargs)
    if not args.force and synthetic.dataset_is_current(args.out, params):
        print(f'{args.out}: up to date (manifest matches), nothing written')
    else:
        t0 = time.time()
        synthetic.make_synthetic_coco(args.out, overwrite=True, **kwargs)
        print(f'{args.out}: generated in {time.time() - t0:.1f} s')
    for split in ('train', 'val'):
        with open(osp.join(args.out, 'annotations', f'instances_{split}.json')) as f:
            coco = json.load(f)
        per_class = Counter(a['category_id'] for a in coco['annotations'])
        with_objects = {a['image_id'] for a in coco['annotations']}
        names = {c['id']: c['name'] for c in coco['categories']}
        print(f'  {split}: {len(coco["images"])} images '
              f'({len(coco["images"]) - len(with_objects)} without objects), '
              f'{len(coco["annotations"])} objects: '
              + ', '.join(f'{names[k]} {per_class[k]}' for k in sorted(names)))
    with open(osp.join(args.out, 'manifest.json')) as f:
        print(f'  dataset sha256 {json.load(f)["dataset_sha256"]}')
    if args.check:
        bad = verify(args.out)
        print(f'  check: {"OK" if not bad else f"{bad} files differ from the manifest"}')
        return 1 if bad else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
