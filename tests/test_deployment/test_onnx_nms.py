"""ONNX export with test_cfg.score_thr / test_cfg.nms on: onnxruntime equals
PyTorch (the head's mmcv batched_nms), padded outputs + num_dets, and the
export tool's flags and errors."""
import numpy as np
import pytest
import torch
from rtdetr_mm.testing.export_models import (BOX_TOL, INPUT_SIZE, SCORE_TOL, random_model,
                                             small_cfg)

from rtdetr_mm.testing.tools import load_tool

pytestmark = pytest.mark.timeout(300)
NMS_CFG = dict(max_per_img=300, score_thr=0.3, nms=dict(type='nms', iou_threshold=0.5))


@pytest.fixture(scope='module')
def base_model():
    return random_model('default')


def _with_test_cfg(base, test_cfg):
    from mmdet.registry import MODELS
    cfg = small_cfg()
    cfg.model.test_cfg = test_cfg
    model = MODELS.build(cfg.model)
    model.load_state_dict(base.state_dict())
    return model.eval()


def test_onnx_with_nms_matches_pytorch(base_model, tmp_path):
    import onnx

    from rtdetr_mm.deployment import (compare_detections, export_onnx, fuse_for_deploy,
                                      run_onnxruntime, run_pytorch, verify_onnx)
    from rtdetr_mm.deployment.onnx_export import example_inputs
    model = _with_test_cfg(base_model, NMS_CFG)
    out = str(tmp_path / 'nms.onnx')
    export_onnx(fuse_for_deploy(model), out, INPUT_SIZE, dynamic_batch=True)
    graph = onnx.load(out).graph
    assert 'NonMaxSuppression' in [n.op_type for n in graph.node]
    assert [o.name for o in graph.output] == ['labels', 'boxes', 'scores', 'num_dets']
    for batch in (1, 3):
        diffs = verify_onnx(out, model, INPUT_SIZE, batch=batch)
        assert diffs['count_mismatches'] == 0 and diffs['matched'] > 50 * batch, diffs
        assert diffs['max_score_diff'] < SCORE_TOL and diffs['max_box_diff'] < BOX_TOL, diffs
    images, sizes = example_inputs(2, INPUT_SIZE, seed=1)
    ort = run_onnxruntime(out, images, sizes)
    for img in range(2):
        n = int(ort['num_dets'][img])
        assert 0 < n < 300
        assert (ort['scores'][img][:n] > 0.3).all() and (np.diff(ort['scores'][img][:n]) <= 0).all()
        assert (ort['labels'][img][n:] == -1).all() and (ort['scores'][img][n:] == 0).all()
        assert (ort['boxes'][img][n:] == 0).all()
    # negative control: the same file against PyTorch without NMS differs
    plain = run_pytorch(_with_test_cfg(base_model, dict(max_per_img=300)), INPUT_SIZE,
                        images, sizes)
    assert compare_detections(ort, plain)['count_mismatches'] > 0


def test_wrapper_equals_head_predict_with_nms(base_model):
    """The export's PyTorch reference is the head's own predict path."""
    from mmdet.structures import DetDataSample

    from rtdetr_mm.deployment import run_pytorch
    from rtdetr_mm.deployment.onnx_export import example_inputs
    model = _with_test_cfg(base_model, dict(NMS_CFG, nms=dict(type='nms', iou_threshold=0.5,
                                                              class_agnostic=True)))
    images, sizes = example_inputs(2, INPUT_SIZE, seed=3)
    h, w = INPUT_SIZE
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w), batch_input_shape=(h, w),
                                           ori_shape=(h0, w0), scale_factor=(w / w0, h / h0)))
               for w0, h0 in sizes.tolist()]
    with torch.no_grad():
        results = model.predict(images, samples, rescale=True)
    ours = run_pytorch(model, INPUT_SIZE, images, sizes)
    for i, result in enumerate(results):
        pred, n = result.pred_instances, int(ours['num_dets'][i])
        assert n == len(pred.scores) > 0
        np.testing.assert_array_equal(ours['labels'][i][:n], pred.labels.numpy())
        np.testing.assert_allclose(ours['scores'][i][:n], pred.scores.numpy(), atol=SCORE_TOL)  # fused NHWC copy


def test_cli_flags_class_agnostic(base_model, tmp_path, capsys):
    import onnxruntime as ort
    from mmdet.structures.bbox import bbox_overlaps
    ckpt = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=base_model.state_dict()), ckpt)
    cfg_file = str(tmp_path / 'cfg.py')
    small_cfg().dump(cfg_file)
    tool = load_tool('deployment/export_onnx')
    out = str(tmp_path / 'cli.onnx')
    argv = [cfg_file, ckpt, '--out', out, '--image-size', str(INPUT_SIZE[0]),
            str(INPUT_SIZE[1]), '--score-thr', '0.3', '--nms-iou', '0.5',
            '--nms-class-agnostic']
    assert tool.main(argv) == 0
    stdout = capsys.readouterr().out
    assert 'score_thr 0.3, class-agnostic NMS at IoU 0.5' in stdout and 'OK' in stdout
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    images = np.random.default_rng(0).random((1, 3) + INPUT_SIZE, dtype=np.float32)
    labels, boxes, scores, num = session.run(
        None, dict(images=images, orig_target_sizes=np.array([[640, 480]], np.int64)))
    kept = torch.from_numpy(boxes[0][:int(num[0])])
    assert len(kept) > 1
    iou = bbox_overlaps(kept, kept) - torch.eye(len(kept))
    assert float(iou.max()) <= 0.5  # no two boxes overlap above the IoU, any class

    assert tool.main(argv[:-3] + ['--nms-iou', '1.5']) == 1
    err = capsys.readouterr().err
    assert f'error: {cfg_file}: model.test_cfg.nms.iou_threshold=1.5: must be a number in (0, 1]' in err
