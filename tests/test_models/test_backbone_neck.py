"""PResNet structure and freezing, hybrid-encoder structure and RepVGG fusion."""
import pytest
import torch

from rtdetr_mm.models.backbones import PResNet
from rtdetr_mm.models.layers.frozen_bn import FrozenBatchNorm2d
from rtdetr_mm.models.necks import RTDETRv2HybridEncoder


@pytest.mark.parametrize('depth,channels', [(18, [128, 256, 512]), (50, [512, 1024, 2048])])
def test_presnet_outputs_and_vd_shortcuts(depth, channels):
    net = PResNet(depth=depth).eval()
    with torch.no_grad():
        outs = net(torch.rand(1, 3, 96, 128))
    assert [o.shape[1] for o in outs] == channels
    assert [tuple(o.shape[2:]) for o in outs] == [(12, 16), (6, 8), (3, 4)]
    # Stem 32-32-64, projection on stage 0 (plain 1x1), avg-pool + 1x1 later.
    assert [net.conv1[i].conv.out_channels for i in range(3)] == [32, 32, 64]
    assert isinstance(net.res_layers[0].blocks[0].short.conv, torch.nn.Conv2d)
    for stage in net.res_layers[1:]:
        assert isinstance(stage.blocks[0].short.pool, torch.nn.AvgPool2d)
        assert not stage.blocks[1].project


def test_presnet_freeze_at_and_freeze_norm():
    net = PResNet(depth=18, freeze_at=1, freeze_norm=True)
    assert not any(p.requires_grad for p in net.conv1.parameters())
    assert not any(p.requires_grad for p in net.res_layers[0].parameters())
    assert all(p.requires_grad for p in net.res_layers[1].parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    trainable = PResNet(depth=18, freeze_at=-1, freeze_norm=False)
    assert all(p.requires_grad for p in trainable.parameters())


def test_frozen_bn_equals_batchnorm_in_eval():
    bn = torch.nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5); bn.bias.normal_(); bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-5, atol=1e-5)
    # A trainable BN's state dict (with num_batches_tracked) loads.
    frozen.load_state_dict(bn.state_dict())


@pytest.mark.parametrize('expansion,depth_mult', [(1.0, 1.0), (0.5, 1.0), (0.5, 0.34)])
def test_hybrid_encoder_structure(expansion, depth_mult):
    neck = RTDETRv2HybridEncoder(in_channels=(32, 64, 128), hidden_dim=64, num_heads=4,
                                 dim_feedforward=128, expansion=expansion, depth_mult=depth_mult)
    block = neck.fpn_blocks[0]
    assert len(block.bottlenecks) == round(3 * depth_mult)
    assert block.conv1.conv.out_channels == int(64 * expansion)
    assert isinstance(block.conv3, torch.nn.Identity) == (expansion == 1.0)
    outs = neck([torch.rand(2, 32, 16, 20), torch.rand(2, 64, 8, 10), torch.rand(2, 128, 4, 5)])
    assert [tuple(o.shape) for o in outs] == [(2, 64, 16, 20), (2, 64, 8, 10), (2, 64, 4, 5)]


def test_repvgg_fusion_leaves_outputs_unchanged():
    torch.manual_seed(0)
    neck = RTDETRv2HybridEncoder(in_channels=(32, 64, 128), hidden_dim=64, num_heads=4,
                                 dim_feedforward=128, expansion=0.5)
    # Non-trivial BN statistics: a few training-mode passes.
    feats = [torch.randn(2, 32, 16, 16), torch.randn(2, 64, 8, 8), torch.randn(2, 128, 4, 4)]
    neck.train()
    with torch.no_grad():
        for _ in range(3):
            neck([f * 3 + 1 for f in feats])
    neck.eval()
    with torch.no_grad():
        before = neck(feats)
        neck.switch_to_deploy()
        after = neck(feats)
    assert not any(hasattr(m, 'conv1') and hasattr(m, 'conv') and m.__class__.__name__ == 'RepVggBlock'
                   for m in neck.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
