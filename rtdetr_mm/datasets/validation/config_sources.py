"""What the checks read from an mmengine ``Config``: the COCO datasets of
its dataloaders (through the wrappers, with the walker of
:mod:`rtdetr_mm.datasets.walk`), their annotation files, image folders,
classes and input sizes, and the model's class / query / denoising counts.
Shared by the runner-level check and ``tools/misc/check_dataset.py``."""
import os.path as osp
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from ..walk import first_resize_scale, leaf_datasets
from .report import InputSize, ModelFacts


@dataclass
class DatasetFacts:
    """One COCO dataset of a config, with paths resolved as mmengine does.

    Attributes:
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        key (str): Config key of the dataset, e.g.
            ``'train_dataloader.dataset.datasets[1]'``.
        dataset_type (str): Its registered type.
        ann_file (str): Annotation file (``data_root`` joined).
        img_dir (str, optional): Image folder (``data_root`` +
            ``data_prefix.img``).
        classes: ``metainfo.classes`` as mmengine will see it (a meta file
            path is read into a list; the class default when not set).
        classes_key (str): Config key of ``classes``.
        test_mode (bool): The dataset's ``test_mode``.
        allow_extra_categories (bool): From the dataset config.
        input_size (InputSize, optional): From the pipeline's ``Resize``.
    """
    split: str
    key: str
    dataset_type: str
    ann_file: str
    img_dir: Optional[str]
    classes: Any
    classes_key: str
    test_mode: bool = False
    allow_extra_categories: bool = False
    input_size: Optional[InputSize] = None


def _get(obj, key, default=None):
    try:
        return obj.get(key, default)
    except AttributeError:
        return default


def pipelines_input_size(pipelines: Sequence[Any]) -> Optional[InputSize]:
    """The size set by the first ``Resize`` with a ``scale`` of the innermost
    of ``pipelines`` that has one (see :func:`~rtdetr_mm.datasets.walk.first_resize_scale`)."""
    found = first_resize_scale(pipelines)
    return None if found is None else InputSize(h=found[0], w=found[1], keep_ratio=found[2])


def _resolve_classes(ds_cfg, dataset_cls) -> Any:
    metainfo = _get(ds_cfg, 'metainfo') or {}
    classes = _get(metainfo, 'classes')
    if classes is None:
        return (getattr(dataset_cls, 'METAINFO', {}) or {}).get('classes')
    if isinstance(classes, str) and osp.isfile(classes):  # a meta file, as mmengine reads it
        with open(classes) as f:
            return [line.rstrip('\n\r') for line in f if line.strip()]
    return classes


def _join(root: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    if not root or osp.isabs(path) or '://' in path:
        return path
    return osp.join(root, path)


def config_model_facts(cfg) -> ModelFacts:
    """num_classes / num_queries / num_denoising of ``cfg.model``, from the
    head (``model.bbox_head``; the denoising budget from its ``dn_cfg``, as
    mmdet's DINO keeps it) or, for detectors that keep them there (DINO's
    ``num_queries``), from ``model``."""
    model = _get(cfg, 'model') or {}
    head = _get(model, 'bbox_head') or {}
    facts = ModelFacts()
    places = dict(num_classes=(('model.bbox_head', head), ('model', model)),
                  num_queries=(('model.bbox_head', head), ('model', model)),
                  num_denoising=(('model.bbox_head.dn_cfg', _get(head, 'dn_cfg') or {}),
                                 ('model.dn_cfg', _get(model, 'dn_cfg') or {})))
    for name, nodes in places.items():
        for prefix, node in nodes:
            if _get(node, name) is not None:
                setattr(facts, name, int(node[name]))
                setattr(facts, f'{name}_key', f'{prefix}.{name}')
                break
    return facts


@dataclass
class MetricFacts:
    """A ``CocoMetric`` (or subclass) of a split's evaluator.

    Attributes:
        split (str): ``'val'`` or ``'test'``.
        key (str): Its config key, e.g. ``'val_evaluator'`` or
            ``'test_evaluator[1]'``.
        ann_file (str, optional): The json it reads with pycocotools
            (as given: ``CocoMetric`` joins no ``data_root``); ``None``:
            it builds its ground truth from the dataset.
        format_only (bool): Only writes predictions, needs no ground truth.
    """
    split: str
    key: str
    ann_file: Optional[str]
    format_only: bool = False


def config_coco_metrics(cfg, split: str) -> List[MetricFacts]:
    """The ``CocoMetric`` s of ``cfg.<split>_evaluator`` (a metric dict, a
    list of them, or an ``Evaluator`` dict with ``metrics``)."""
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import METRICS
    evaluator = _get(cfg, f'{split}_evaluator')
    key = f'{split}_evaluator'
    if _get(evaluator, 'metrics') is not None:
        evaluator, key = evaluator['metrics'], f'{key}.metrics'
    if evaluator is None:
        return []
    if isinstance(evaluator, (list, tuple)):
        items = [(f'{key}[{i}]', m) for i, m in enumerate(evaluator)]
    else:
        items = [(key, evaluator)]
    out = []
    for metric_key, metric in items:
        m_type = _get(metric, 'type')
        m_cls = METRICS.get(m_type) if isinstance(m_type, str) else m_type
        if isinstance(m_cls, type) and issubclass(m_cls, CocoMetric):
            out.append(MetricFacts(split=split, key=metric_key,
                                   ann_file=_get(metric, 'ann_file'),
                                   format_only=bool(_get(metric, 'format_only', False))))
    return out


def config_dataset_facts(cfg, splits: Sequence[str] = ('train', 'val', 'test')
                         ) -> List[DatasetFacts]:
    """The COCO datasets of ``cfg``'s ``<split>_dataloader`` s, through
    dataset wrappers (RepeatDataset, ClassBalancedDataset, ConcatDataset,
    MultiImageMixDataset: any dict with ``dataset`` / ``datasets``).

    Datasets that are not ``CocoDataset`` subclasses are skipped. The same
    (ann_file, img_dir) is listed once per split.
    """
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope(_get(cfg, 'default_scope') or 'mmdet')
    facts: List[DatasetFacts] = []
    for split in splits:
        loader = _get(cfg, f'{split}_dataloader')
        if loader is None:
            continue
        seen = set()
        for node in leaf_datasets(_get(loader, 'dataset'), f'{split}_dataloader.dataset'):
            ds_cfg, key = node.dataset, node.key
            ds_type = _get(ds_cfg, 'type')
            ds_cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
            if not isinstance(ds_cls, type) or not issubclass(ds_cls, CocoDataset):
                continue
            root = _get(ds_cfg, 'data_root') or ''
            ann_file = _join(root, _get(ds_cfg, 'ann_file') or '')
            prefix = _get(_get(ds_cfg, 'data_prefix') or {}, 'img')
            img_dir = _join(root, prefix) if prefix is not None else None
            if (ann_file, img_dir) in seen:
                continue
            seen.add((ann_file, img_dir))
            input_size = pipelines_input_size(node.pipelines)
            facts.append(DatasetFacts(
                split=split, key=key, dataset_type=ds_cls.__name__, ann_file=ann_file,
                img_dir=img_dir, classes=_resolve_classes(ds_cfg, ds_cls),
                classes_key=f'{key}.metainfo.classes',
                test_mode=bool(_get(ds_cfg, 'test_mode', False)),
                allow_extra_categories=bool(_get(ds_cfg, 'allow_extra_categories', False)),
                input_size=input_size))
    return facts
