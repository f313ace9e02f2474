"""Deployment: ONNX export of RT-DETRv2 (see :mod:`.onnx_export`)."""
from .onnx_export import (RTDETRv2ONNXWrapper, build_detector, compare_detections,
                          export_onnx, fuse_for_deploy, rtdetrv2_postprocess,
                          run_onnxruntime, run_pytorch, verify_onnx)

__all__ = ['RTDETRv2ONNXWrapper', 'build_detector', 'compare_detections', 'export_onnx',
           'fuse_for_deploy', 'rtdetrv2_postprocess', 'run_onnxruntime', 'run_pytorch',
           'verify_onnx']
