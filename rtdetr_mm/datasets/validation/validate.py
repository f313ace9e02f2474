"""Entry points of the validation: one COCO json (loaded or a file) against
its classes and the model, and every COCO dataset of a config, with the
runner-level check that raises on the first dataset with errors."""
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .class_checks import check_categories, check_classes_value, check_num_classes
from .coco_checks import check_annotations, check_images, check_top_level, load_coco_json
from .config_sources import DatasetFacts, config_dataset_facts, config_model_facts
from .evaluation_checks import check_evaluation_gt
from .report import InputSize, ModelFacts, ValidationReport, raise_on_errors
from .statistics import check_model_stats, check_stats, compute_stats


def validate_coco_dict(coco: dict, classes: Any, source: str = '<dict>',
                       img_dir: Optional[str] = None, model: Optional[ModelFacts] = None,
                       input_size: Optional[InputSize] = None, test_mode: bool = False,
                       classes_key: str = 'metainfo.classes',
                       allow_extra_categories: bool = False,
                       verify_images: bool = False) -> ValidationReport:
    """Validate a loaded COCO detection dict.

    Args:
        coco (dict): The parsed json.
        classes: ``metainfo.classes`` as configured (a tuple of names; a
            string or anything else is reported as an error).
        source (str): Name of the annotation file, quoted in messages.
        img_dir (str, optional): Folder the ``file_name`` s are relative to;
            ``None`` skips the file checks.
        model (ModelFacts, optional): Head facts to check against.
        input_size (InputSize, optional): Training input size for the
            object-size statistics.
        test_mode (bool): Evaluation split: ``annotations`` may be absent,
            no denoising / empty-image warnings.
        classes_key (str): Config key of ``classes`` for messages.
        allow_extra_categories (bool): json categories outside ``classes``
            with annotations are a warning instead of an error.
        verify_images (bool): Decode every image (slow) to find unreadable
            files and sizes that differ from the json.

    Returns:
        ValidationReport: errors, warnings, infos, box fixes and statistics.
    """
    report = ValidationReport(source)
    model = model or ModelFacts()
    names = check_classes_value(classes, report, classes_key)
    if not check_top_level(coco, source, report, test_mode):
        return report
    report.stats.num_images = len(coco['images'])
    report.stats.num_annotations = len(coco.get('annotations', []))
    report.stats.has_annotations_key = 'annotations' in coco
    images = check_images(coco, source, report, img_dir, verify_images)
    if names is None:
        cat2label = {}
    else:
        check_num_classes(names, model, report, classes_key)
        cat2label = check_categories(coco, names, source, report, classes_key,
                                     allow_extra_categories)
    known_cat_ids = [c['id'] for c in coco['categories'] if isinstance(c, dict) and 'id' in c]
    kept = check_annotations(coco, source, images, cat2label, known_cat_ids, report)
    if names is not None:
        cat_names = {c['id']: c['name'] for c in coco['categories']
                     if isinstance(c, dict) and c.get('id') in cat2label}
        compute_stats(images, kept, names, cat_names, input_size, report.stats)
        check_stats(report.stats, names, model, source, report, test_mode)
    return report


def validate_coco(ann_file: str, classes: Any, img_dir: Optional[str] = None,
                  model: Optional[ModelFacts] = None, input_size: Optional[InputSize] = None,
                  test_mode: bool = False, classes_key: str = 'metainfo.classes',
                  allow_extra_categories: bool = False,
                  verify_images: bool = False) -> Tuple[ValidationReport, Optional[dict]]:
    """:func:`validate_coco_dict` on the json file ``ann_file``.

    Returns:
        tuple: the report and the parsed json (``None`` when it could not be
        read; the report then holds the error), so that a caller can reuse
        it instead of parsing the file again.
    """
    report = ValidationReport(ann_file)
    coco = load_coco_json(ann_file, report)
    if coco is None:
        check_classes_value(classes, report, classes_key)
        return report, None
    full = validate_coco_dict(coco, classes, ann_file, img_dir, model, input_size, test_mode,
                              classes_key, allow_extra_categories, verify_images)
    return full, coco


def recheck_validated(facts: DatasetFacts, validated: ValidationReport,
                      model: ModelFacts) -> ValidationReport:
    """The config-level checks of a dataset that validated its annotations
    itself (``RTDETRv2CocoDataset.validation_report``), without reading the
    json again: the classes value, ``num_classes`` and the GT count vs the
    queries and the denoising budget, plus the errors of ``validated``.

    Returns:
        ValidationReport: a new report sharing ``validated``'s statistics
        and box fixes; its findings are only those of these checks.
    """
    report = ValidationReport(validated.source, fixes=validated.fixes, stats=validated.stats)
    report.findings.extend(f for f in validated.findings if f.level == 'error')
    names = check_classes_value(facts.classes, report, facts.classes_key)
    if names is not None:
        check_num_classes(names, model, report, facts.classes_key)
        check_model_stats(validated.stats, model, validated.source, report, facts.test_mode)
    return report


def validate_config(cfg, splits: Sequence[str] = ('train', 'val', 'test'),
                    check_model: bool = True, verify_images: bool = False,
                    validated: Optional[Dict[str, ValidationReport]] = None
                    ) -> List[Tuple[DatasetFacts, ValidationReport]]:
    """Validate every COCO dataset of ``cfg``'s ``splits`` against its
    classes and the model (:func:`config_model_facts`), and the ground truth
    of the val / test ``CocoMetric`` s (:func:`check_evaluation_gt`).

    Args:
        validated (dict[str, ValidationReport], optional): Reports of
            datasets already built and validated, by annotation file: those
            get :func:`recheck_validated` instead of a full validation.
    """
    model = config_model_facts(cfg) if check_model else ModelFacts()
    validated = validated or {}
    results = []
    for facts in config_dataset_facts(cfg, splits):
        if facts.ann_file in validated:
            report = recheck_validated(facts, validated[facts.ann_file], model)
        else:
            report, _ = validate_coco(facts.ann_file, facts.classes, facts.img_dir, model,
                                      facts.input_size, facts.test_mode, facts.classes_key,
                                      facts.allow_extra_categories, verify_images)
        results.append((facts, report))
    check_evaluation_gt(cfg, results)
    return results


def check_config_datasets(cfg, splits: Sequence[str] = ('train', 'val'),
                          validated: Optional[Dict[str, ValidationReport]] = None,
                          verify_images: bool = False
                          ) -> List[Tuple[DatasetFacts, ValidationReport]]:
    """Runner-level check at run start: validate the datasets of ``splits``
    (see :func:`validate_config`) and raise :class:`DatasetValidationError`
    on the first dataset with errors (its message names the dataset's
    config key).

    Returns:
        list: (facts, report) of every dataset checked, for logging.
    """
    results = validate_config(cfg, splits, verify_images=verify_images, validated=validated)
    for facts, report in results:
        raise_on_errors(report, facts.key)
    return results
