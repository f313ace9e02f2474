from .epoch_loop import RTDETRv2EpochBasedTrainLoop
from .val_loop import RTDETRv2ValLoop

__all__ = ['RTDETRv2EpochBasedTrainLoop', 'RTDETRv2ValLoop']
