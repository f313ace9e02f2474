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
from rtdetr_mm.testing.export_models import (BOX_TOL, DISCRETE_BOX_TOL, INPUT_SIZE, SCORE_TOL,
                                             random_model, redraw_, small_cfg)

from rtdetr_mm.testing import ROOT
pytestmark = pytest.mark.timeout(300)


def _onnx_graph(path):
    import onnx
    return onnx.load(path)


def _conv_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


@pytest.fixture(scope='module')
def grid_model():
    return random_model('default')


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
    cfg = small_cfg()
    cfg.model.data_preprocessor = dict(
        type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395], bgr_to_rgb=False, pad_size_divisor=32)
    model = MODELS.build(cfg.model)
    redraw_(model, 0)
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
    reference = random_model('discrete')
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
    small_cfg().dump(cfg_file)
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
