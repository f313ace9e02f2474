from .presnet import PResNet

__all__ = ['PResNet']
