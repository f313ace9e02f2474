from .synthetic import SHAPES_CLASSES, make_shapes_dataset

__all__ = ['SHAPES_CLASSES', 'make_shapes_dataset']
