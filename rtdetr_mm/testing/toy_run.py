"""A toy training run for the tests of the training loop and its hooks
(checkpointing, early stopping): a 2-parameter model, a dataset of constant
vectors and a metric that returns a scripted sequence, so that what the
loop and the hooks do at each validation is known in advance.

``toy_run_config(...)`` is the config of such a run through our
``RTDETRv2EpochBasedTrainLoop`` and ``RTDETRv2CheckpointHook``; a test adds
its own hooks and builds it with ``RUNNERS.build``.
"""
import uuid
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmdet.registry import DATASETS, METRICS, MODELS, TRANSFORMS
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch.utils.data import Dataset


@MODELS.register_module(force=True)
class ToyModel(BaseModel):
    """Loss: mean squared distance of the input vectors (B, 2) to ``w`` (2,)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        if mode == 'loss':
            return dict(loss=((x - self.w) ** 2).mean())
        return [dict(pred=row) for row in (x - self.w)]


@TRANSFORMS.register_module(force=True)
class PipelineMark:
    """A pipeline step that only names the pipeline it belongs to."""

    def __init__(self, name):
        self.name = name

    def __call__(self, results):
        return results


@DATASETS.register_module(force=True)
class ToyDataset(Dataset):
    """``n`` samples, sample i = ``(i, i)``; its ``pipeline`` (what the aug
    switch replaces) is ``[PipelineMark('strong')]``."""

    def __init__(self, n=4):
        self.n = n
        self.pipeline = Compose([PipelineMark('strong')])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(inputs=torch.full((2,), float(i)))


@METRICS.register_module(force=True)
class ScriptedMetric(BaseMetric):
    """Returns ``values[k]`` at its k-th evaluation: a number as
    ``<prefix>/<key>``, a dict as ``<prefix>/<each key>``."""

    def __init__(self, values, key='score', **kwargs):
        super().__init__(**kwargs)
        self.values, self.key, self.calls = list(values), key, 0

    def process(self, data_batch, data_samples):
        self.results.append(0)

    def compute_metrics(self, results):
        value = self.values[self.calls]
        self.calls += 1
        return dict(value) if isinstance(value, dict) else {self.key: value}


def toy_run_config(work_dir: str, *, name: str, epochs: int, val_interval: float,
                   samples: int, scores: Sequence, metric: dict, checkpoint: dict,
                   custom_hooks: List[dict], runner_type: str = 'RTDETRv2Runner',
                   resume_from: Optional[str] = None) -> Config:
    """A run of ``epochs`` x ``samples / 2`` iterations (batch 2) that
    validates every ``val_interval`` epochs with ``ScriptedMetric(scores,
    **metric)``; ``checkpoint``: the ``RTDETRv2CheckpointHook`` arguments;
    ``resume_from``: None, ``'auto'`` (the work dir's last checkpoint) or a
    checkpoint path."""
    return Config(dict(
        default_scope='mmdet',
        runner_type=runner_type,
        # its own logger and visualizer (mmengine keeps one per name, and
        # names loggers by the second the runner is built)
        experiment_name=f'{name}_{uuid.uuid4().hex}',
        model=dict(type='ToyModel'),
        work_dir=str(work_dir),
        train_dataloader=dict(batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              dataset=dict(type='ToyDataset', n=samples)),
        val_dataloader=dict(batch_size=2, num_workers=0,
                            sampler=dict(type='DefaultSampler', shuffle=False),
                            dataset=dict(type='ToyDataset', n=2)),
        val_evaluator=dict(type='ScriptedMetric', values=list(scores), **metric),
        train_cfg=dict(type='RTDETRv2EpochBasedTrainLoop', max_epochs=epochs,
                       val_interval=val_interval),
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0,
                              end=4)],
        default_hooks=dict(checkpoint=dict(type='RTDETRv2CheckpointHook', **checkpoint),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks,
        log_level='WARNING',
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        resume=resume_from is not None,
        load_from=None if resume_from in (None, 'auto') else resume_from,
    ))
