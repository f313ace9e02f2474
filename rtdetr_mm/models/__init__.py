from . import backbones, data_preprocessors, dense_heads, detectors, layers, losses, necks  # noqa: F401
