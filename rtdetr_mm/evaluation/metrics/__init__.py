from .operating_point_metric import OperatingPointError, OperatingPointMetric

__all__ = ['OperatingPointError', 'OperatingPointMetric']
