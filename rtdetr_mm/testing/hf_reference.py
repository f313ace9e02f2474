"""Independent reference: transformers' RTDetrV2ForObjectDetection with
re-drawn, realistic weights, and helpers to compare detections."""
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .model_utils import redraw_like_trained_

SIZES = {
    # name: (HF backbone kwargs, HF model kwargs, our config)
    'r18vd': (dict(hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type='basic'),
              dict(encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=3),
              'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py'),
    'r34vd': (dict(hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3], layer_type='basic'),
              dict(encoder_in_channels=[128, 256, 512], hidden_expansion=0.5, decoder_layers=4),
              'configs/rtdetrv2/rtdetrv2_r34vd_4xb4-120e_coco.py'),
    'r50vd': (dict(hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
                   layer_type='bottleneck'),
              dict(decoder_layers=6),
              'configs/rtdetrv2/rtdetrv2_r50vd_4xb4-72e_coco.py'),
    'r101vd': (dict(hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 23, 3],
                    layer_type='bottleneck'),
               dict(decoder_layers=6, encoder_ffn_dim=2048, encoder_hidden_dim=384,
                    decoder_in_channels=[384, 384, 384]),
               'configs/rtdetrv2/rtdetrv2_r101vd_4xb4-72e_coco.py'),
}


def build_hf_model(size: str, seed: int = 0, image: torch.Tensor = None, **overrides):
    """A transformers RT-DETRv2 of the given size with realistic random weights.

    Every parameter and buffer is re-drawn (He-normal matrices, norm weights
    near 1, small biases), then BN running statistics are calibrated on
    ``image`` so activations have a trained network's scale. transformers'
    own init would zero the sampling offsets, attention weights and last box
    layers and hide a wrong key map.
    """
    from transformers import RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection
    bb_kwargs, kwargs, _ = SIZES[size]
    backbone = RTDetrResNetConfig(out_features=['stage2', 'stage3', 'stage4'], **bb_kwargs)
    kwargs = dict(kwargs, num_labels=80, freeze_backbone_batch_norms=False, **overrides)
    config = RTDetrV2Config(backbone_config=backbone, **kwargs)
    config.id2label = {i: f'thing{i}' for i in range(80)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(seed)
    model = RTDetrV2ForObjectDetection(config)
    redraw_(model, seed)
    if image is not None:
        calibrate_bn_(model, image)
    if bb_kwargs['layer_type'] == 'bottleneck':
        # r50/r101 freeze the backbone BN (official recipe and transformers'
        # default): swap in transformers' FrozenBatchNorm2d after calibration.
        from transformers.models.rt_detr_v2.modeling_rt_detr_v2 import replace_batch_norm
        replace_batch_norm(model.model.backbone)
        model.config.freeze_backbone_batch_norms = True
    return model.eval()


@torch.no_grad()
def redraw_(model: torch.nn.Module, seed: int) -> None:
    redraw_like_trained_(model, seed)
    # Tokens on invalid anchors have zeroed memory, so they all get the same
    # score: keep that plateau far below the top-300 boundary (official class
    # prior bias, no LN shift).
    m = model.model
    m.enc_output[0].bias.zero_()
    m.enc_output[1].bias.zero_()
    m.enc_score_head.bias.fill_(-4.6)
    # A trained score head separates tokens sharply; with He-normal weights on
    # LayerNorm-ed features the token scores fall in a band < 1 logit wide and
    # the top-300 boundary is decided by 1e-5 differences.
    m.enc_score_head.weight.mul_(10.0)
    # Trained decoders refine boxes by small steps (the official init zeroes
    # these layers); full He-normal deltas make 6 refinement steps amplify
    # float noise ~40x. Keep them non-zero but small.
    for head in m.decoder.bbox_embed:
        head.layers[-1].weight.mul_(0.1)


@torch.no_grad()
def calibrate_bn_(model: torch.nn.Module, image: torch.Tensor) -> None:
    """Set every BatchNorm's running stats to the statistics of ``image``."""
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    model(pixel_values=image)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def make_image(h: int = 640, w: int = 640, seed: int = 0) -> np.ndarray:
    """A smooth random RGB uint8 image with some rectangles."""
    rng = np.random.default_rng(seed)
    low = rng.random((h // 32 + 1, w // 32 + 1, 3))
    img = np.kron(low, np.ones((32, 32, 1)))[:h, :w]
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        x1, y1 = x0 + rng.integers(20, w // 3), y0 + rng.integers(20, h // 3)
        img[y0:y1, x0:x1] = rng.random(3)
    img = img + rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@torch.no_grad()
def hf_detections(model, rgb: np.ndarray, k: int = 300):
    """Top-k over sigmoid scores of queries x classes, boxes xyxy pixels."""
    pixel_values = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    out = model(pixel_values=pixel_values)
    scores = out.logits[0].sigmoid()
    num_classes = scores.shape[1]
    top, idx = scores.flatten().topk(k)
    boxes = out.pred_boxes[0][idx // num_classes]
    h, w = rgb.shape[:2]
    cx, cy, bw, bh = boxes.unbind(-1)
    xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
    xyxy = xyxy * torch.tensor([w, h, w, h])
    return dict(scores=top.numpy(), labels=(idx % num_classes).numpy(), bboxes=xyxy.numpy()), out


def topk_gap(out, k: int = 300) -> float:
    """Gap between the k-th and (k+1)-th encoder token score (selection margin)."""
    best = out.enc_outputs_class[0].max(-1).values.sort(descending=True).values
    return float(best[k - 1] - best[k])


def compare_detections(ours: dict, ref: dict, margin: float = 1e-3):
    """Match two detection sets by (label, score, box) and return the largest
    score and box (px) differences, ignoring detections within ``margin`` of
    the top-k cut-off (they may enter or leave the top-k on float noise).

    Returns:
        tuple[float, float, int]: max |score diff|, max |box diff| (px),
        number of matched detections. Score diff is inf when the kept sets
        differ in size per label.
    """
    cut = max(ours['scores'].min(), ref['scores'].min()) + margin
    max_score, max_box, matched = 0.0, 0.0, 0
    for label in np.union1d(ours['labels'], ref['labels']):
        a = (ours['labels'] == label) & (ours['scores'] > cut)
        b = (ref['labels'] == label) & (ref['scores'] > cut)
        if a.sum() != b.sum():
            return float('inf'), float('inf'), matched
        if not a.any():
            continue
        sa, sb = ours['scores'][a], ref['scores'][b]
        ba, bb = ours['bboxes'][a], ref['bboxes'][b]
        cost = np.abs(sa[:, None] - sb[None]) * 1e3 + np.abs(ba[:, None] - bb[None]).mean(-1)
        rows, cols = linear_sum_assignment(cost)
        max_score = max(max_score, float(np.abs(sa[rows] - sb[cols]).max()))
        max_box = max(max_box, float(np.abs(ba[rows] - bb[cols]).max()))
        matched += len(rows)
    return max_score, max_box, matched
