from .rtdetrv2_cls_loss import RTDETRv2ClassificationLoss

__all__ = ['RTDETRv2ClassificationLoss']
