"""RT-DETRv2 detection head: query selection, denoising, decoder and
post-processing (the official ``RTDETRTransformerv2`` + post-processor, as
one mmdet head); its loss (the official criterion) is
:class:`~.rtdetrv2_head_loss.RTDETRv2HeadLossMixin`."""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmdet.models.layers import MLP
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmdet.utils import ConfigType, InstanceList, OptConfigType
from mmengine.model import BaseModule, bias_init_with_prob, constant_init
from mmengine.structures import InstanceData
from torch.profiler import record_function

from ..layers.anchors import generate_anchors
from ..layers.conv_norm import ConvNormLayer
from ..layers.denoising import (DN_CFG_DEFAULTS, DenoisingMeta, build_denoising_queries,
                                resolve_dn_cfg)
from ..layers.postprocess import duplicate_control, keep_mask, topk_detections
from ..layers.precision import compute_dtype, value_dtype
from ..layers.rtdetrv2_decoder import RTDETRv2TransformerDecoder
from .rtdetrv2_head_loss import RTDETRv2HeadLossMixin


@dataclass
class RTDETRv2HeadOutputs:
    """Raw outputs of :meth:`RTDETRv2Head.forward`. Boxes are cxcywh normalised
    to the network input (``batch_input_shape``); scores are logits.

    Attributes:
        cls_scores (Tensor): (L', B, Nq, C); L' = decoder layers in training
            (and with ``all_outputs``), 1 (layer ``eval_idx``) in eval.
        bbox_preds (Tensor): (L', B, Nq, 4).
        enc_cls_scores (Tensor, optional): Encoder top-k logits (B, Nq, C),
            training (and ``all_outputs``) only.
        enc_bbox_preds (Tensor, optional): Encoder top-k boxes (B, Nq, 4).
        dn_cls_scores (Tensor, optional): Denoising logits (L, B, Ndn, C).
        dn_bbox_preds (Tensor, optional): Denoising boxes (L, B, Ndn, 4).
        dn_meta (DenoisingMeta, optional): Which denoising query is which.
    """
    cls_scores: torch.Tensor
    bbox_preds: torch.Tensor
    enc_cls_scores: Optional[torch.Tensor] = None
    enc_bbox_preds: Optional[torch.Tensor] = None
    dn_cls_scores: Optional[torch.Tensor] = None
    dn_bbox_preds: Optional[torch.Tensor] = None
    dn_meta: Optional[DenoisingMeta] = None


#: Submodules of the head whose first dimension is the number of classes (the
#: denoising embedding has one more row, the padding class): what loading a
#: checkpoint trained on other classes re-initialises (RTDETRv2Runner, the
#: converter's warning).
CLASS_DEPENDENT_LAYERS = ('enc_score_head', 'dec_score_head', 'denoising_class_embed')


