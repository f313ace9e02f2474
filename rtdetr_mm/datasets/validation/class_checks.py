"""Checks of the classes: ``metainfo.classes`` as configured, against the
categories of a COCO json (mmdet matches them by name) and against the
head's ``num_classes``."""
from collections import Counter
from typing import Any, Dict, Optional, Tuple

from .report import MAX_EXAMPLES, ModelFacts, ValidationReport


def _normalise_name(name: str) -> str:
    return ''.join(ch for ch in str(name).lower() if ch.isalnum())


def check_classes_value(classes: Any, report: ValidationReport,
                        key: str = 'metainfo.classes') -> Optional[Tuple[str, ...]]:
    """Check that ``classes`` is a non-empty tuple/list of distinct names.

    Returns:
        tuple[str] | None: The names, or ``None`` after adding an error.
    """
    if isinstance(classes, str):
        names = tuple(s.strip() for s in classes.split(',') if s.strip()) or (classes,)
        report.add('error', 'classes_is_string',
                   f'{key} is the string {classes!r}, not a tuple of class names: write '
                   f'{key}={names!r} (a one-element tuple needs the trailing comma)')
        return None
    if classes is None:
        report.add('error', 'classes_missing', f'{key} is not set')
        return None
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        report.add('error', 'classes_not_names',
                   f'{key} must be a tuple of class-name strings, got {classes!r}')
        return None
    if not classes:
        report.add('error', 'classes_empty', f'{key} is empty')
        return None
    dup = sorted(n for n, c in Counter(classes).items() if c > 1)
    if dup:
        report.add('error', 'classes_duplicate', f'{key} lists {dup} more than once')
        return None
    return tuple(classes)


def check_categories(coco: dict, classes: Tuple[str, ...], source: str,
                     report: ValidationReport, key: str = 'metainfo.classes',
                     allow_extra_categories: bool = False) -> Dict[int, int]:
    """Compare the json's categories with ``classes``.

    mmdet's ``CocoDataset`` keeps the categories whose *name* is in
    ``classes`` and gives label ``i`` to the ``i``-th of them in json order,
    so ids may be 1-based or have gaps, but every class must appear exactly
    once by name.

    Returns:
        dict[int, int]: category id -> label, as mmdet builds it.
    """
    cats = [c for c in coco.get('categories', []) if isinstance(c, dict)]
    bad = [c for c in coco.get('categories', []) if not isinstance(c, dict)
           or 'id' not in c or 'name' not in c]
    if bad:
        report.add('error', 'malformed_category',
                   f'{len(bad)} categories in {source!r} lack "id" or "name": {bad[:MAX_EXAMPLES]}',
                   len(bad))
    cats = [c for c in cats if 'id' in c and 'name' in c]
    dup_ids = sorted(i for i, n in Counter(c['id'] for c in cats).items() if n > 1)
    if dup_ids:
        report.add('error', 'duplicate_category_id',
                   f'category ids {dup_ids} appear more than once in {source!r}')
    dup_names = sorted(n for n, k in Counter(c['name'] for c in cats).items() if k > 1)
    if dup_names:
        report.add('error', 'duplicate_category_name',
                   f'category names {dup_names} appear more than once in {source!r} '
                   '(mmdet would give one class several labels, past num_classes)')
    json_names = [c['name'] for c in cats]
    missing = [n for n in classes if n not in json_names]
    extra = [n for n in json_names if n not in classes]
    if missing:
        hints = []
        for n in missing:
            near = [j for j in extra if _normalise_name(j) == _normalise_name(n)]
            if near:
                hints.append(f'{n!r} vs json {near[0]!r}')
        hint = f' (spelling differs: {", ".join(hints)})' if hints else ''
        report.add('error', 'class_name_mismatch',
                   f'{key} names missing from the categories of {source!r}: {missing}{hint}; '
                   f'json names: {json_names}; {key}: {list(classes)}. mmdet matches '
                   f'categories by name: fix {key} or the json')
    used = Counter(a.get('category_id') for a in coco.get('annotations', [])
                   if isinstance(a, dict))
    name_of = {c['id']: c['name'] for c in cats}
    extra_used = {n: sum(used[i] for i, m in name_of.items() if m == n) for n in extra}
    extra_with_anns = {n: k for n, k in extra_used.items() if k}
    if extra_with_anns:
        level = 'warning' if allow_extra_categories else 'error'
        what = ('ignored (allow_extra_categories=True)' if allow_extra_categories
                else f'silently dropped by mmdet; add the names to {key} or pass '
                'allow_extra_categories=True to the dataset to train on a subset')
        report.add(level, 'extra_categories',
                   f'categories of {source!r} not in {key}: {extra_with_anns} '
                   f'(name: annotations); their annotations would be {what}',
                   sum(extra_with_anns.values()))
    extra_unused = [n for n in extra if n not in extra_with_anns]
    if extra_unused:
        report.add('warning', 'extra_categories_unused',
                   f'categories of {source!r} not in {key} and without annotations: '
                   f'{extra_unused}')
    matched = [c for c in cats if c['name'] in classes]
    cat2label = {c['id']: i for i, c in enumerate(matched)}
    if not missing and not dup_names and [c['name'] for c in matched] != list(classes):
        report.add('warning', 'category_order',
                   f'the categories of {source!r} are in the order '
                   f'{[c["name"] for c in matched]}, {key} in the order {list(classes)}: mmdet '
                   'gives label i to the i-th json category, so training and COCO evaluation '
                   'agree, but class names in logs, per-class AP and drawings will be swapped; '
                   f'list {key} in the json order')
    ids = sorted(c['id'] for c in matched)
    if ids and ids != list(range(len(ids))):
        kind = 'start at 1' if ids == list(range(1, len(ids) + 1)) else 'are not contiguous'
        report.add('info', 'category_ids',
                   f'category ids {ids} {kind}: fine, mmdet maps categories to labels 0..'
                   f'{len(ids) - 1} by name')
    return cat2label


def check_num_classes(classes: Tuple[str, ...], model: ModelFacts, report: ValidationReport,
                      key: str = 'metainfo.classes') -> None:
    """The head must have one class per name of ``classes``."""
    if model.num_classes is None or model.num_classes == len(classes):
        return
    report.add('error', 'num_classes_mismatch',
               f'{model.num_classes_key}={model.num_classes} but {key} has {len(classes)} '
               f'names {list(classes)}: set {model.num_classes_key}={len(classes)} (labels '
               f'>= num_classes crash the matcher and the loss)')
