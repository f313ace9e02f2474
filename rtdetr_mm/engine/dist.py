"""Multi-process training and testing on CPU (gloo) next to mmengine's GPU path.

mmengine 0.10.7 assumes CUDA once ``launcher != 'none'``:

- ``Runner.setup_env`` -> ``mmengine.dist.init_dist`` calls
  ``torch.cuda.set_device(local_rank)`` before ``init_process_group``, which
  raises on a CPU-only torch (``torch._C`` has no ``_cuda_setDevice``) and
  selects a GPU that does not exist on a GPU build run with
  ``CUDA_VISIBLE_DEVICES=''``; the configs ask for ``nccl``, which has no CPU
  support;
- ``Runner.wrap_model`` gives ``MMDistributedDataParallel`` ``device_ids=
  [LOCAL_RANK]``, which ``DistributedDataParallel`` rejects for a CPU module;
- ``cfg.sync_bn`` turns every BatchNorm into ``torch.nn.SyncBatchNorm``, whose
  training forward raises ``SyncBatchNorm expected input tensor to be on GPU``
  on CPU.

:func:`setup_cpu_distributed` is called by ``tools/train.py`` and
``tools/test.py`` after the config is loaded and before the runner is built.
When CUDA is available, or the launcher is ``'none'``, it does nothing and
mmengine's own path (nccl, device ids, SyncBN) runs unchanged. Otherwise it
uses mmengine's extension points instead of patching mmengine:

1. it creates the gloo process group itself (``init_process_group`` from the
   launcher's environment), so ``Runner.setup_env`` finds
   ``is_distributed()`` true and skips ``init_dist``;
2. it sets ``cfg.model_wrapper_cfg`` to :class:`CPUDistributedDataParallel`,
   a registered ``MMDistributedDataParallel`` without device ids that reverts
   SyncBN layers;
3. it drops ``cfg.sync_bn``: on CPU each rank normalises with the statistics
   of its own batch and keeps its own BN running statistics (checkpoints are
   written by rank 0 and hold rank 0's);
4. it uses ``$OMP_NUM_THREADS`` intra-op threads per rank, 1 by default
   (``torch.distributed.run`` sets it to 1 for several processes per node), so
   the ranks do not oversubscribe the cores.
"""
import datetime
import os
import subprocess
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

LAUNCHERS = ('pytorch', 'slurm', 'mpi')
CPU_BACKENDS = ('gloo', 'mpi')


