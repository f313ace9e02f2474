"""A training step reads the device on the host once (the matcher's cost
copy): counted with rtdetr_mm.testing.op_counter, which intercepts
``.item()``/``bool``/``nonzero``/``.cpu()``/``.tolist()`` at the dispatcher
and tensor-method level, so the count holds for a GPU although this runs on
the CPU."""
from collections import Counter

import pytest
import torch

from rtdetr_mm.testing.model_utils import build_model, data_samples, random_gts
from rtdetr_mm.testing.op_counter import HostSyncCounter

SHAPE = (96, 96)


def _step_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, *SHAPE, generator=gen)
    boxes, labels = random_gts([3, 2], SHAPE, seed=seed)
    return images, data_samples(boxes, labels, SHAPE)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    model = build_model(num_queries=30, num_layers=3, dn_cfg=dict(num_denoising=20))
    return model.train()


def test_training_step_syncs_once_for_the_matching(model):
    images, samples = _step_inputs()
    with HostSyncCounter() as counter:
        losses = model.loss(images, samples)
        sum(losses.values()).backward()
    assert dict(counter.syncs) == {'Tensor.cpu': 1}, counter.syncs
    assert 'enc_loss_cls' in losses and 'd0.dn_loss_iou' in losses
    assert counter.aten_ops > 500  # the modes saw the backward as well as the forward


def test_counter_sees_item_bool_nonzero_and_host_copies():
    x = torch.arange(6.0)
    with HostSyncCounter() as counter:
        x.sum().item()
        bool(x[0] > 1)
        x.nonzero()
        x[x > 2]
        x.tolist()
        x.cpu()
        x.to('cpu')   # CPU to CPU: not a device-to-host copy
        x * 2         # no sync
    assert counter.syncs == Counter({'aten._local_scalar_dense': 2, 'aten.nonzero': 1,
                                     'aten.index(bool mask)': 1, 'Tensor.tolist': 1,
                                     'Tensor.cpu': 1})
