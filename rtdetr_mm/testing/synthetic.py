"""A small, deterministic detection dataset drawn with numpy + OpenCV.

``make_synthetic_coco`` writes a COCO-format detection dataset of coloured
shapes on cluttered backgrounds, with no download:

    out_dir/
      annotations/instances_train.json, instances_val.json
      images/train/train_000000.png ...
      images/val/val_000000.png ...
      manifest.json        # generator version, parameters, sha256 of every file

What makes it a (small) detection problem rather than a colour lookup:

* every class has its own base hue, but the hue is jittered and one object in
  five gets a random colour, so the shape has to be recognised;
* object sizes are log-uniform from 8 px to 40% of the shorter image side,
  so there are many small objects and a few large ones;
* backgrounds are a smooth colour field plus, at random, stripe textures,
  soft blobs, thin lines and arcs, and pixel noise;
* objects overlap and are cut by the image border, but a placement is
  rejected if it would hide more than half of an earlier object or change
  its tight box; some images have no object at all.

Boxes are COCO ``[x, y, w, h]`` in pixels, tight on the drawn pixels
(pixel ``i`` covers ``[i, i + 1)``, so a shape covering columns 3..10 has
``x = 3, w = 8``). ``area`` is the visible pixel count of the shape, as COCO
uses the mask area. Category ids are ``1..C`` in the order of ``classes``.

The same arguments give byte-identical files (every image has its own random
stream, seeded by ``(seed, split, index)``; PNG encoding is lossless and
deterministic). ``manifest.json`` stores the parameters and hashes so that an
existing dataset is reused instead of regenerated.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

GENERATOR_VERSION = 2

#: Default classes of :func:`make_synthetic_coco`.
DEFAULT_CLASSES = ('circle', 'square', 'triangle', 'ring', 'cross')
#: Every shape the generator can draw (``disk`` is an alias of ``circle``).
KNOWN_SHAPES = ('circle', 'disk', 'square', 'triangle', 'ring', 'cross', 'diamond')
#: The 4 classes of the first demo dataset (kept for ``make_shapes_dataset``).
SHAPES_CLASSES = ('square', 'disk', 'triangle', 'ring')

MIN_OBJECT_SIZE = 8          # px, smallest object side
MAX_OBJECT_FRACTION = 0.4    # largest object side / shorter image side
RANDOM_COLOUR_PROB = 0.2     # objects with a colour unrelated to their class
MIN_VISIBLE_FRACTION = 0.5   # of an object's pixels that must stay visible
PLACEMENT_TRIALS = 20

ImageSize = Union[int, Tuple[int, int], Tuple[Tuple[int, int], Tuple[int, int]]]


# --------------------------------------------------------------------------
# Shapes: each drawer returns a boolean mask of its own (size x size) patch.
# --------------------------------------------------------------------------
def _polygon(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _rotate(points: np.ndarray, angle: float, size: int) -> np.ndarray:
    """Rotate (N, 2) xy points about the patch centre by ``angle`` radians."""
    c = (size - 1) / 2.0
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (points - c) @ rot.T + c


def _circle(size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    c = (size - 1) // 2
    cv2.circle(mask, (c, c), max(c, 2), 1, -1, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _ring(size: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    c = (size - 1) // 2
    thickness = max(2, int(round(size * rng.uniform(0.1, 0.22))))
    radius = max(c - thickness // 2, 2)
    cv2.circle(mask, (c, c), radius, 1, thickness, lineType=cv2.LINE_8)
    return mask.astype(bool)


def _square(size: int, rng: np.random.Generator) -> np.ndarray:
    # Up to 15 degrees of rotation keeps it distinct from the diamond.
    half = (size - 1) / 2.0 / np.sqrt(2) / np.cos(np.pi / 4 - np.deg2rad(15))
    c = (size - 1) / 2.0
    pts = np.array([[c - half, c - half], [c + half, c - half],
                    [c + half, c + half], [c - half, c + half]])
    return _polygon(_rotate(pts, np.deg2rad(rng.uniform(-15, 15)), size), size)


def _diamond(size: int, rng: np.random.Generator) -> np.ndarray:
    c = (size - 1) / 2.0
    squash = rng.uniform(0.6, 1.0)
    pts = np.array([[c, 0], [c + c * squash, c], [c, 2 * c], [c - c * squash, c]])
    return _polygon(pts, size)


def _triangle(size: int, rng: np.random.Generator) -> np.ndarray:
    c = (size - 1) / 2.0
    start = rng.uniform(0, 2 * np.pi)
    angles = start + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.2, 0.2, 3)
    radius = c * rng.uniform(0.85, 1.0, 3)
    pts = np.stack([c + radius * np.cos(angles), c + radius * np.sin(angles)], 1)
    return _polygon(pts, size)


def _cross(size: int, rng: np.random.Generator) -> np.ndarray:
    c = (size - 1) / 2.0
    arm = max(1.0, c * rng.uniform(0.22, 0.38))  # half the arm width
    a, b = c - arm, c + arm
    e = c / np.cos(np.deg2rad(20))  # arm length so that 20 deg fits the patch
    lo, hi = c - e * 0.98, c + e * 0.98
    pts = np.array([[a, lo], [b, lo], [b, a], [hi, a], [hi, b], [b, b],
                    [b, hi], [a, hi], [a, b], [lo, b], [lo, a], [a, a]])
    pts = np.clip(_rotate(pts, np.deg2rad(rng.uniform(-20, 20)), size), 0, size - 1)
    return _polygon(pts, size)


_DRAWERS = dict(circle=_circle, disk=_circle, square=_square, triangle=_triangle,
                ring=_ring, cross=_cross, diamond=_diamond)


# --------------------------------------------------------------------------
# Rendering one image
# --------------------------------------------------------------------------
def _hsv_to_bgr(h: float, s: float, v: float) -> Tuple[int, int, int]:
    """OpenCV HSV (h in [0, 180), s and v in [0, 255]) -> BGR ints."""
    px = np.array([[[h % 180, s, v]]], np.float32).round().astype(np.uint8)
    return tuple(int(x) for x in cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0])


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered (h, w, 3) uint8 BGR background."""
    # Smooth colour field from a coarse random grid, half-way to grey so the
    # background is less saturated than most objects (but not all).
    grid = rng.uniform(30, 220, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3))
    grid = 0.5 * grid + 0.5 * grid.mean(-1, keepdims=True)
    img = cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(0, 3))):  # stripe textures
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
        phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
        amp = rng.uniform(3, 18, 3).astype(np.float32)
        img += np.sin(phase + rng.uniform(0, 2 * np.pi))[..., None] * amp
    for _ in range(int(rng.integers(0, 4))):  # soft blobs (blurred ellipses)
        blob = np.zeros((h, w), np.float32)
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(4, max(5, w // 4))), int(rng.integers(4, max(5, h // 4))))
        cv2.ellipse(blob, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), sigmaX=float(rng.uniform(3, 8)))
        img += blob[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
    img += rng.normal(0, rng.uniform(2, 10), (h, w, 3)).astype(np.float32)
    img = img.clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 9))):  # thin lines and arcs
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        thickness = int(rng.integers(1, 3))
        if rng.random() < 0.7:
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, colour, thickness, lineType=cv2.LINE_8)
        else:
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(5, max(6, w // 3))), int(rng.integers(5, max(6, h // 3))))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(30, 200)), colour, thickness)
    return img


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """Tight (x0, y0, x1, y1) of a boolean mask, x1/y1 inclusive."""
    ys = np.flatnonzero(mask.any(1))
    xs = np.flatnonzero(mask.any(0))
    return int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])


