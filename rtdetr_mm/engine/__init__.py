from .checkpoint_safety import (UnsafeCheckpointError, register_safe_globals,
                                safe_load_checkpoint)

__all__ = ['UnsafeCheckpointError', 'register_safe_globals', 'safe_load_checkpoint']
