"""mmengine's DefaultSampler that can start an epoch part-way through."""
from typing import Iterator

from mmdet.registry import DATA_SAMPLERS
from mmengine.dataset import DefaultSampler


@DATA_SAMPLERS.register_module()
class RTDETRv2ResumableSampler(DefaultSampler):
    """``DefaultSampler`` (same order for the same ``seed`` and epoch) plus
    :meth:`skip_next`, used by ``RTDETRv2EpochBasedTrainLoop`` to resume
    inside an epoch without loading the images already trained on.

    NOTE: not reused as is: ``DefaultSampler`` always starts at the first
    index of the epoch.
    """

    _skip = 0

    def skip_next(self, num_samples: int) -> None:
        """Drop the first ``num_samples`` indices (of this rank) of the next
        ``__iter__`` only."""
        self._skip = int(num_samples)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
