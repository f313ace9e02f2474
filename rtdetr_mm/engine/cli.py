"""Shared by tools/train.py and tools/test.py."""
import os.path as osp
from typing import Optional

from mmengine.config import Config


def load_config(config: str, launcher: str, cfg_options: Optional[dict],
                work_dir: Optional[str]) -> Config:
    """Read ``config`` and apply the command line as mmdet's tools do:
    ``--cfg-options`` merged in, work_dir = command line > config >
    ``./work_dirs/<config name>``."""
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg
