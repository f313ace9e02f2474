from .coco import DatasetPipelineError, RTDETRv2CocoDataset
from .synthetic import (DEFAULT_CLASSES, KNOWN_SHAPES, SHAPES_CLASSES, make_shapes_dataset,
                        make_synthetic_coco)
from .transforms import ImageLoadError, RTDETRv2LoadImageFromFile
from .validation import (DatasetValidationError, ValidationReport, check_config_datasets,
                         config_dataset_facts, config_model_facts, validate_coco,
                         validate_coco_dict, validate_config)

__all__ = [
    'DatasetPipelineError', 'RTDETRv2CocoDataset', 'ImageLoadError', 'RTDETRv2LoadImageFromFile',
    'DatasetValidationError', 'ValidationReport', 'check_config_datasets', 'config_dataset_facts',
    'config_model_facts', 'validate_coco', 'validate_coco_dict', 'validate_config',
    'DEFAULT_CLASSES', 'KNOWN_SHAPES', 'SHAPES_CLASSES', 'make_shapes_dataset',
    'make_synthetic_coco'
]