# NOTE: registered in mmengine's root registry, not mmdet's: Runner.wrap_model
# looks the type up with the root's ``MODEL_WRAPPERS.get``, which does not
# search child registries.
@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for a model on CPU (gloo or mpi backend).

    ``torch.nn.parallel.DistributedDataParallel`` needs ``device_ids=None``
    and ``output_device=None`` for a CPU module, while ``Runner.wrap_model``
    passes ``device_ids=[LOCAL_RANK]`` to every ``DistributedDataParallel``
    subclass: both are ignored here. ``SyncBatchNorm`` layers (from
    ``cfg.sync_bn`` or a model config's ``norm_cfg``) cannot run on CPU and
    are reverted to BatchNorm first, with a log line saying how many.

    Args:
        module (nn.Module): The model, on CPU.
        device_ids: Ignored (must be None on CPU).
        output_device: Ignored (must be None on CPU).
        **kwargs: ``broadcast_buffers``, ``find_unused_parameters``,
            ``detect_anomalous_params``... as ``MMDistributedDataParallel``.
    """

    def __init__(self, module: nn.Module, device_ids=None, output_device=None,
                 **kwargs) -> None:
        devices = {p.device.type for p in module.parameters()}
        if devices != {'cpu'}:
            raise ValueError('CPUDistributedDataParallel wraps a model on CPU, but its '
                             f'parameters are on {sorted(devices)}; with GPUs use '
                             "model_wrapper_cfg type='MMDistributedDataParallel'")
        num_sync_bn = sum(isinstance(m, nn.SyncBatchNorm) for m in module.modules())
        if num_sync_bn:
            module = revert_sync_batchnorm(module)
            print_log(f'CPU distributed training: reverted {num_sync_bn} SyncBatchNorm '
                      'layers to BatchNorm (SyncBN needs GPUs); each rank normalises '
                      'with the statistics of its own batch.', logger='current')
        super().__init__(module=module, device_ids=None, output_device=None, **kwargs)


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare a ``launcher != 'none'`` run for CPU processes, if there is no GPU.

    Must run before ``Runner`` is built. Reads ``cfg.launcher``,
    ``cfg.env_cfg.dist_cfg`` (``backend``, ``timeout`` in seconds, ``port``
    for slurm), ``cfg.sync_bn``, ``cfg.model_wrapper_cfg`` and
    ``cfg.find_unused_parameters``; updates the last three in place.

    Args:
        cfg (Config): The loaded config, with ``launcher`` set.

    Returns:
        bool: True when the CPU path was set up; False when nothing was done
        (``launcher='none'`` or CUDA available). A process group that already
        exists is kept.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {("none", ) + LAUNCHERS}, got {launcher!r}')
    if not torch_dist.is_initialized():
        _init_cpu_process_group(launcher, _dist_cfg(cfg))
    _use_cpu_threads()
    _drop_sync_bn(cfg)
    _use_cpu_model_wrapper(cfg)
    return True


def _dist_cfg(cfg: Config) -> dict:
    env_cfg = cfg.get('env_cfg', None) or {}
    return dict(env_cfg.get('dist_cfg', None) or {})


def _init_cpu_process_group(launcher: str, dist_cfg: dict) -> None:
    """``init_process_group`` with a CPU backend from the launcher's env vars."""
    backend = dist_cfg.get('backend', 'nccl')
    if backend not in CPU_BACKENDS:
        print_log(f'env_cfg.dist_cfg.backend={backend!r} needs GPUs; no GPU is visible, '
                  'so the processes communicate with gloo.', logger='current')
        backend = 'gloo'
    init_backend = dist_cfg.get('init_backend', 'torch')
    if init_backend != 'torch':
        raise ValueError(f'env_cfg.dist_cfg.init_backend={init_backend!r} is not supported '
                         "on CPU; use 'torch'")
    if launcher == 'slurm':
        _env_from_slurm(dist_cfg.get('port', None))
    elif launcher == 'mpi':
        _env_from_mpi()
    timeout = dist_cfg.get('timeout', None)
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(backend=backend, init_method='env://',
                                  rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def _env_from_slurm(port: Optional[int]) -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* from srun's variables, as
    mmengine's slurm launcher (MASTER_ADDR: the env var, else the first host
    of ``$SLURM_NODELIST``; MASTER_PORT: ``dist_cfg.port``, the env var, 29500)."""
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        hosts = subprocess.run(['scontrol', 'show', 'hostname', os.environ['SLURM_NODELIST']],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ['MASTER_ADDR'] = hosts[0]


def _env_from_mpi() -> None:
    """RANK/WORLD_SIZE/LOCAL_RANK from Open MPI's variables (MASTER_ADDR must
    be set, MASTER_PORT defaults to 29500), as mmengine's mpi launcher."""
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('--launcher mpi needs the environment variable MASTER_ADDR')
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
    os.environ.setdefault('MASTER_PORT', '29500')


def _use_cpu_threads() -> None:
    """``$OMP_NUM_THREADS`` intra-op threads per rank, 1 when unset."""
    num_threads = int(os.environ.get('OMP_NUM_THREADS', '1'))
    os.environ['OMP_NUM_THREADS'] = str(num_threads)
    torch.set_num_threads(num_threads)


def _drop_sync_bn(cfg: Config) -> None:
    sync_bn = cfg.get('sync_bn', None)
    if sync_bn is not None:
        print_log(f'sync_bn={sync_bn!r} is ignored on CPU (SyncBatchNorm needs GPUs): each '
                  'rank normalises with the statistics of its own batch and keeps its own '
                  'BN running statistics; checkpoints hold rank 0\'s.', logger='current')
        cfg.sync_bn = None


def _use_cpu_model_wrapper(cfg: Config) -> None:
    """``CPUDistributedDataParallel`` with mmengine's default DDP arguments,
    or in place of a configured ``MMDistributedDataParallel``."""
    wrapper_cfg = cfg.get('model_wrapper_cfg', None)
    if wrapper_cfg is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel',
            broadcast_buffers=False,  # mmengine's default
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper_cfg.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper_cfg['type'] = 'CPUDistributedDataParallel'
    elif wrapper_cfg['type'] != 'CPUDistributedDataParallel':
        print_log(f"model_wrapper_cfg.type={wrapper_cfg['type']!r} is kept on CPU; it must "
                  'accept a CPU model (DistributedDataParallel needs device_ids=None).',
                  logger='current')
