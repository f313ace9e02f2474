"""Deployment: ONNX export of RT-DETRv2 (see :mod:`.onnx_export`)."""
from .onnx_export import (RTDETRv2ONNXWrapper, build_detector, compare_detections,
                          config_input_size, export_onnx, fuse_for_deploy, run_onnxruntime,
                          run_pytorch, verify_onnx)

__all__ = ['RTDETRv2ONNXWrapper', 'build_detector', 'compare_detections', 'config_input_size',
           'export_onnx', 'fuse_for_deploy', 'run_onnxruntime', 'run_pytorch', 'verify_onnx']
