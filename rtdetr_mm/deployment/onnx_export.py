"""ONNX export of RT-DETRv2: a traceable end-to-end wrapper (pixels in,
top-K detections out), fusion (RepVGG merged, BN folded), export and an
onnxruntime check.

The exported graph::

    images (B, 3, H, W) float32, RGB, values in [0, 1]
    orig_target_sizes (B, 2) int64, (w, h) of each original image  [optional]
      -> pixel normalisation of the config's data_preprocessor (folded in)
      -> backbone -> hybrid encoder (RepVGG and BN fused) -> RTDETRv2Head decoder
      -> sigmoid, top-K over (query, class) pairs   (RTDETRv2Head.predict)
      [-> test_cfg.score_thr, test_cfg.nms: ONNX NonMaxSuppression]  (when set)
    labels (B, K) int64, boxes (B, K, 4) float32 xyxy pixels, scores (B, K)
    [num_dets (B,) int64]                                            (when set)

With the model's ``test_cfg.score_thr`` or ``test_cfg.nms`` set (the same
keys and code as ``RTDETRv2Head.predict``: ``models/layers/postprocess.py``),
the shapes stay fixed: row ``b`` holds its ``num_dets[b]`` kept detections
first, by score, then padding (label -1, box 0, score 0). Without them the
graph and its three outputs are exactly as before.

Boxes are in pixels of ``orig_target_sizes`` when that input is present (the
official deploy model's convention: the image was resized to H x W without
keeping the aspect ratio), else in pixels of the H x W network input.

NOTE (exporter): we use the TorchScript exporter (``dynamo=False``). torch
2.13 still ships it (deprecated); it needs no ``onnxscript``, handles
``grid_sample`` (GridSample, opset >= 16) and the discrete sampler (Gather)
directly, honours ``dynamic_axes`` for a dynamic batch and writes one
self-contained file. The dynamo exporter (torch 2.13's default) would add
``onnxscript`` as a dependency and re-trace the anchor / position-embedding
caches of the model as fake tensors.

NOTE (TensorRT): ops in the graph that TensorRT may treat specially:
``GridSample`` (default sampling) needs TensorRT >= 8.5 -- use
``sampling='discrete'`` (Gather on int64 indices, no GridSample) for older
versions; ``TopK`` over N_q * C scores, ``Gather``/``GatherElements`` on
int64 indices (TensorRT computes them in int32) and the int64 ``labels``
output (TensorRT < 10 returns int32). Invalid encoder anchors are +inf
constants (only reached through ``sigmoid``); TensorRT accepts them.
"""
import itertools
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import linear_sum_assignment

from rtdetr_mm.datasets.walk import first_resize_scale, leaf_datasets
from rtdetr_mm.models.detectors.checkpoint_fit import require_exact_fit
from rtdetr_mm.models.layers.postprocess import (duplicate_control, keep_mask, pad_kept,
                                                 topk_detections)
from rtdetr_mm.models.layers.reparameterize import reparameterized_copy
from rtdetr_mm.engine.runner.image_size import check_image_size, resolved_copy

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (16, 17, 18)
SAMPLING_METHODS = {'grid_sample': 'default', 'discrete': 'discrete'}
INPUT_NAMES = ('images', 'orig_target_sizes')
OUTPUT_NAMES = ('labels', 'boxes', 'scores')
#: with ``test_cfg.score_thr`` / ``test_cfg.nms``: the kept count per image
FILTERED_OUTPUT_NAMES = OUTPUT_NAMES + ('num_dets', )


