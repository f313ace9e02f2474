"""ONNX export (rtdetr_mm.deployment, tools/deployment/export_onnx.py):
onnxruntime against the UNFUSED PyTorch model, for grid_sample and discrete
sampling, on a CPU-sized RT-DETRv2 (the r18 config reduced to the demo's
size) with realistic random weights at a non-square input."""
import os.path as osp
import re
import subprocess
import sys

import numpy as np
# onnx and onnxruntime are pinned in requirements/tests.txt (`make install`):
# a missing package fails these tests instead of skipping them
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import pytest
import torch

from rtdetr_mm.testing.checkout import checkout_env
from rtdetr_mm.testing.model_utils import redraw_like_trained_

from rtdetr_mm.testing import ROOT
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
# CPU-sized model: the r18 backbone with a 128-channel encoder / decoder, 2
# decoder layers, 100 queries and 4 classes (the size of the demo model).
MODEL_OVERRIDES = dict(
    neck=dict(hidden_dim=128, dim_feedforward=512, num_heads=4),
    bbox_head=dict(num_classes=4, in_channels=(128, 128, 128), hidden_dim=128, num_heads=4,
                   dim_feedforward=512, num_layers=2, num_queries=100,
                   dn_cfg=dict(num_denoising=50)))
INPUT_SIZE = (160, 224)  # (H, W), non-square
SCORE_TOL, BOX_TOL, DISCRETE_BOX_TOL = 5e-4, 0.05, 2.0
# Anchors whose centre lies within 5% of the border are invalid (+inf), as
# the outermost cells of a 640 input are with the default 1%: keeps that path
# in the exported graph at this small size.
HEAD_OVERRIDES = dict(anchor_eps=0.05)

pytestmark = pytest.mark.timeout(300)


def _small_cfg(**head_overrides):
    from mmengine.config import Config
    cfg = Config.fromfile(R18)
    cfg.merge_from_dict(dict(model=MODEL_OVERRIDES))
    cfg.model.bbox_head.update(HEAD_OVERRIDES, **head_overrides)
    return cfg


@torch.no_grad()
def _redraw_(model: torch.nn.Module, seed: int) -> None:
    """Realistic random weights: He-normal matrices, norm weights near 1,
    small biases, random BN statistics; score heads separate tokens sharply
    and box heads refine by small steps, as trained ones do (the official
    init would zero the box deltas and make every box an anchor)."""
    redraw_like_trained_(model, seed)
    head = model.bbox_head
    head.enc_output.proj.bias.zero_()
    head.enc_output.norm.bias.zero_()
    head.enc_score_head.bias.fill_(-4.6)
    head.enc_score_head.weight.mul_(10.0)
    for bbox_head in head.dec_bbox_head:
        bbox_head.layers[-1].weight.mul_(0.1)


@torch.no_grad()
def _calibrate_bn_(model: torch.nn.Module, images: torch.Tensor) -> None:
    """Every BatchNorm's running statistics := those of ``images`` (so the
    activations have a trained network's scale and the BN fold is not a
    near-identity), the variance floored at its per-layer median.

    Random filters make some channels nearly constant on an image; dividing
    them by their tiny std would amplify float noise ~10x through the network
    (a trained network shrinks such channels with the BN weight). Without the
    floor, onnxruntime's and PyTorch's different conv kernels (1e-6 relative)
    reach 1e-4..4e-4 in score, close to the tolerance, for no defect.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    model.train()
    model.bbox_head(model.extract_feat(images))
    for bn in bns:
        bn.momentum = 0.1
        bn.running_var.clamp_(min=float(bn.running_var.median()))
    model.eval()


@torch.no_grad()
def _encoder_topk_gap(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Smallest gap, over the images, between the Nq-th and (Nq+1)-th encoder
    token score: the query selection must not depend on float noise."""
    captured = []
    handle = model.bbox_head.enc_score_head.register_forward_hook(
        lambda mod, inp, out: captured.append(out))
    model.bbox_head(model.extract_feat(images))
    handle.remove()
    best = captured[0].max(-1).values.sort(dim=1, descending=True).values
    k = model.bbox_head.num_queries
    return float((best[:, k - 1] - best[:, k]).min())


def _random_model(sampling_method: str):
    """Unfused small RT-DETRv2 with realistic weights whose encoder
    top-k selection is unambiguous on the check images."""
    from mmdet.registry import MODELS

    from rtdetr_mm.deployment.onnx_export import example_inputs
    cfg = _small_cfg(cross_attn_method=sampling_method)
    calib, _ = example_inputs(2, INPUT_SIZE, seed=7)
    check, _ = example_inputs(2, INPUT_SIZE, seed=1)  # what verify_onnx uses
    for seed in range(5):
        model = MODELS.build(cfg.model)
        _redraw_(model, seed)
        _calibrate_bn_(model, calib)
        if _encoder_topk_gap(model, check) > 2e-4:
            return model
    pytest.fail('could not draw weights with an unambiguous encoder top-k selection')


