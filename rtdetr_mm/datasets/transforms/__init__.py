from .loading import ImageLoadError, RTDETRv2LoadImageFromFile

__all__ = ['ImageLoadError', 'RTDETRv2LoadImageFromFile']
