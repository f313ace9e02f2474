"""Inference helpers on top of mmdet's ``mmdet.apis`` (as mmdet keeps its
own there). Not imported by ``import rtdetr_mm``."""
from .sliced_inference import (SlicedInferenceError, TileGrid, check_settings,
                               inference_pipeline, list_images, load_detector, predict_images,
                               run_sliced_inference, sliced_inference, tile_origins)

__all__ = [
    'SlicedInferenceError', 'TileGrid', 'check_settings', 'inference_pipeline', 'list_images',
    'load_detector', 'predict_images', 'run_sliced_inference', 'sliced_inference', 'tile_origins'
]
