"""The non-finite guard reads the device once, not once per loss term or
per weight (issue 15 item 5, cheap fixes): counted with
``rtdetr_mm.testing.op_counter`` (``.item()``/``bool``/``.tolist()``/
``.cpu()`` at the dispatcher and tensor-method level), so the count holds
for a GPU although this runs on the CPU."""
import math

import torch

from rtdetr_mm.engine.hooks.nonfinite_hook import nonfinite_entries, nonfinite_terms
from rtdetr_mm.testing.op_counter import HostSyncCounter


def test_nonfinite_terms_one_host_read_for_every_term():
    log_vars = {'loss_cls': torch.tensor(0.5), 'loss_bbox': torch.tensor(float('nan')),
                'd0.loss_iou': torch.tensor([1.0, float('inf')]), 'acc': torch.tensor(float('nan')),
                'enc_loss_cls': 0.25, 'loss': torch.tensor(float('nan'))}
    with HostSyncCounter() as counter:
        bad = nonfinite_terms(log_vars)
    assert counter.total == 1, counter.syncs
    # the terms first, their sum last; 'acc' is not a loss; means as before
    assert [term.split('=')[0] for term in bad] == ['loss_bbox', 'd0.loss_iou', 'loss']
    assert math.isinf(float(bad[1].split('=')[1])) and bad[0].endswith('=nan')
    with HostSyncCounter() as counter:
        assert nonfinite_terms({'loss_cls': torch.tensor(0.1), 'loss': torch.tensor(0.1)}) == []
    assert counter.total == 1


def test_nonfinite_entries_one_host_read_per_device():
    state = {'a.weight': torch.ones(3), 'a.bias': torch.tensor([0.0, float('nan')]),
             'steps': torch.tensor(3), 'b.weight': torch.full((2, 2), float('-inf')),
             'c.weight': torch.zeros(2)}
    with HostSyncCounter() as counter:
        bad = nonfinite_entries(state)
    assert bad == ['a.bias', 'b.weight']
    assert counter.total == 1, counter.syncs
