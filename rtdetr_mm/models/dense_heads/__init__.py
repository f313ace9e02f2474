from .rtdetrv2_head import CLASS_DEPENDENT_LAYERS, RTDETRv2Head, RTDETRv2HeadOutputs

__all__ = ['CLASS_DEPENDENT_LAYERS', 'RTDETRv2Head', 'RTDETRv2HeadOutputs']
