from .resumable_sampler import RTDETRv2ResumableSampler

__all__ = ['RTDETRv2ResumableSampler']