def _onnx_graph(path):
    import onnx
    return onnx.load(path)


def _conv_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@pytest.fixture(scope='module')
def grid_model():
    return _random_model('default')


def test_grid_sample_export_matches_unfused_pytorch(grid_model, tmp_path):
    from rtdetr_mm.deployment import export_onnx, fuse_for_deploy, verify_onnx
    from rtdetr_mm.models.layers.csp_rep_layer import RepVggBlock
    reference = grid_model
    fused = fuse_for_deploy(reference)
    rep_blocks = [m for m in fused.modules() if isinstance(m, RepVggBlock)]
    assert rep_blocks and all(not hasattr(m, 'conv1') and hasattr(m, 'conv') for m in rep_blocks)
    assert all(hasattr(m, 'conv1') for m in reference.modules() if isinstance(m, RepVggBlock))

    out = str(tmp_path / 'grid.onnx')
    export_onnx(fused, out, INPUT_SIZE, opset=17, batch=1, dynamic_batch=True)

    graph = _onnx_graph(out)
    assert [o.version for o in graph.opset_import if o.domain in ('', 'ai.onnx')] == [17]
    ops = [n.op_type for n in graph.graph.node]
    assert 'GridSample' in ops
    # One Conv per fused conv: each RepVGG block is one 3x3 conv, not two.
    assert ops.count('Conv') == _conv_count(fused) == _conv_count(reference) - len(rep_blocks)
    assert [i.name for i in graph.graph.input] == ['images', 'orig_target_sizes']
    assert [o.name for o in graph.graph.output] == ['labels', 'boxes', 'scores']

    # Traced at batch 1, checked at batch 2 (dynamic axis) against the
    # model BEFORE switch_to_deploy.
    diffs = verify_onnx(out, reference, INPUT_SIZE, batch=2)
    print(f"grid_sample: {diffs}")
    assert diffs['count_mismatches'] == 0 and diffs['matched'] > 300, diffs
    assert diffs['max_score_diff'] < SCORE_TOL and diffs['max_box_diff'] < BOX_TOL, diffs


def test_export_is_deterministic(grid_model, tmp_path):
    from rtdetr_mm.deployment import export_onnx, fuse_for_deploy
    fused = fuse_for_deploy(grid_model)
    first, second = str(tmp_path / 'a.onnx'), str(tmp_path / 'b.onnx')
    export_onnx(fused, first, INPUT_SIZE, opset=16)
    export_onnx(fused, second, INPUT_SIZE, opset=16)
    with open(first, 'rb') as fa, open(second, 'rb') as fb:
        assert fa.read() == fb.read()


def test_postprocessing_equals_head_predict(grid_model):
    """The wrapper's top-K (with orig_target_sizes) equals the detector's own
    mmdet predict path with rescaling to the original image size. Both run
    the fused copy (``predict`` in eval mode runs it; ``fuse_for_deploy`` is
    the same fold), so only the post-processing is compared."""
    from mmdet.structures import DetDataSample

    from rtdetr_mm.deployment import fuse_for_deploy, run_pytorch
    from rtdetr_mm.deployment.onnx_export import example_inputs
    images, sizes = example_inputs(2, INPUT_SIZE, seed=3)
    h, w = INPUT_SIZE
    samples = []
    for w0, h0 in sizes.tolist():
        samples.append(DetDataSample(metainfo=dict(
            img_shape=(h, w), batch_input_shape=(h, w), ori_shape=(h0, w0),
            scale_factor=(w / w0, h / h0))))
    grid_model.channels_last = False  # the same memory format as the fused wrapper's
    grid_model.invalidate_inference_copy()
    try:
        with torch.no_grad():
            results = grid_model.predict(images, samples, rescale=True)
    finally:
        grid_model.channels_last = True
        grid_model.invalidate_inference_copy()
    ours = run_pytorch(fuse_for_deploy(grid_model), INPUT_SIZE, images, sizes)
    for i, result in enumerate(results):
        pred = result.pred_instances
        assert ours['scores'][i].shape == pred.scores.shape == (300, )
        np.testing.assert_array_equal(ours['labels'][i], pred.labels.numpy())
        np.testing.assert_allclose(ours['scores'][i], pred.scores.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours['boxes'][i], pred.bboxes.numpy(), rtol=1e-5, atol=1e-3)


