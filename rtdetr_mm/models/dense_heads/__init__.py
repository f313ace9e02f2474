from .rtdetrv2_head import RTDETRv2Head, RTDETRv2HeadOutputs

__all__ = ['RTDETRv2Head', 'RTDETRv2HeadOutputs']