@MODELS.register_module()
class RTDETRv2Head(RTDETRv2HeadLossMixin, BaseModule):
    """RT-DETRv2 head (`RT-DETRv2: Improved Baseline with Bag-of-Freebies for
    Real-Time Detection Transformer <https://arxiv.org/abs/2407.17140>`_).

    Written after the official ``RTDETRTransformerv2`` (lyuwenyu/RT-DETR,
    rtdetrv2_pytorch); submodule names match it, so an official checkpoint's
    ``decoder.*`` loads as ``bbox_head.*``.

    Flow (:meth:`forward`)::

        neck maps -> input_proj -> flatten (memory) -> enc_output/enc_score_head
        -> top-k tokens by max class logit -> enc_bbox_head + anchors
        -> [denoising queries +] top-k queries -> decoder (per-layer score/box
        heads, iterative refinement) -> per-layer logits and boxes

    Training: :meth:`loss` of :class:`RTDETRv2HeadLossMixin` (the official
    criterion, in ``rtdetrv2_head_loss.py``). Inference: :meth:`predict`.
    Validation loss: :meth:`loss_and_predict` (one forward, both).

    The stages carry ``torch.profiler.record_function`` labels
    (``rtdetr_mm:denoising``, ``:query_selection``, ``:decoder``,
    ``:matching``, ``:loss``), so a profile breaks a step down by stage
    (``tools/analysis_tools/benchmark_vs_hf.py --profile``).

    Args:
        num_classes (int): Object classes (no background logit: sigmoid).
        in_channels (Sequence[int]): Channels of each neck output.
        hidden_dim (int): Decoder width.
        num_levels (int): Levels the decoder attends to; extra levels beyond
            ``len(in_channels)`` are made by 3x3 stride-2 convs.
        num_points (int | Sequence[int]): Sampling points per level.
        num_heads (int): Attention heads.
        num_layers (int): Decoder layers.
        dim_feedforward (int): FFN width in the decoder.
        dropout (float): Decoder dropout.
        act_cfg (dict): Decoder FFN activation (mmcv's
            ``build_activation_layer``).
        num_queries (int): Object queries (top-k encoder tokens).
        dn_cfg (dict, optional): Contrastive denoising (training only), as
            mmdet's DINO groups it: ``num_denoising`` (query budget; 0
            disables denoising), ``label_noise_ratio``, ``box_noise_scale``
            (see :func:`build_denoising_queries`). Keys left out take the
            official values (100, 0.5, 1.0); None disables denoising. The
            keys are the official RT-DETR names, which mmdet's DINO calls
            ``group_cfg.num_dn_queries`` and ``label_noise_scale``.
        eval_idx (int): Decoder layer used at inference (-1 = last).
        cross_attn_method (str): ``'default'`` (grid_sample) or ``'discrete'``.
        offset_scale (float): Deformable offset scale (0.5 officially).
        anchor_grid_size (float): Level-0 anchor size (normalised).
        anchor_eps (float): Anchors outside (eps, 1 - eps) are invalid.
        loss_cls (dict): Classification loss (:class:`RTDETRv2ClassificationLoss`).
        loss_bbox (dict): L1 loss on cxcywh normalised boxes.
        loss_iou (dict): GIoU loss on xyxy pixel boxes.
        train_cfg (dict): ``assigner``: the Hungarian assigner config.
        test_cfg (dict): ``max_per_img``: detections kept per image (top-K);
            optional ``score_thr`` and ``nms`` (duplicate control after the
            top-K, off by default; see
            :func:`~rtdetr_mm.models.layers.postprocess.duplicate_control`).
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 num_classes: int = 80,
                 in_channels: Sequence[int] = (256, 256, 256),
                 hidden_dim: int = 256,
                 num_levels: int = 3,
                 num_points: Union[int, Sequence[int]] = (4, 4, 4),
                 num_heads: int = 8,
                 num_layers: int = 6,
                 dim_feedforward: int = 1024,
                 dropout: float = 0.0,
                 act_cfg: ConfigType = dict(type='ReLU'),
                 num_queries: int = 300,
                 dn_cfg: OptConfigType = DN_CFG_DEFAULTS,
                 eval_idx: int = -1,
                 cross_attn_method: str = 'default',
                 offset_scale: float = 0.5,
                 anchor_grid_size: float = 0.05,
                 anchor_eps: float = 1e-2,
                 loss_cls: ConfigType = dict(type='RTDETRv2ClassificationLoss',
                                             loss_type='vfl', loss_weight=1.0),
                 loss_bbox: ConfigType = dict(type='L1Loss', loss_weight=5.0),
                 loss_iou: ConfigType = dict(type='GIoULoss', loss_weight=2.0),
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) > num_levels:
            raise ValueError(f'num_levels ({num_levels}) must be >= len(in_channels) '
                             f'({len(in_channels)})')
        self.num_classes = num_classes
        self.num_inputs = len(in_channels)
        self.num_levels = num_levels
        self.num_queries = num_queries
        self.dn_cfg = resolve_dn_cfg(dn_cfg)
        self.anchor_grid_size = anchor_grid_size
        self.anchor_eps = anchor_eps
        self.train_cfg = train_cfg or {}
        self.test_cfg = test_cfg or {}
        self._anchor_cache: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}

        self.input_proj = nn.ModuleList(ConvNormLayer(c, hidden_dim, 1) for c in in_channels)
        extra_in = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            self.input_proj.append(ConvNormLayer(extra_in, hidden_dim, 3, 2))
            extra_in = hidden_dim

        self.decoder = RTDETRv2TransformerDecoder(
            num_layers, eval_idx, hidden_dim=hidden_dim, num_heads=num_heads,
            dim_feedforward=dim_feedforward, dropout=dropout, act_cfg=act_cfg,
            num_levels=num_levels,
            num_points=list(num_points) if not isinstance(num_points, int) else num_points,
            cross_attn_method=cross_attn_method, offset_scale=offset_scale)
        if self.dn_cfg['num_denoising'] > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim,
                                                      padding_idx=num_classes)
        self.enc_output = nn.Sequential(OrderedDict([
            ('proj', nn.Linear(hidden_dim, hidden_dim)),
            ('norm', nn.LayerNorm(hidden_dim)),
        ]))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)
        self.dec_score_head = nn.ModuleList(
            nn.Linear(hidden_dim, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(
            MLP(hidden_dim, hidden_dim, 4, num_layers=3) for _ in range(num_layers))

        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_iou = MODELS.build(loss_iou)
        self.assigner = TASK_UTILS.build(self.train_cfg['assigner']) \
            if 'assigner' in self.train_cfg else None
        self._reset_parameters()

    # ------------------------------------------------------------------ init
    def _reset_parameters(self) -> None:
        """Official initialisation: class-bias prior 0.01 on every score head,
        zero last layer of every box head, Xavier on ``enc_output.proj``, the
        query position head and the input projections."""
        bias = bias_init_with_prob(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        constant_init(self.enc_bbox_head.layers[-1], 0)
        for score_head, bbox_head in zip(self.dec_score_head, self.dec_bbox_head):
            nn.init.constant_(score_head.bias, bias)
            constant_init(bbox_head.layers[-1], 0)
        nn.init.xavier_uniform_(self.enc_output.proj.weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj.conv.weight)

    def init_weights(self) -> None:
        """Re-apply the official initialisation of the head.

        NOTE: transformers initialises the class bias with prior
        ``1 / (num_classes + 1)``; we follow the official prior 0.01.
        """
        super().init_weights()
        self._reset_parameters()

    # --------------------------------------------------------------- forward
    def forward(self, feats: Sequence[torch.Tensor],
                gt_labels: Optional[Sequence[torch.Tensor]] = None,
                gt_boxes: Optional[Sequence[torch.Tensor]] = None,
                all_outputs: bool = False) -> RTDETRv2HeadOutputs:
        """Decode the neck features into per-layer class logits and boxes.

        Args:
            feats (Sequence[Tensor]): Neck outputs, (B, C_l, H_l, W_l).
            gt_labels (Sequence[Tensor], optional): Per image (n_i,) labels;
                with ``gt_boxes`` enables denoising queries in training.
            gt_boxes (Sequence[Tensor], optional): Per image (n_i, 4) cxcywh
                normalised to the network input.
            all_outputs (bool): Also in eval mode, return what the loss needs:
                every decoder layer and the encoder top-k, as in training
                (the validation loss). Denoising stays training-only. The
                layers up to ``eval_idx`` compute the same values either way.

        Returns:
            RTDETRv2HeadOutputs: see its docstring.
        """
        memory, spatial_shapes = self._flatten_levels(feats)
        num_queries = min(self.num_queries, memory.shape[1])
        all_outputs = self.training or all_outputs

        dn_content = dn_boxes_logit = attn_mask = dn_meta = None
        if self.training and self.dn_cfg['num_denoising'] > 0 and gt_labels is not None:
            with record_function('rtdetr_mm:denoising'):
                dn_content, dn_boxes_logit, attn_mask, dn_meta = build_denoising_queries(
                    gt_labels, gt_boxes, self.num_classes, num_queries,
                    self.denoising_class_embed, **self.dn_cfg)

        with record_function('rtdetr_mm:query_selection'):
            content, ref_logit, enc_logits, enc_boxes = self._select_queries(
                memory, spatial_shapes, num_queries, with_encoder_outputs=all_outputs)
        if dn_meta is not None:
            content = torch.cat([dn_content.to(content.dtype), content], 1)
            ref_logit = torch.cat([dn_boxes_logit.to(ref_logit.dtype), ref_logit], 1)

        with record_function('rtdetr_mm:decoder'):
            boxes, logits = self.decoder(content, ref_logit, memory, spatial_shapes,
                                         self.dec_bbox_head, self.dec_score_head,
                                         self.query_pos_head, attn_mask=attn_mask,
                                         all_layers=all_outputs)
        outs = RTDETRv2HeadOutputs(cls_scores=logits, bbox_preds=boxes,
                                   enc_cls_scores=enc_logits, enc_bbox_preds=enc_boxes)
        if dn_meta is not None:
            n = dn_meta.num_dn_queries
            outs.dn_cls_scores, outs.cls_scores = logits[:, :, :n], logits[:, :, n:]
            outs.dn_bbox_preds, outs.bbox_preds = boxes[:, :, :n], boxes[:, :, n:]
            outs.dn_meta = dn_meta
        return outs

    def _flatten_levels(self, feats: Sequence[torch.Tensor]
                        ) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """Project every level to ``hidden_dim`` and flatten.

        Returns:
            tuple: memory (B, sum(H_l*W_l), hidden_dim) and [(H_l, W_l)].
        """
        if len(feats) != self.num_inputs:
            raise ValueError(f'RTDETRv2Head got {len(feats)} feature maps, expected '
                             f'{self.num_inputs} (len(in_channels))')
        projected = [self.input_proj[i](f) for i, f in enumerate(feats)]
        for i in range(len(feats), self.num_levels):
            projected.append(self.input_proj[i](feats[-1] if i == len(feats) else projected[-1]))
        shapes = [(int(p.shape[2]), int(p.shape[3])) for p in projected]
        memory = torch.cat([p.flatten(2).transpose(1, 2) for p in projected], 1)
        return memory, shapes

    def _anchors(self, spatial_shapes: List[Tuple[int, int]], ref: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Anchors for these feature sizes, cached per (shapes, device, dtype) so
        any input size works (no fixed ``eval_spatial_size``)."""
        # fp32 under autocast (the parameters' dtype), else ``ref``'s dtype
        dtype = value_dtype(ref.dtype, ref.device)
        key = (tuple(spatial_shapes), ref.device, dtype)
        if key not in self._anchor_cache:
            self._anchor_cache[key] = generate_anchors(
                spatial_shapes, self.anchor_grid_size, self.anchor_eps,
                device=ref.device, dtype=dtype)
        return self._anchor_cache[key]

    def _select_queries(self, memory: torch.Tensor, spatial_shapes: List[Tuple[int, int]],
                        num_queries: int, with_encoder_outputs: bool = True):
        """Score every memory token and keep the top ``num_queries``.

        Args:
            memory (Tensor): (B, S, hidden_dim).
            spatial_shapes (list[tuple[int, int]]): (H_l, W_l) per level.
            num_queries (int): Tokens kept.
            with_encoder_outputs (bool): Also return the encoder top-k
                logits and boxes (for the loss).

        Returns:
            tuple: content (B, Nq, hidden_dim) detached; reference boxes as
            logits (B, Nq, 4) detached; encoder top-k logits (B, Nq, C) and
            boxes (B, Nq, 4) cxcywh normalised (both None without
            ``with_encoder_outputs``).
        """
        anchors, valid_mask = self._anchors(spatial_shapes, memory)
        output_memory = self.enc_output(memory * valid_mask.to(memory.dtype))
        enc_logits = self.enc_score_head(output_memory)
        topk_ind = enc_logits.max(-1).values.topk(num_queries, dim=1).indices
        topk_memory = _gather_tokens(output_memory, topk_ind)
        topk_anchors = _gather_tokens(anchors.expand(memory.shape[0], -1, -1), topk_ind)
        topk_box_logit = self.enc_bbox_head(topk_memory) + topk_anchors
        enc_topk_logits = enc_topk_boxes = None
        if with_encoder_outputs:
            enc_topk_logits = _gather_tokens(enc_logits, topk_ind)
            enc_topk_boxes = topk_box_logit.sigmoid()
        return topk_memory.detach(), topk_box_logit.detach(), enc_topk_logits, enc_topk_boxes

    # --------------------------------------------------------------- predict
    def predict(self, feats: Sequence[torch.Tensor], batch_data_samples: SampleList,
                rescale: bool = True) -> InstanceList:
        """Detect objects.

        Returns:
            list[InstanceData]: per image ``bboxes`` (K, 4) xyxy pixels of the
            original image when ``rescale`` (else of the network input),
            ``scores`` (K,) sigmoid scores, ``labels`` (K,); K =
            ``test_cfg.max_per_img`` (300), sorted by score; fewer when
            ``test_cfg.score_thr`` or ``test_cfg.nms`` is set.
        """
        outs = self(feats)
        batch_img_metas = [ds.metainfo for ds in batch_data_samples]
        return self.predict_by_feat(outs.cls_scores[-1], outs.bbox_preds[-1],
                                    batch_img_metas, rescale)

    def loss_and_predict(self, feats: Sequence[torch.Tensor], batch_data_samples: SampleList,
                         rescale: bool = True) -> Tuple[Dict[str, torch.Tensor], InstanceList]:
        """The loss and the detections of ONE forward (mmdet's
        ``loss_and_predict`` pattern): the validation loss.

        In eval mode (the val loop): no denoising; every decoder layer and
        the encoder top-k are output (``all_outputs``) and go through the
        training matching and loss (:meth:`loss_by_feat`); the detections
        are :meth:`predict`'s, from layer ``eval_idx`` of the same outputs
        (bit-identical: the layers up to it compute the same values). In
        training mode: :meth:`loss` (with denoising) plus the detections.

        Args:
            feats (Sequence[Tensor]): Neck outputs, (B, C_l, H_l, W_l).
            batch_data_samples (list[DetDataSample]): With ``gt_instances``
                (bboxes xyxy pixels of the network input, labels) and
                the metainfo :meth:`predict` reads.
            rescale (bool): As :meth:`predict`.

        Returns:
            tuple: the loss dict of :meth:`loss` (``loss_cls/loss_bbox/
            loss_iou`` of the LAST decoder layer, ``d{i}.loss_*`` of the
            earlier ones, ``enc_loss_*``; ``dn_*`` only in training) and
            :meth:`predict`'s list of InstanceData (xyxy pixels).

        NOTE: the keys follow the training loss, so ``loss_*`` is the last
        layer even when ``eval_idx`` predicts from an earlier one (R50-M:
        layer 2 of 6, whose terms are ``d2.loss_*``).
        """
        gt_labels, gt_boxes, input_shapes = self._normalised_gts(batch_data_samples)
        outs = self(feats, gt_labels, gt_boxes, all_outputs=True)
        losses = self.loss_by_feat(outs, gt_labels, gt_boxes, input_shapes)
        layer = self.decoder.eval_idx
        batch_img_metas = [ds.metainfo for ds in batch_data_samples]
        predictions = self.predict_by_feat(outs.cls_scores[layer], outs.bbox_preds[layer],
                                           batch_img_metas, rescale)
        return losses, predictions

    @property
    def max_per_img(self) -> int:
        """Detections kept per image: ``test_cfg.max_per_img``, by default
        ``num_queries`` (300 officially); at most ``num_queries * num_classes``."""
        return min(int(self.test_cfg.get('max_per_img', self.num_queries)),
                   self.num_queries * self.num_classes)

    def predict_by_feat(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                        batch_img_metas: List[dict], rescale: bool = True) -> InstanceList:
        """Top-k over the sigmoid scores of all (query, class) pairs
        (:func:`~rtdetr_mm.models.layers.postprocess.topk_detections`), then
        the optional ``test_cfg.score_thr`` / ``test_cfg.nms``
        (:func:`~rtdetr_mm.models.layers.postprocess.keep_mask`).

        Args:
            cls_scores (Tensor): (B, Nq, C) logits.
            bbox_preds (Tensor): (B, Nq, 4) cxcywh normalised to the input.
            batch_img_metas (list[dict]): ``batch_input_shape`` (or
                ``img_shape``) and, for ``rescale``, ``scale_factor`` (w, h).
        """
        sizes = [meta.get('batch_input_shape', meta['img_shape'])[:2]
                 for meta in batch_img_metas]
        dtype = compute_dtype(cls_scores.dtype)
        sizes_wh = cls_scores.new_tensor([[w, h] for h, w in sizes], dtype=dtype)
        scale_factors = None
        if rescale and all('scale_factor' in meta for meta in batch_img_metas):
            scale_factors = cls_scores.new_tensor(
                [meta['scale_factor'] for meta in batch_img_metas], dtype=dtype)
        labels, boxes, scores = topk_detections(cls_scores, bbox_preds, sizes_wh,
                                                self.num_classes, self.max_per_img,
                                                scale_factors)
        score_thr, nms_cfg = duplicate_control(self.test_cfg)
        if score_thr is None and nms_cfg is None:  # the default: the top-K as is
            return [InstanceData(bboxes=b, scores=s, labels=lab)
                    for b, s, lab in zip(boxes, scores, labels)]
        # on the boxes the user gets (xyxy pixels, rescaled when ``rescale``)
        keep = keep_mask(labels, boxes, scores, score_thr, nms_cfg)
        return [InstanceData(bboxes=b[k], scores=s[k], labels=lab[k])
                for b, s, lab, k in zip(boxes, scores, labels, keep)]


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, k], :]`` for (B, S, D) ``x`` and (B, K) ``index``."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
