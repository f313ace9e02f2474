"""Evaluation metrics (registered in mmdet's ``METRICS``), their functions and reports."""
from .functional import ImageDetections, OperatingPoints, evaluate_operating_points
from .metrics import OperatingPointError, OperatingPointMetric
from .operating_point_report import format_table, write_report

__all__ = [
    'ImageDetections', 'OperatingPoints', 'evaluate_operating_points', 'OperatingPointError',
    'OperatingPointMetric', 'format_table', 'write_report'
]
