from .coco import DatasetPipelineError, RTDETRv2CocoDataset
from .transforms import ImageLoadError, RTDETRv2LoadImageFromFile
from .validation import (DatasetValidationError, ValidationReport, check_config_datasets,
                         config_dataset_facts, config_model_facts, validate_coco,
                         validate_coco_dict, validate_config)

__all__ = [
    'DatasetPipelineError', 'RTDETRv2CocoDataset', 'ImageLoadError', 'RTDETRv2LoadImageFromFile',
    'DatasetValidationError', 'ValidationReport', 'check_config_datasets', 'config_dataset_facts',
    'config_model_facts', 'validate_coco', 'validate_coco_dict', 'validate_config'
]
