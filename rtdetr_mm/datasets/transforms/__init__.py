from .loading import ImageLoadError, RTDETRv2LoadImageFromFile, unreadable_image_error

__all__ = ['ImageLoadError', 'RTDETRv2LoadImageFromFile', 'unreadable_image_error']
