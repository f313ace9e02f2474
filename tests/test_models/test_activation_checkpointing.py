"""Activation checkpointing (``with_cp``) of the backbone and the encoder:
the same outputs and gradients, fewer activations kept for the backward
pass (bytes counted with torch's saved-tensor hooks), and one more forward
of each checkpointed module."""
import copy

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.registry import init_default_scope

import rtdetr_mm  # noqa: F401
from rtdetr_mm.models.backbones.presnet import BasicBlock, BottleNeck


def _saved_bytes_and_grads(module, x):
    """Run forward + backward; bytes of the tensors autograd kept, and the
    gradients of every parameter."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outs = module(x)
    sum(o.float().square().mean() for o in outs).backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    return sum(saved), outs, grads


def _same_outputs_and_grads(ckpt, plain, x):
    """Assert both modules give the same outputs and gradients on ``x``;
    return the bytes each kept for backward."""
    kept_ckpt, outs_ckpt, grads_ckpt = _saved_bytes_and_grads(ckpt, x)
    kept_plain, outs_plain, grads_plain = _saved_bytes_and_grads(plain, x)
    for a, b in zip(outs_ckpt, outs_plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert grads_ckpt.keys() == grads_plain.keys() and grads_plain
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-6, atol=1e-7)
    return kept_ckpt, kept_plain


def _count_forwards(module, types):
    calls = []
    for m in module.modules():
        if isinstance(m, types):
            m.register_forward_pre_hook(lambda *_: calls.append(1))  # recomputation may stop early
    return calls


@pytest.mark.parametrize('depth', [18, 50])
def test_backbone_with_cp_same_gradients_less_kept(depth):
    init_default_scope('mmdet')
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='PResNet', depth=depth, freeze_at=0, freeze_norm=True))
    ckpt = copy.deepcopy(plain)
    for stage in ckpt.res_layers:
        stage.with_cp = True
    plain.train(), ckpt.train()
    x = torch.rand(1, 3, 96, 96)
    calls = _count_forwards(ckpt, (BasicBlock, BottleNeck))
    kept_ckpt, kept_plain = _same_outputs_and_grads(ckpt, plain, x)
    num_blocks = sum(len(stage.blocks) for stage in ckpt.res_layers)
    assert len(calls) == 2 * num_blocks  # forward, then again in the backward
    assert kept_ckpt < 0.5 * kept_plain, (kept_ckpt, kept_plain)


def test_backbone_with_cp_off_in_inference():
    init_default_scope('mmdet')
    model = MODELS.build(dict(type='PResNet', depth=18, with_cp=True))
    calls = _count_forwards(model, BasicBlock)
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert len(calls) == 8 and all(stage.with_cp for stage in model.res_layers)


def test_encoder_with_cp_same_gradients_less_kept():
    from rtdetr_mm.models.layers.aifi_layer import AIFIEncoder
    from rtdetr_mm.models.layers.csp_rep_layer import CSPRepLayer
    init_default_scope('mmdet')
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='RTDETRv2HybridEncoder', in_channels=(32, 64, 128),
                              hidden_dim=32, num_heads=2, dim_feedforward=64))
    # eval-mode BN: the statistics the two runs use are the same (see with_cp's NOTE)
    plain.eval()
    ckpt = copy.deepcopy(plain)
    ckpt.with_cp = True
    feats = [torch.rand(1, c, s, s) for c, s in ((32, 16), (64, 8), (128, 4))]
    calls = _count_forwards(ckpt, (AIFIEncoder, CSPRepLayer))
    kept_ckpt, kept_plain = _same_outputs_and_grads(ckpt, plain, feats)
    assert len(calls) == 2 * (1 + 2 + 2)  # 1 AIFI encoder, 2 FPN + 2 PAN CSP layers
    assert kept_ckpt < 0.6 * kept_plain, (kept_ckpt, kept_plain)
