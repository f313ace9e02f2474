"""Check the COCO datasets of a config before training.

    python tools/misc/check_dataset.py CONFIG [--splits train val]
        [--verify-images] [--cfg-options K=V ...]

For every COCO dataset of the chosen dataloaders (through RepeatDataset /
ConcatDataset / ... wrappers) it prints: category ids vs
``metainfo.classes`` (missing, extra, non-contiguous, name mismatch),
degenerate and out-of-image boxes (clipped or dropped by
``RTDETRv2CocoDataset``, each named by annotation id), crowd boxes
(``iscrowd=1``: counted as ignored, as training ignores them), image sizes
against the json (a header-read sample; all with ``--verify-images``), the
ground truth the val / test ``CocoMetric`` needs (annotations, ``area``),
the share of images without objects, the most GT
in one image against the number of queries and the denoising budget,
object sizes at the training input size (% under 8 / 16 / 32 px on the
shorter side) and class frequencies, then the errors and warnings.

Before the datasets it reports the run settings out of range, as
``tools/train.py`` would refuse them (``rtdetr_mm.engine.runner.run_settings``),
and whether the train split leaves at least one iteration per epoch at
``train_dataloader.batch_size`` / ``drop_last`` on ``--world-size`` processes.

Exit status: 1 when a dataset has errors that would break training, a run
setting is out of range (or no COCO dataset was found), 0 otherwise
(warnings included). The checks are
those of ``rtdetr_mm.datasets.validation``, which the dataset runs itself
when it is built.
"""
import argparse
import os.path as osp
import sys
from typing import List, Tuple

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.datasets.validation import (SIZE_THRESHOLDS, DatasetFacts,  # noqa: E402
                                           ModelFacts, ValidationReport, config_model_facts,
                                           validate_config)
from rtdetr_mm.engine.cli import load_config  # noqa: E402
from rtdetr_mm.engine.runner.image_size import apply_image_size  # noqa: E402
from rtdetr_mm.engine.runner.run_settings import (epoch_length_problem,  # noqa: E402
                                                  run_settings_problems)
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        choices=['train', 'val', 'test'],
                        help='dataloaders to check (default: train val)')
    parser.add_argument('--verify-images', action='store_true',
                        help='decode every image: finds corrupt files and every size that '
                        'differs from the json (slower; by default the header sizes of a '
                        'sample of images are checked)')
    parser.add_argument('--world-size', type=int, default=1,
                        help='processes (GPUs) training will use: each gets 1/N of the train '
                        'split (default 1)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value as in tools/train.py')
    return parser.parse_args(argv)


def _pct(x: float) -> str:
    return f'{100 * x:.1f}%'


