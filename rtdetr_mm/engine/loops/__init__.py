from .epoch_loop import RTDETRv2EpochBasedTrainLoop

__all__ = ['RTDETRv2EpochBasedTrainLoop']
