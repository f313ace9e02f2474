"""Build rtdetr_mm models from the shipped configs for tests."""
import os.path as osp

import torch
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import HorizontalBoxes
from mmengine.config import Config
from mmengine.structures import InstanceData

from . import ROOT

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')


def build_model(config: str = R18, **head_overrides):
    cfg = Config.fromfile(config)
    cfg.model.bbox_head.update(head_overrides)
    return MODELS.build(cfg.model)


def save_random_checkpoint(config: str, path: str, classes, seed: int = 0) -> torch.nn.Module:
    """Build ``config``'s model with random weights (``torch.manual_seed(seed)``)
    and save it to ``path`` as a checkpoint whose ``meta.dataset_meta`` holds
    ``classes`` (what ``tools/test.py`` and the inference tools read);
    returns the model."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(config).model)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=tuple(classes)))), path)
    return model


def data_samples(boxes_xyxy, labels, shape):
    """DetDataSamples with GT boxes (xyxy pixels of the input) and metas."""
    samples = []
    for b, l in zip(boxes_xyxy, labels):
        ds = DetDataSample(metainfo=dict(img_shape=shape, batch_input_shape=shape,
                                         ori_shape=shape, scale_factor=(1.0, 1.0)))
        ds.gt_instances = InstanceData(bboxes=HorizontalBoxes(torch.as_tensor(b).float().reshape(-1, 4)),
                                       labels=torch.as_tensor(l).long())
        samples.append(ds)
    return samples


def random_gts(num_per_image, shape, num_classes=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    boxes, labels = [], []
    for n in num_per_image:
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3]) + 8
        boxes.append(torch.cat([xy, xy + wh], 1))
        labels.append(torch.randint(0, num_classes, (n,), generator=gen))
    return boxes, labels


@torch.no_grad()
def redraw_like_trained_(model: torch.nn.Module, seed: int) -> None:
    """Random weights with a trained network's scales, from ``seed``:
    He-normal matrices, norm weights in [0.75, 1.25), small biases
    (N(0, 0.1)), random BN running statistics. Parameters and buffers are
    drawn in ``named_parameters`` / ``named_buffers`` order (transformers'
    model and ours differ in order, so they do not get the same values)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
        elif 'norm' in name and name.endswith('weight'):
            p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.75)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for name, b in model.named_buffers():
        if name.endswith('running_mean'):
            b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
        elif name.endswith('running_var'):
            b.copy_(torch.rand(b.shape, generator=gen) + 0.5)


@torch.no_grad()
def calibrate_batch_norms_(detector: torch.nn.Module, images: torch.Tensor) -> None:
    """Every ``nn.BatchNorm2d``'s running statistics := those of its input on
    ``images`` (B, 3, H, W) (one training-mode pass, momentum 1), the
    variance floored at its per-layer median; the detector is left in eval
    mode. Activations then have a trained network's scale, so folding a BN
    is not a near-identity, and the floor keeps nearly constant channels of
    random filters from amplifying float noise (a trained network shrinks
    them with the BN weight). Call it before freezing norms: a
    ``FrozenBatchNorm2d`` is not calibrated."""
    bns = [m for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 1.0
    detector.train()
    detector.bbox_head(detector.extract_feat(images))
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        bn.running_var.clamp_(min=float(bn.running_var.median()))
    detector.eval()
