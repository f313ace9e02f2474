from .image_size import apply_image_size, check_image_size
from .rtdetrv2_runner import RTDETRv2Runner

__all__ = ['apply_image_size', 'check_image_size', 'RTDETRv2Runner']
