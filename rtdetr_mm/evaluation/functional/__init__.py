from .operating_point import (FP, IGNORED, TP, Curve, ImageDetections, OperatingPoint,
                              OperatingPoints, confusion_matrix_image, evaluate_operating_points,
                              match_image, operating_point, pr_curve)

__all__ = [
    'FP', 'IGNORED', 'TP', 'Curve', 'ImageDetections', 'OperatingPoint', 'OperatingPoints',
    'confusion_matrix_image', 'evaluate_operating_points', 'match_image', 'operating_point',
    'pr_curve'
]
