from .batched_hungarian_assigner import MatchedPairs, RTDETRv2HungarianAssigner

__all__ = ['MatchedPairs', 'RTDETRv2HungarianAssigner']