def render_image(h: int, w: int, classes: Sequence[str], num_objects: int,
                 rng: np.random.Generator) -> Tuple[np.ndarray, List[dict]]:
    """Draw one (h, w, 3) uint8 BGR image with up to ``num_objects`` objects.

    Returns:
        tuple: the image and one dict per placed object with ``label``
        (0-based class index), ``colour`` (BGR), ``visible`` (bool (h, w)
        mask of its pixels left visible in the image) and ``bbox`` (COCO
        ``[x, y, w, h]`` pixels, tight on ``visible``).
    """
    img = _background(h, w, rng)
    objects: List[dict] = []
    max_size = max(MIN_OBJECT_SIZE, int(MAX_OBJECT_FRACTION * min(h, w)))
    for _ in range(num_objects):
        label = int(rng.integers(0, len(classes)))
        size = int(round(np.exp(rng.uniform(np.log(MIN_OBJECT_SIZE), np.log(max_size + 1)))))
        size = int(np.clip(size, MIN_OBJECT_SIZE, max_size))
        patch = _DRAWERS[classes[label]](size, rng)
        full_area = int(patch.sum())
        if rng.random() < RANDOM_COLOUR_PROB:
            colour = _hsv_to_bgr(rng.uniform(0, 180), rng.uniform(60, 255), rng.uniform(90, 255))
        else:
            hue = 180.0 * label / len(classes) + rng.uniform(-0.3, 0.3) * 180.0 / len(classes)
            colour = _hsv_to_bgr(hue, rng.uniform(140, 255), rng.uniform(130, 255))
        for _ in range(PLACEMENT_TRIALS):
            # Up to a quarter of the patch may leave the image.
            x = int(rng.integers(-size // 4, w - size + size // 4 + 1))
            y = int(rng.integers(-size // 4, h - size + size // 4 + 1))
            mask = np.zeros((h, w), bool)
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + size, w), min(y + size, h)
            mask[y0:y1, x0:x1] = patch[y0 - y:y1 - y, x0 - x:x1 - x]
            if mask.sum() < MIN_VISIBLE_FRACTION * full_area or mask.sum() < 4:
                continue
            ok = True
            for obj in objects:  # the new shape may hide part of earlier ones
                left = obj['visible'] & ~mask
                if (left.sum() < MIN_VISIBLE_FRACTION * obj['full_area']
                        or _bbox(left) != _bbox(obj['visible'])):
                    ok = False
                    break
            if not ok:
                continue
            for obj in objects:
                obj['visible'] &= ~mask
            img[mask] = colour
            objects.append(dict(label=label, colour=colour, visible=mask, full_area=full_area))
            break
    for obj in objects:
        bx0, by0, bx1, by1 = _bbox(obj['visible'])
        obj['bbox'] = [bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1]
    return img, objects


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------
def _size_ranges(image_size: ImageSize) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Normalise ``image_size`` to ((h_min, h_max), (w_min, w_max))."""
    if isinstance(image_size, (int, np.integer)):
        return (int(image_size),) * 2, (int(image_size),) * 2
    h, w = image_size
    h = (int(h), int(h)) if isinstance(h, (int, np.integer)) else (int(h[0]), int(h[1]))
    w = (int(w), int(w)) if isinstance(w, (int, np.integer)) else (int(w[0]), int(w[1]))
    if min(h + w) < 2 * MIN_OBJECT_SIZE or h[0] > h[1] or w[0] > w[1]:
        raise ValueError(f'bad image_size {image_size!r}: need sides >= {2 * MIN_OBJECT_SIZE} '
                         'and (min, max) ranges')
    return h, w


def _paths(out_dir: str) -> Dict[str, str]:
    return dict(data_root=out_dir,
                train_ann=osp.join(out_dir, 'annotations', 'instances_train.json'),
                val_ann=osp.join(out_dir, 'annotations', 'instances_val.json'),
                train_img_dir=osp.join(out_dir, 'images', 'train'),
                val_img_dir=osp.join(out_dir, 'images', 'val'),
                manifest=osp.join(out_dir, 'manifest.json'))


def synthetic_params(num_train: int = 400, num_val: int = 100,
                     image_size: ImageSize = ((256, 320), (256, 320)),
                     classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                     min_objects: int = 0, max_objects: int = 8,
                     img_ext: str = '.png') -> dict:
    """The normalised generator parameters stored in ``manifest.json``."""
    hr, wr = _size_ranges(image_size)
    unknown = [c for c in classes if c not in _DRAWERS]
    if unknown or not classes:
        raise ValueError(f'unknown shape classes {unknown}; known: {KNOWN_SHAPES}')
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f'need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}')
    if img_ext not in ('.png', '.jpg'):
        raise ValueError(f"img_ext must be '.png' or '.jpg', got {img_ext!r}")
    return dict(version=GENERATOR_VERSION, num_train=int(num_train), num_val=int(num_val),
                image_size=[list(hr), list(wr)], classes=list(classes), seed=int(seed),
                min_objects=int(min_objects), max_objects=int(max_objects), img_ext=img_ext)


SPLITS = ('train', 'val')


def render_dataset_image(params: dict, split: str, index: int
                         ) -> Tuple[np.ndarray, List[dict]]:
    """Render image ``index`` of ``split`` exactly as the dataset made with
    ``params`` (from :func:`synthetic_params`) holds it.

    Returns:
        tuple: (h, w, 3) uint8 BGR image and its objects (see
        :func:`render_image`).
    """
    rng = np.random.default_rng([params['seed'], SPLITS.index(split), index])
    (h_lo, h_hi), (w_lo, w_hi) = params['image_size']
    h, w = int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))
    num_objects = int(rng.integers(params['min_objects'], params['max_objects'] + 1))
    return render_image(h, w, params['classes'], num_objects, rng)


def dataset_is_current(out_dir: str, params: dict) -> bool:
    """True when ``out_dir`` holds a complete dataset made with ``params``."""
    paths = _paths(out_dir)
    if not osp.isfile(paths['manifest']):
        return False
    try:
        with open(paths['manifest']) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get('params') != params:
        return False
    return all(osp.isfile(osp.join(out_dir, rel)) for rel in manifest.get('files', {}))


def make_synthetic_coco(out_dir: str, num_train: int = 400, num_val: int = 100,
                        image_size: ImageSize = ((256, 320), (256, 320)),
                        classes: Sequence[str] = DEFAULT_CLASSES, seed: int = 0,
                        min_objects: int = 0, max_objects: int = 8,
                        img_ext: str = '.png', overwrite: bool = False) -> Dict[str, str]:
    """Write a COCO-format train/val dataset of shapes (see the module doc).

    Args:
        out_dir (str): Output folder (created).
        num_train (int): Training images.
        num_val (int): Validation images.
        image_size (int | tuple): ``(h, w)`` for a fixed size, an int for a
            square, or ``((h_min, h_max), (w_min, w_max))`` to draw each
            image's height and width uniformly (inclusive).
        classes (Sequence[str]): Shape names, category ids ``1..C`` in this
            order; any of ``KNOWN_SHAPES``.
        seed (int): Base seed; image ``i`` of a split has its own stream
            seeded by ``(seed, split, i)``, so changing ``num_val`` does not
            change the training images.
        min_objects (int): Fewest objects drawn per image (0 allows images
            without objects).
        max_objects (int): Most objects per image (a placement that would
            hide too much of earlier objects is dropped, so fewer can appear).
        img_ext (str): ``'.png'`` (lossless, default) or ``'.jpg'``.
        overwrite (bool): Regenerate even if ``manifest.json`` says the
            dataset in ``out_dir`` was made with the same parameters.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann``, ``train_img_dir``,
        ``val_img_dir``, ``manifest`` (paths).
    """
    params = synthetic_params(num_train, num_val, image_size, classes, seed, min_objects,
                              max_objects, img_ext)
    paths = _paths(out_dir)
    if not overwrite and dataset_is_current(out_dir, params):
        return paths
    if osp.exists(paths['manifest']):
        os.remove(paths['manifest'])  # incomplete until rewritten at the end
    os.makedirs(osp.dirname(paths['train_ann']), exist_ok=True)
    categories = [dict(id=k + 1, name=c, supercategory='shape') for k, c in enumerate(classes)]
    encode_args = [cv2.IMWRITE_JPEG_QUALITY, 95] if img_ext == '.jpg' else []
    files: Dict[str, str] = {}
    for split, count in (('train', num_train), ('val', num_val)):
        img_dir = paths[f'{split}_img_dir']
        os.makedirs(img_dir, exist_ok=True)
        for name in os.listdir(img_dir):  # drop images of an earlier, larger run
            if name.startswith(split + '_') and name.endswith(('.png', '.jpg')):
                os.remove(osp.join(img_dir, name))
        images, annotations = [], []
        for i in range(count):
            img, objects = render_dataset_image(params, split, i)
            h, w = img.shape[:2]
            name = f'{split}_{i:06d}{img_ext}'
            ok, buf = cv2.imencode(img_ext, img, encode_args)
            if not ok:
                raise RuntimeError(f'cv2.imencode failed for {name}')
            data = buf.tobytes()
            with open(osp.join(img_dir, name), 'wb') as f:
                f.write(data)
            files[f'images/{split}/{name}'] = hashlib.sha256(data).hexdigest()
            images.append(dict(id=i + 1, file_name=name, height=h, width=w))
            for obj in objects:
                annotations.append(dict(id=len(annotations) + 1, image_id=i + 1,
                                        category_id=obj['label'] + 1, bbox=obj['bbox'],
                                        area=float(obj['visible'].sum()), iscrowd=0))
        coco = dict(info=dict(description='rtdetr_mm synthetic shapes', version=GENERATOR_VERSION,
                              params=params),
                    licenses=[], images=images, annotations=annotations, categories=categories)
        data = json.dumps(coco).encode()
        with open(paths[f'{split}_ann'], 'wb') as f:
            f.write(data)
        files[f'annotations/instances_{split}.json'] = hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    tmp = paths['manifest'] + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(dict(generator='rtdetr_mm.testing.synthetic', params=params,
                       dataset_sha256=digest, files=files), f, indent=1, sort_keys=True)
    os.replace(tmp, paths['manifest'])
    return paths


def make_shapes_dataset(out_dir: str, num_train: int = 240, num_val: int = 60,
                        image_size: ImageSize = (256, 256),
                        classes: Sequence[str] = SHAPES_CLASSES, max_objects: int = 6,
                        seed: int = 0, min_objects: int = 0,
                        img_ext: Optional[str] = '.png') -> Dict[str, str]:
    """:func:`make_synthetic_coco` with the first demo's defaults (4 classes,
    240/60 images of 256x256); kept for ``tools/demo.py``."""
    return make_synthetic_coco(out_dir, num_train=num_train, num_val=num_val,
                               image_size=image_size, classes=classes, seed=seed,
                               min_objects=min_objects, max_objects=max_objects,
                               img_ext=img_ext)
