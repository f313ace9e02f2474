"""Shared by tools/train.py and tools/test.py."""
import argparse
import os
import os.path as osp
import sys
from typing import Callable, List, Optional

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..datasets import DatasetPipelineError, DatasetValidationError, ImageLoadError
from ..evaluation import OperatingPointError
from ..models.detectors.checkpoint_fit import CheckpointMismatchError
from ..models.layers.postprocess import DuplicateControlError
from .checkpoint_safety import CorruptCheckpointError, UnsafeCheckpointError
from .dist import setup_cpu_distributed
from .hooks.nonfinite_hook import NonFiniteLossError
from .runner.latest_checkpoint import LatestCheckpointError
from .runner.rtdetrv2_runner import CheckpointSaveError
from .runner.run_settings import RunSettingsError
from .runner.work_dir_lock import WorkDirLockedError

#: errors in what the user gave (settings, data, checkpoints, the work dir)
#: whose message says everything: the tools print it without a traceback
USER_ERRORS = (RunSettingsError, DatasetValidationError, DatasetPipelineError, ImageLoadError,
               CheckpointMismatchError, IsADirectoryError, UnsafeCheckpointError,
               CorruptCheckpointError, NonFiniteLossError, WorkDirLockedError,
               LatestCheckpointError, CheckpointSaveError, OperatingPointError,
               DuplicateControlError)


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


def parse_common_args(parser: argparse.ArgumentParser,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Add the arguments mmdet's train and test scripts share
    (``--cfg-options``, ``--launcher``, ``--local-rank``), parse ``argv`` and
    export ``LOCAL_RANK`` when the launcher did not."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy '
        'format will be merged into config file. If the value to be overwritten is a list, '
        'it should be like key="[a,b]" or key=a,b It also allows nested list/tuple values, '
        'e.g. key="[(a,b),(c,d)]" Note that the quotation marks are necessary and that no '
        'white space is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_runner(cfg: Config) -> Runner:
    """The config's ``runner_type`` (``RTDETRv2Runner`` in our configs) or
    mmengine's ``Runner``. Before: ``--launcher`` without a GPU gets a gloo
    process group, the CPU DDP wrapper, no SyncBN and ``$OMP_NUM_THREADS``
    (1) threads per rank (:func:`setup_cpu_distributed`; a no-op with CUDA)."""
    setup_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def exit_status(command: Callable[[], None]) -> int:
    """Run ``command``: 0 when it returns, 1 after one of :data:`USER_ERRORS`,
    printed as ``error: <message>`` on stderr (once: by the main process of
    a distributed run, whose ranks all stop with the same error). Other
    exceptions propagate with their traceback (a bug, not an input).

    NOTE: mmdet's scripts let every exception out; these messages name the
    key, file or id at fault, and a traceback through mmengine would bury them.
    """
    try:
        command()
    except USER_ERRORS as err:
        if is_main_process():
            message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            print(f'error: {message}', file=sys.stderr)
        return 1
    return 0
