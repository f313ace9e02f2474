from .hybrid_encoder import RTDETRv2HybridEncoder

__all__ = ['RTDETRv2HybridEncoder']