def test_wrong_fusion_is_detected(grid_model):
    """Negative control for the fused-vs-unfused comparison: a fused model
    with one RepVGG bias off by 0.05 must fail the tolerances."""
    from rtdetr_mm.deployment import compare_detections, fuse_for_deploy, run_pytorch
    from rtdetr_mm.deployment.onnx_export import example_inputs
    from rtdetr_mm.models.layers.csp_rep_layer import RepVggBlock
    fused = fuse_for_deploy(grid_model)
    block = next(m for m in fused.neck.modules() if isinstance(m, RepVggBlock))
    with torch.no_grad():
        block.conv.bias.add_(0.05)
    images, sizes = example_inputs(2, INPUT_SIZE, seed=1)
    diffs = compare_detections(run_pytorch(fused, INPUT_SIZE, images, sizes),
                               run_pytorch(grid_model, INPUT_SIZE, images, sizes))
    assert diffs['max_score_diff'] > SCORE_TOL or diffs['max_box_diff'] > BOX_TOL, diffs


def test_input_normalisation_is_folded_in():
    """A config with ImageNet mean/std and BGR input: the [0, 1] RGB ONNX
    input gives the detections of mmdet's data_preprocessor on the BGR
    0-255 image."""
    from mmdet.registry import MODELS

    from rtdetr_mm.deployment import run_pytorch
    from rtdetr_mm.deployment.onnx_export import example_inputs
    cfg = _small_cfg()
    cfg.model.data_preprocessor = dict(
        type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395], bgr_to_rgb=False, pad_size_divisor=32)
    model = MODELS.build(cfg.model)
    _redraw_(model, 0)
    model.eval()
    images, _ = example_inputs(1, INPUT_SIZE, seed=2)
    images = (images * 255).round() / 255  # exactly representable as uint8
    bgr_255 = (images[0].flip(0) * 255).round().to(torch.uint8)
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=INPUT_SIZE, ori_shape=INPUT_SIZE,
                                         scale_factor=(1.0, 1.0)))
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=[bgr_255], data_samples=[sample]))
        ref = model.predict(data['inputs'], data['data_samples'], rescale=False)[0]
    ours = run_pytorch(model, INPUT_SIZE, images)
    np.testing.assert_allclose(ours['scores'][0], ref.pred_instances.scores.numpy(),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours['boxes'][0], ref.pred_instances.bboxes.numpy(),
                               rtol=0, atol=1e-2)


def test_discrete_sampling_export(tmp_path):
    from rtdetr_mm.deployment import export_onnx, fuse_for_deploy, verify_onnx
    reference = _random_model('discrete')
    assert all(layer.cross_attn.method == 'discrete'
               for layer in reference.bbox_head.decoder.layers)
    out = str(tmp_path / 'discrete.onnx')
    export_onnx(fuse_for_deploy(reference), out, INPUT_SIZE, opset=16, batch=2)
    ops = [n.op_type for n in _onnx_graph(out).graph.node]
    assert 'GridSample' not in ops  # the point of discrete sampling
    diffs = verify_onnx(out, reference, INPUT_SIZE, batch=2, margin=5e-3)
    print(f"discrete: {diffs}")
    assert diffs['count_mismatches'] == 0 and diffs['matched'] > 200, diffs
    assert diffs['max_box_diff'] < DISCRETE_BOX_TOL, diffs


def test_cli_end_to_end(grid_model, tmp_path):
    """tools/deployment/export_onnx.py on a saved checkpoint: writes the file,
    prints the differences, exits 0; the file runs in onnxruntime with the
    documented interface."""
    import onnxruntime as ort
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=grid_model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=('square', 'disk', 'triangle',
                                                         'ring')))), ckpt)
    cfg_file = str(tmp_path / 'cfg.py')
    _small_cfg().dump(cfg_file)
    out = str(tmp_path / 'sub' / 'cli.onnx')
    cmd = [sys.executable, osp.join(ROOT, 'tools/deployment/export_onnx.py'), cfg_file, ckpt,
           '--out', out, '--opset', '18', '--image-size', str(INPUT_SIZE[0]),
           str(INPUT_SIZE[1]), '--dynamic-batch']
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=checkout_env(), capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.findall(r'batch (\d+): max score diff (\S+) .*max box diff (\S+) px', proc.stdout)
    assert [int(b) for b, _, _ in found] == [1, 2], proc.stdout
    for _, score, box in found:
        assert float(score) < SCORE_TOL and float(box) < BOX_TOL, proc.stdout

    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    assert [i.name for i in session.get_inputs()] == ['images', 'orig_target_sizes']
    images = np.random.default_rng(0).random((3, 3) + INPUT_SIZE, dtype=np.float32)
    sizes = np.array([[640, 480]] * 3, dtype=np.int64)
    labels, boxes, scores = session.run(['labels', 'boxes', 'scores'],
                                        dict(images=images, orig_target_sizes=sizes))
    k = grid_model.bbox_head.test_cfg['max_per_img']
    assert labels.dtype == np.int64 and labels.shape == (3, k)
    assert boxes.shape == (3, k, 4) and scores.shape == (3, k)
    assert ((labels >= 0) & (labels < 4)).all()
    assert (np.diff(scores, axis=1) <= 0).all() and ((scores >= 0) & (scores <= 1)).all()