def format_report(facts: DatasetFacts, report: ValidationReport, model: ModelFacts) -> str:
    """The readable report of one dataset."""
    s = report.stats
    lines = [f'== {facts.split}: {facts.ann_file}',
             f'   {facts.dataset_type} at {facts.key}; images: {facts.img_dir}']
    if report.stats.num_images or report.stats.num_annotations:
        lines.append(f'   images {s.num_images}, annotations {s.num_annotations}, '
                     f'boxes kept {s.num_boxes}, ignored {s.num_ignored} (iscrowd=1: never '
                     'reach the loss)')
    if s.category_ids:
        pairs = ', '.join(f'{name}={cid}' for name, cid in s.category_ids.items())
        lines.append(f'   categories (class=json id): {pairs}')
    lines.append(f'   boxes: {report.fixes.summary()}')
    if s.num_images:
        lines.append(f'   images without objects: {s.num_empty_images} of {s.num_images} '
                     f'({_pct(s.empty_fraction)}), kept')
        budget = []
        if model.num_queries is not None:
            budget.append(f'{model.num_queries_key}={model.num_queries}')
        if model.num_denoising:
            groups = max(model.num_denoising // s.max_gt, 1) if s.max_gt else 0
            budget.append(f'{model.num_denoising_key}={model.num_denoising} '
                          f'({groups} denoising group(s) at this count)')
        lines.append(f'   max GT per image: {s.max_gt} (image id {s.max_gt_image_id})'
                     + (f' vs {", ".join(budget)}' if budget else ''))
    if s.size_fractions and s.num_boxes:
        at = (f'at the {s.input_size.h}x{s.input_size.w} (h x w) input'
              + (' (keep_ratio)' if s.input_size.keep_ratio else '')
              if s.input_size is not None else 'in original pixels (no Resize found)')
        sizes = ', '.join(f'<{t} px {_pct(s.size_fractions[t])}' for t in SIZE_THRESHOLDS)
        lines.append(f'   object sizes {at}, shorter side: {sizes}')
    if s.class_counts and s.num_boxes:
        total = max(s.num_boxes, 1)
        freq = ', '.join(f'{n} {k} ({_pct(k / total)})' for n, k in s.class_counts.items())
        lines.append(f'   class frequencies: {freq}')
    for level, title in (('error', 'ERROR'), ('warning', 'WARNING'), ('info', 'info')):
        for f in report.findings:
            if f.level == level:
                lines.append(f'   {title} [{f.code}] {f.message}')
    return '\n'.join(lines)


def check(cfg, splits: List[str], verify_images: bool = False
          ) -> Tuple[List[Tuple[DatasetFacts, ValidationReport]], ModelFacts]:
    """Validate ``cfg``'s datasets; returns the results and the model facts."""
    model = config_model_facts(cfg)
    return validate_config(cfg, splits, verify_images=verify_images), model


def epoch_length(cfg, results, world_size: int) -> List[str]:
    """Why the train split would give an epoch without iterations (empty
    when it would not, or when its length cannot be known from the report:
    a dataset wrapper such as RepeatDataset changes it)."""
    loader = cfg.get('train_dataloader') or {}
    dataset = loader.get('dataset') or {}
    train = [report for facts, report in results if facts.split == 'train']
    batch_size = loader.get('batch_size')
    if len(train) != 1 or 'ann_file' not in dataset or not isinstance(batch_size, int) \
            or batch_size < 1:
        return []
    stats = train[0].stats
    # mmdet's filter_cfg.filter_empty_gt drops images without objects
    filtered = bool((dataset.get('filter_cfg') or {}).get('filter_empty_gt', False))
    num_images = stats.num_images - (stats.num_empty_images if filtered else 0)
    sampler = loader.get('batch_sampler') or {}
    drop_last = bool(sampler.get('drop_last', loader.get('drop_last', False)))
    problem = epoch_length_problem(num_images, batch_size, drop_last, world_size)
    return [problem] if problem else []


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, 'none', args.cfg_options, None)
    settings = run_settings_problems(cfg)
    # the input size training will use: `image_size` written into every
    # Resize, as RTDETRv2Runner does (after the settings: an invalid size is
    # reported there)
    if not any(p.startswith('image_size=') for p in settings):
        apply_image_size(cfg)
    results, model = check(cfg, args.splits, args.verify_images)
    settings += epoch_length(cfg, results, args.world_size)
    print('== run settings: ' + ('OK' if not settings else f'{len(settings)} out of range'))
    for problem in settings:
        print(f'   ERROR [run_setting] {problem}')
    if not results:
        print(f'no COCO dataset found in the {"/".join(args.splits)} dataloaders of '
              f'{args.config}')
        return 1
    model_line = ', '.join(f'{k}={v}' for k, v in (
        (model.num_classes_key, model.num_classes), (model.num_queries_key, model.num_queries),
        (model.num_denoising_key, model.num_denoising)) if v is not None)
    print(f'config: {args.config}' + (f'\nmodel: {model_line}' if model_line else ''))
    for facts, report in results:
        print(format_report(facts, report, model))
    num_err = sum(len(r.errors) for _, r in results) + len(settings)
    num_warn = sum(len(r.warnings) for _, r in results)
    verdict = ('FAILED: training would break' if num_err else
               'OK with warnings' if num_warn else 'OK')
    print(f'check_dataset: {len(results)} dataset(s), {num_err} error(s), '
          f'{num_warn} warning(s): {verdict}')
    return 1 if num_err else 0


if __name__ == '__main__':
    sys.exit(main())