class RTDETRv2ONNXWrapper(nn.Module):
    """End-to-end RT-DETRv2 for export: [0, 1] RGB pixels -> top-K detections.

    The config's ``data_preprocessor`` is folded in: the input is scaled to
    0-255, put in the channel order the model was trained on (RGB when
    ``bgr_to_rgb=True``, as in every shipped config) and normalised with its
    ``mean``/``std``. With the RT-DETRv2 configs (mean 0, std 255) this is the
    identity and the network sees ``images`` unchanged.

    Args:
        detector (nn.Module): An ``RTDETRv2`` detector in eval mode (fused or
            not); its ``data_preprocessor``, ``bbox_head.num_classes`` and
            ``bbox_head.test_cfg`` (``max_per_img``, ``score_thr``, ``nms``)
            are read.
        input_size (tuple[int, int]): (H, W) of the network input; boxes are
            in its pixels when ``orig_target_sizes`` is not given.
    """

    def __init__(self, detector: nn.Module, input_size: Tuple[int, int]) -> None:
        super().__init__()
        self.detector = detector
        self.input_size = (int(input_size[0]), int(input_size[1]))
        head = detector.bbox_head
        self.num_classes = int(head.num_classes)
        self.max_per_img = head.max_per_img
        self.score_thr, self.nms_cfg = duplicate_control(head.test_cfg)
        preprocessor = detector.data_preprocessor
        # Model channel order = loading order (BGR) unless the preprocessor
        # converts it; the ONNX input is always RGB.
        self.rgb_to_model_order = not getattr(preprocessor, '_channel_conversion', False)
        device = model_device(detector)
        if getattr(preprocessor, '_enable_normalize', False):
            mean = preprocessor.mean.detach().float().reshape(1, -1, 1, 1).to(device)
            std = preprocessor.std.detach().float().reshape(1, -1, 1, 1).to(device)
        else:
            mean = torch.zeros(1, 1, 1, 1, device=device)
            std = torch.ones(1, 1, 1, 1, device=device)
        # images in [0, 1] -> (255 * images - mean) / std = images * scale + offset
        scale, offset = 255.0 / std, -mean / std
        self.identity_normalisation = bool(
            torch.allclose(scale, torch.ones_like(scale))
            and torch.allclose(offset, torch.zeros_like(offset)))
        self.register_buffer('pixel_scale', scale, persistent=False)
        self.register_buffer('pixel_offset', offset, persistent=False)

    @property
    def filters(self) -> bool:
        """Whether ``score_thr`` or ``nms`` is on (then a 4th output,
        ``num_dets``)."""
        return self.score_thr is not None or self.nms_cfg is not None

    @property
    def output_names(self) -> Tuple[str, ...]:
        return FILTERED_OUTPUT_NAMES if self.filters else OUTPUT_NAMES

    def forward(self, images: torch.Tensor,
                orig_target_sizes: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            images (Tensor): (B, 3, H, W) float RGB in [0, 1], already resized
                to ``input_size``.
            orig_target_sizes (Tensor, optional): (B, 2) (w, h) of the
                original images (any numeric dtype).

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``labels`` (B, K) int64, ``boxes``
            (B, K, 4) xyxy pixels of ``orig_target_sizes`` (else of the
            input), ``scores`` (B, K) in [0, 1], sorted by score; with
            :attr:`filters`, also ``num_dets`` (B,) int64, the rows padded
            after it (see :func:`pad_kept`).
        """
        x = images
        if self.rgb_to_model_order:
            x = x[:, [2, 1, 0]]
        if not self.identity_normalisation:
            x = x * self.pixel_scale.to(x.dtype) + self.pixel_offset.to(x.dtype)
        feats = self.detector.extract_feat(x)
        outs = self.detector.bbox_head(feats)
        if orig_target_sizes is None:
            h, w = self.input_size
            sizes_wh = images.new_tensor([[w, h]])
        else:
            sizes_wh = orig_target_sizes
        labels, boxes, scores = topk_detections(outs.cls_scores[-1], outs.bbox_preds[-1],
                                                sizes_wh, self.num_classes,
                                                self.max_per_img)
        if not self.filters:
            return labels, boxes, scores
        keep = keep_mask(labels, boxes, scores, self.score_thr, self.nms_cfg)
        return pad_kept(labels, boxes, scores, keep)


def sampling_cfg_options(sampling: str) -> Dict[str, str]:
    """``cfg_options`` selecting the deformable sampling of the decoder
    (``model.bbox_head.cross_attn_method``).

    Args:
        sampling (str): ``'grid_sample'`` (bilinear ``F.grid_sample``, the
            default of every config) or ``'discrete'`` (nearest pixel by
            indexing, no GridSample op).
    """
    if sampling not in SAMPLING_METHODS:
        raise ValueError(f'sampling must be one of {sorted(SAMPLING_METHODS)}, got {sampling!r}')
    return {'model.bbox_head.cross_attn_method': SAMPLING_METHODS[sampling]}


def build_detector(config: str, checkpoint: Optional[str], sampling: str = 'grid_sample',
                   device: str = 'cpu', cfg_options: Optional[dict] = None) -> nn.Module:
    """Build an RT-DETRv2 detector from a config and load a checkpoint.

    Goes through ``mmdet.apis.init_detector``, whose mmengine loader reads
    the checkpoint with ``torch.load(weights_only=True)`` and the allow-list
    that ``import rtdetr_mm`` registers (no unrestricted unpickling). The
    checkpoint must fit the config exactly, number of classes included
    (``model.checkpoint_fit='exact'`` unless the config sets ``'off'``): an
    exported graph with random class layers would be deployable garbage.

    Args:
        config (str): Config file path.
        checkpoint (str, optional): Checkpoint path; None keeps the init weights.
        sampling (str): ``'grid_sample'`` or ``'discrete'`` (overrides
            ``model.bbox_head.cross_attn_method``).
        device (str): Device to build on.
        cfg_options (dict, optional): More config keys to override (as
            ``--cfg-options``), e.g. ``model.test_cfg.score_thr``.

    Returns:
        nn.Module: The detector in eval mode, not fused.

    Raises:
        CheckpointMismatchError: the checkpoint does not fit the config.
        DuplicateControlError: ``model.test_cfg.score_thr`` / ``nms`` invalid.
        IsADirectoryError: ``checkpoint`` is a directory.
        TypeError: the config's model is not an RT-DETRv2.
    """
    import rtdetr_mm  # noqa: F401  (registers the modules and the allow-list)
    from mmdet.apis import init_detector
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(sampling_cfg_options(sampling))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    require_exact_fit(cfg.model)
    duplicate_control(cfg.model.get('test_cfg'), key=f'{config}: model.test_cfg')
    model = init_detector(cfg, checkpoint, device=device)
    if not hasattr(model, 'bbox_head') or not hasattr(model.bbox_head, 'decoder'):
        raise TypeError(f'{config}: model.type must be RTDETRv2 (got '
                        f'{type(model).__name__}); only RT-DETRv2 exports with this tool')
    return model.eval()


def fuse_for_deploy(detector: nn.Module) -> nn.Module:
    """A fused copy of ``detector`` (RepVGG branches -> one 3x3 conv each,
    every BN folded into its conv): ``reparameterized_copy``, the copy the
    detector's own inference runs; ``detector`` itself is left unfused.

    Returns:
        nn.Module: The fused copy, in eval mode.
    """
    return reparameterized_copy(detector)


def config_input_size(config: str) -> Tuple[int, int]:
    """(H, W) of the test pipeline's ``Resize`` in ``config`` (after the
    ``image_size`` knob), found through dataset wrappers and nested
    transforms; (640, 640) when the test pipeline has none."""
    from mmengine.config import Config
    cfg = resolved_copy(Config.fromfile(config))
    nodes = leaf_datasets((cfg.get('test_dataloader') or {}).get('dataset'),
                          'test_dataloader.dataset')
    found = first_resize_scale(nodes[0].pipelines) if nodes else None
    size = (640, 640) if found is None else found[:2]
    return check_image_size(size, key=f'{config}: the test pipeline\'s Resize scale')


def model_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for
    a module with neither."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device('cpu')


def example_inputs(batch: int, input_size: Tuple[int, int], seed: int = 0,
                   device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs for tracing and checking: smooth random RGB
    images in [0, 1] with rectangles (B, 3, H, W) and their (w, h) original
    sizes (B, 2) int64 (the input size scaled by 1.0, 1.5, 2.0, ...).

    Drawn on the CPU (the same values whatever the device), then moved to
    ``device`` (default: the CPU)."""
    h, w = input_size
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(h // 16, 1), max(w // 16, 1), generator=gen)
    images = torch.nn.functional.interpolate(low, size=(h, w), mode='bilinear',
                                             align_corners=False)
    for b in range(batch):
        for _ in range(6):
            y0 = int(torch.randint(0, h - h // 8, (1,), generator=gen))
            x0 = int(torch.randint(0, w - w // 8, (1,), generator=gen))
            y1 = y0 + int(torch.randint(h // 16 + 1, h // 3 + 2, (1,), generator=gen))
            x1 = x0 + int(torch.randint(w // 16 + 1, w // 3 + 2, (1,), generator=gen))
            images[b, :, y0:y1, x0:x1] = torch.rand(3, 1, 1, generator=gen)
    images = (images + 0.02 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    factors = 1.0 + 0.5 * torch.arange(batch, dtype=torch.float64)
    sizes = torch.stack([w * factors, h * factors], 1).round().to(torch.int64)
    if device is not None:
        images, sizes = images.to(device), sizes.to(device)
    return images, sizes


def export_onnx(detector: nn.Module, out_file: str, input_size: Tuple[int, int],
                opset: int = DEFAULT_OPSET, batch: int = 1, dynamic_batch: bool = False,
                with_orig_target_sizes: bool = True) -> str:
    """Trace ``detector`` (fuse it first) wrapped in
    :class:`RTDETRv2ONNXWrapper` and write ``out_file``.

    The export is deterministic: fixed example inputs, eval mode, caches
    (anchors, position embeddings) built before tracing so they are graph
    constants, constant folding on.

    Args:
        detector (nn.Module): RT-DETRv2 detector (eval mode).
        out_file (str): Output ``.onnx`` path.
        input_size (tuple[int, int]): (H, W), multiples of 32. The spatial
            size is static in the graph (anchors and the deformable sampling
            grid depend on it).
        opset (int): ONNX opset, 16, 17 or 18 (what TensorRT parses).
        batch (int): Batch size of the traced example (the static batch
            unless ``dynamic_batch``).
        dynamic_batch (bool): Make the batch axis of every input and output
            dynamic (``N``).
        with_orig_target_sizes (bool): Add the ``orig_target_sizes`` input.

    Returns:
        str: ``out_file``.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f'opset must be one of {SUPPORTED_OPSETS} (TensorRT), got {opset}')
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    input_size = check_image_size(tuple(input_size), key='input_size')
    wrapper = RTDETRv2ONNXWrapper(detector, input_size).eval()
    images, sizes = example_inputs(batch, input_size, device=model_device(detector))
    args = (images, sizes) if with_orig_target_sizes else (images, )
    input_names = list(INPUT_NAMES[:len(args)])
    output_names = list(wrapper.output_names)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: 'N'} for name in input_names + output_names}
    with torch.no_grad():
        wrapper(*args)  # fills the anchor / position-embedding caches
        torch.onnx.export(wrapper, args, out_file, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    _finalise(out_file)
    return out_file


def _finalise(onnx_file: str) -> None:
    """Write the inferred static output shapes (K, 4) into the graph
    outputs (the TorchScript exporter leaves K symbolic when the batch is
    dynamic) and validate the file with ``onnx.checker``."""
    import onnx
    model = onnx.load(onnx_file)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    for output, typed in zip(model.graph.output, inferred.graph.output):
        output.type.CopyFrom(typed.type)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, onnx_file)


def run_onnxruntime(onnx_file: str, images: torch.Tensor,
                    orig_target_sizes: Optional[torch.Tensor] = None
                    ) -> Dict[str, np.ndarray]:
    """Run the exported file with onnxruntime on CPU.

    Returns:
        dict[str, np.ndarray]: ``labels`` (B, K), ``boxes`` (B, K, 4) xyxy
        pixels, ``scores`` (B, K) (and ``num_dets`` (B,) when the graph has
        that output).
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_file, options, providers=['CPUExecutionProvider'])
    feeds = {'images': images.detach().cpu().numpy().astype(np.float32)}
    graph_inputs = [i.name for i in session.get_inputs()]
    if 'orig_target_sizes' in graph_inputs:
        if orig_target_sizes is None:
            raise ValueError(f'{onnx_file} has an orig_target_sizes input: pass (B, 2) (w, h)')
        feeds['orig_target_sizes'] = orig_target_sizes.cpu().numpy().astype(np.int64)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


@torch.no_grad()
def run_pytorch(detector: nn.Module, input_size: Tuple[int, int], images: torch.Tensor,
                orig_target_sizes: Optional[torch.Tensor] = None) -> Dict[str, np.ndarray]:
    """The same end-to-end computation in PyTorch (same keys and shapes as
    :func:`run_onnxruntime`), on the detector's device: the inputs are moved
    there, the outputs back to the host."""
    wrapper = RTDETRv2ONNXWrapper(detector, input_size).eval()
    device = model_device(detector)
    if orig_target_sizes is not None:
        orig_target_sizes = orig_target_sizes.to(device)
    outputs = wrapper(images.to(device), orig_target_sizes)
    return {name: out.cpu().numpy() for name, out in zip(wrapper.output_names, outputs)}


def compare_detections(ours: Dict[str, np.ndarray], ref: Dict[str, np.ndarray],
                       margin: float = 1e-3) -> Dict[str, float]:
    """Match two batches of top-K detections as sets and report the largest
    differences.

    Per image and label, detections scoring above ``max(min score of either
    side) + margin`` are matched one-to-one (Hungarian, cost = 1e3 * |score
    diff| + mean |box diff|); the ones within ``margin`` of the top-K cut-off
    are left out because float noise may move them in or out of the top-K,
    and ties in score may come in any order.

    With ``num_dets`` (score threshold / NMS in the graph), only the first
    ``num_dets`` detections of each row are compared and the cut-off is
    their lowest score; an image with none on one side and some on the
    other is a count mismatch.

    Args:
        ours, ref (dict[str, np.ndarray]): ``labels`` (B, K), ``boxes``
            (B, K, 4), ``scores`` (B, K), optional ``num_dets`` (B,).
        margin (float): Score band above the cut-off that is not compared.

    Returns:
        dict[str, float]: ``max_score_diff``, ``max_box_diff`` (px),
        ``matched`` (detections compared) and ``count_mismatches`` (image /
        label pairs with a different number of detections above the cut-off;
        then both max diffs are inf).
    """
    result = dict(max_score_diff=0.0, max_box_diff=0.0, matched=0, count_mismatches=0)
    for img in range(ref['scores'].shape[0]):
        s_a, s_b = ours['scores'][img], ref['scores'][img]
        n_a, n_b = _num_dets(ours, img), _num_dets(ref, img)
        if not n_a or not n_b:
            result['count_mismatches'] += int(n_a != n_b)
            continue
        cut = max(float(s_a[:n_a].min()), float(s_b[:n_b].min())) + margin
        for label in np.union1d(ours['labels'][img][:n_a], ref['labels'][img][:n_b]):
            a = (ours['labels'][img] == label) & (s_a > cut) & (np.arange(len(s_a)) < n_a)
            b = (ref['labels'][img] == label) & (s_b > cut) & (np.arange(len(s_b)) < n_b)
            if a.sum() != b.sum():
                result['count_mismatches'] += 1
                continue
            if not a.any():
                continue
            box_a, box_b = ours['boxes'][img][a], ref['boxes'][img][b]
            score_diff = np.abs(s_a[a][:, None] - s_b[b][None])
            box_diff = np.abs(box_a[:, None] - box_b[None]).mean(-1)
            rows, cols = linear_sum_assignment(score_diff * 1e3 + box_diff)
            result['max_score_diff'] = max(result['max_score_diff'],
                                           float(score_diff[rows, cols].max()))
            result['max_box_diff'] = max(result['max_box_diff'],
                                         float(np.abs(box_a[rows] - box_b[cols]).max()))
            result['matched'] += len(rows)
    if result['count_mismatches']:
        result['max_score_diff'] = result['max_box_diff'] = float('inf')
    return result


def _num_dets(detections: Dict[str, np.ndarray], img: int) -> int:
    """Valid detections of image ``img``: ``num_dets[img]``, else all K."""
    if 'num_dets' in detections:
        return int(detections['num_dets'][img])
    return int(detections['scores'].shape[1])


def verify_onnx(onnx_file: str, reference: nn.Module, input_size: Tuple[int, int],
                batch: int = 1, seed: int = 1, margin: float = 1e-3) -> Dict[str, float]:
    """Compare the exported file (onnxruntime) with a PyTorch model on
    deterministic example images (a different draw from the traced ones).

    Args:
        onnx_file (str): Exported file.
        reference (nn.Module): PyTorch detector to compare with; pass the
            UNFUSED model to also check the fusion.
        input_size (tuple[int, int]): (H, W) the file was exported at.
        batch (int): Images compared (the file's batch unless dynamic).
        seed (int): Seed of the example images.
        margin (float): See :func:`compare_detections`.

    Returns:
        dict[str, float]: :func:`compare_detections` of onnxruntime against
        PyTorch.
    """
    images, sizes = example_inputs(batch, tuple(input_size), seed=seed)
    ours = run_onnxruntime(onnx_file, images, sizes)
    uses_sizes = _has_input(onnx_file, 'orig_target_sizes')
    ref = run_pytorch(reference, tuple(input_size), images, sizes if uses_sizes else None)
    return compare_detections(ours, ref, margin=margin)


def _has_input(onnx_file: str, name: str) -> bool:
    import onnx
    model = onnx.load(onnx_file, load_external_data=False)
    return any(i.name == name for i in model.graph.input)
