"""A small, deterministic detection dataset drawn on the fly (no download)."""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np

SHAPES_CLASSES = ('square', 'disk', 'triangle', 'ring')
GENERATOR_VERSION = 1


def _draw(img: np.ndarray, cls: int, x: int, y: int, s: int, colour) -> Tuple[int, int, int, int]:
    """Draw one object with top-left (x, y) and size s; return its tight xyxy box."""
    if cls == 0:
        cv2.rectangle(img, (x, y), (x + s - 1, y + s - 1), colour, -1)
    elif cls == 1:
        cv2.circle(img, (x + s // 2, y + s // 2), s // 2, colour, -1)
    elif cls == 2:
        pts = np.array([[x + s // 2, y], [x, y + s - 1], [x + s - 1, y + s - 1]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    else:
        cv2.circle(img, (x + s // 2, y + s // 2), s // 2, colour, max(2, s // 6))
    mask = np.zeros(img.shape[:2], np.uint8)
    # Recompute the tight box from the drawn footprint.
    if cls == 0:
        cv2.rectangle(mask, (x, y), (x + s - 1, y + s - 1), 1, -1)
    elif cls in (1, 3):
        cv2.circle(mask, (x + s // 2, y + s // 2), s // 2, 1, -1 if cls == 1 else max(2, s // 6))
    else:
        cv2.fillPoly(mask, [pts], 1)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def make_shapes_dataset(out_dir: str, num_train: int = 240, num_val: int = 60,
                        image_size: Tuple[int, int] = (256, 256),
                        classes: Sequence[str] = SHAPES_CLASSES, max_objects: int = 6,
                        seed: int = 0) -> Dict[str, str]:
    """Write COCO-format train/val splits of coloured shapes on cluttered
    backgrounds: sizes from 10 px to 40% of the image, overlaps, distractor
    lines and noise, and ~10% of images without objects. Byte-identical for
    the same arguments; an existing dataset with the same manifest is reused.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann`` (paths).
    """
    params = dict(num_train=num_train, num_val=num_val, image_size=list(image_size),
                  classes=list(classes), max_objects=max_objects, seed=seed,
                  version=GENERATOR_VERSION)
    manifest = osp.join(out_dir, 'manifest.json')
    paths = dict(data_root=out_dir,
                 train_ann=osp.join(out_dir, 'annotations', 'instances_train.json'),
                 val_ann=osp.join(out_dir, 'annotations', 'instances_val.json'))
    if osp.isfile(manifest):
        with open(manifest) as f:
            if json.load(f).get('params') == params:
                return paths
    rng = np.random.default_rng(seed)
    h, w = image_size
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    digest = hashlib.sha256()
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = osp.join(out_dir, 'images', split)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img = (rng.normal(90, 25, (h, w, 3))).clip(0, 255).astype(np.uint8)
            for _ in range(int(rng.integers(2, 6))):  # clutter
                p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
                p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
                cv2.line(img, p0, p1, tuple(int(c) for c in rng.integers(40, 200, 3)), 1)
            n = 0 if rng.random() < 0.1 else int(rng.integers(1, max_objects + 1))
            for _ in range(n):
                cls = int(rng.integers(0, len(classes)))
                s = int(rng.integers(10, int(0.4 * min(h, w))))
                x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                base = np.array([[220, 60, 60], [60, 220, 60], [60, 60, 220], [220, 220, 60]])
                colour = tuple(int(c) for c in (base[cls % 4] + rng.integers(-40, 40, 3)).clip(0, 255))
                x0, y0, x1, y1 = _draw(img, cls, x, y, s, colour)
                annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                        category_id=cls + 1,
                                        bbox=[x0, y0, x1 - x0, y1 - y0],
                                        area=float((x1 - x0) * (y1 - y0)), iscrowd=0))
            name = f'{split}_{i:05d}.png'
            ok, buf = cv2.imencode('.png', img)
            digest.update(buf.tobytes())
            with open(osp.join(img_dir, name), 'wb') as f:
                f.write(buf.tobytes())
            images.append(dict(id=i + 1, file_name=name, height=h, width=w))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=k + 1, name=c) for k, c in enumerate(classes)])
        with open(paths[f'{split}_ann'], 'w') as f:
            json.dump(coco, f)
    with open(manifest, 'w') as f:
        json.dump(dict(params=params, images_sha256=digest.hexdigest()), f, indent=1)
    return paths
