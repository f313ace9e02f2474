"""RT-DETRv2 for MMDetection 3.3, registered as a plugin (the README lists what importing it changes).

Importing this package registers its modules in mmdet's registries and
allow-lists the types mmengine writes into checkpoints, so that
``torch.load(weights_only=True)`` (torch>=2.6's default) can resume them.
"""
__version__ = '0.1.0'

from .engine.checkpoint_safety import register_safe_globals

register_safe_globals()

from . import datasets, engine, models  # noqa: E402,F401
from .datasets import samplers  # noqa: E402,F401
from . import evaluation  # noqa: E402,F401
