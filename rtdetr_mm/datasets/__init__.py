from .synthetic import (DEFAULT_CLASSES, KNOWN_SHAPES, SHAPES_CLASSES, make_shapes_dataset,
                        make_synthetic_coco)

__all__ = ['DEFAULT_CLASSES', 'KNOWN_SHAPES', 'SHAPES_CLASSES', 'make_shapes_dataset',
           'make_synthetic_coco']
