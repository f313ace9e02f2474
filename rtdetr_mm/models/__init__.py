from . import (backbones, data_preprocessors, dense_heads, detectors, layers, losses,  # noqa: F401
               necks, task_modules)
