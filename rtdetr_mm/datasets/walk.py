"""One walk over nested datasets and pipelines, for configs and built objects.

Datasets nest in the wrappers of mmengine and mmdet: ``dataset`` holds one
(``RepeatDataset``, ``ClassBalancedDataset``, mmdet's
``MultiImageMixDataset``), ``datasets`` a list (``ConcatDataset``). A wrapper
may own a pipeline too (``MultiImageMixDataset``).

Transforms nest in ``transforms`` of mmcv's ``RandomChoice`` (a list of
lists: one list per choice), ``RandomApply``, ``RandomOrder``,
``TransformBroadcaster`` and ``KeyMapper``, and of mmengine's ``Compose``.

Every place that looks for datasets or transforms uses these functions: the
``image_size`` knob, the dataset validator and its hook, the aug-switch hook
and the ONNX input size. Config nodes are dicts (``mmengine.Config`` or
plain); built nodes are read through their attributes.
"""
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

class DatasetNode(NamedTuple):
    """One dataset in a (possibly wrapped) dataset.

    Attributes:
        key (str): Its config path, e.g. ``train_dataloader.dataset.datasets.1``.
        dataset: The config dict or the built dataset.
        pipelines (list): The pipelines that apply to it, outer wrappers
            first, its own last (each a list of transforms or a ``Compose``).
        is_leaf (bool): It wraps no other dataset (it owns the annotations).
    """
    key: str
    dataset: Any
    pipelines: List[Any]
    is_leaf: bool


def _field(node: Any, name: str) -> Any:
    if isinstance(node, dict):
        return node.get(name)
    return getattr(node, name, None)


def _children(dataset: Any) -> List[Tuple[str, Any]]:
    """(key suffix, wrapped dataset) of a wrapper; empty for a leaf."""
    many = _field(dataset, 'datasets')
    if isinstance(many, (list, tuple)):
        return [(f'.datasets.{i}', d) for i, d in enumerate(many)]
    one = _field(dataset, 'dataset')
    if one is not None and one is not dataset:
        return [('.dataset', one)]
    return []


def walk_datasets(dataset: Any, key: str = 'dataset',
                  pipelines: Sequence[Any] = ()) -> Iterator[DatasetNode]:
    """Every dataset in ``dataset``, wrappers before what they wrap.

    Args:
        dataset: A dataset config dict or a built dataset (None: nothing).
        key (str): Config path of ``dataset``, to name it in messages.
        pipelines: Pipelines of outer wrappers.
    """
    if dataset is None:
        return
    own = _field(dataset, 'pipeline')
    pipelines = list(pipelines) + ([own] if own else [])
    children = _children(dataset)
    yield DatasetNode(key, dataset, pipelines, not children)
    for suffix, child in children:
        yield from walk_datasets(child, key + suffix, pipelines)


def leaf_datasets(dataset: Any, key: str = 'dataset') -> List[DatasetNode]:
    """The datasets that own annotations (wrap no other)."""
    return [node for node in walk_datasets(dataset, key) if node.is_leaf]


def pipeline_owners(dataset: Any) -> List[Any]:
    """The datasets whose ``pipeline`` produces the samples: per branch the
    outermost dataset that has a ``pipeline`` (a ``MultiImageMixDataset``
    runs its own pipeline on what its inner dataset loads)."""
    if _field(dataset, 'pipeline') is not None:
        return [dataset]
    children = _children(dataset)
    if not children:
        raise TypeError(f'{type(dataset).__name__} has no pipeline and wraps no dataset')
    return [owner for _, child in children for owner in pipeline_owners(child)]


def walk_transforms(pipeline: Any, key: str = 'pipeline') -> Iterator[Tuple[str, Any]]:
    """Every transform config of ``pipeline``, depth first, with its config
    path (``...pipeline.3.transforms.0.1`` for the second transform of the
    first choice of a ``RandomChoice`` at step 3).

    Args:
        pipeline: A list of transform configs (a ``Compose`` or None: nothing).
    """
    if not isinstance(pipeline, (list, tuple)):
        return
    for i, step in enumerate(pipeline):
        where = f'{key}.{i}'
        if isinstance(step, (list, tuple)):  # one choice of a RandomChoice
            yield from walk_transforms(step, where)
            continue
        yield where, step
        yield from walk_transforms(_field(step, 'transforms'), f'{where}.transforms')


def _is_resize(step: Any) -> bool:
    kind = step.get('type') if isinstance(step, dict) else None
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    return name.split('.')[-1] == 'Resize'  # Resize, mmdet.Resize, mmcv.Resize


def resize_steps(pipeline: Any, key: str = 'pipeline') -> List[Tuple[str, dict]]:
    """The ``Resize`` configs of ``pipeline`` at any depth, with their paths."""
    return [(where, step) for where, step in walk_transforms(pipeline, key) if _is_resize(step)]


def loader_datasets(cfg: Any, splits: Sequence[str] = ('train', 'val', 'test')
                    ) -> Iterator[Tuple[str, Any]]:
    """``(split, dataset config)`` of each ``<split>_dataloader`` of ``cfg``."""
    for split in splits:
        loader = _field(cfg, f'{split}_dataloader')
        dataset = _field(loader, 'dataset') if loader is not None else None
        if dataset is not None:
            yield split, dataset


def first_resize_scale(pipelines: Sequence[Any]) -> Optional[Tuple[int, int, bool]]:
    """``(h, w, keep_ratio)`` of the innermost pipeline's first ``Resize``
    with a ``scale`` (mmcv's ``scale`` is ``(w, h)``; an int is a square), or
    None."""
    for pipeline in reversed(list(pipelines)):
        for _, step in resize_steps(pipeline):
            scale = step.get('scale')
            if scale is None:
                continue
            w, h = (scale, scale) if isinstance(scale, (int, float)) else scale
            return int(h), int(w), bool(step.get('keep_ratio', False))
    return None


__all__ = ['DatasetNode', 'walk_datasets', 'leaf_datasets', 'pipeline_owners',
           'walk_transforms', 'resize_steps', 'loader_datasets', 'first_resize_scale']
