"""Training loss of :class:`RTDETRv2Head` (the official criterion): GT
normalisation, Hungarian matching per decoder layer and for the encoder's
top-k, fixed matching of the denoising queries, and the classification /
L1 / GIoU terms."""
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Sequence, Tuple

import torch
from mmdet.structures import SampleList
from mmdet.structures.bbox import (bbox_cxcywh_to_xyxy, bbox_overlaps,
                                   bbox_xyxy_to_cxcywh, get_box_tensor)
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData
from torch.profiler import record_function

from ..layers.precision import compute_dtype, upcast
from ..task_modules.assigners.batched_hungarian_assigner import MatchedPairs

if TYPE_CHECKING:
    from .rtdetrv2_head import RTDETRv2HeadOutputs


class RTDETRv2HeadLossMixin:
    """The loss half of :class:`RTDETRv2Head`, read top to bottom:
    :meth:`loss` -> :meth:`_normalised_gts` -> :meth:`loss_by_feat` ->
    :meth:`_num_boxes`, :meth:`_match`, :meth:`_loss_terms`.

    The head provides ``num_classes``, ``assigner`` (built from
    ``train_cfg.assigner``) and the loss modules ``loss_cls``, ``loss_bbox``
    and ``loss_iou``, and is called as ``self(feats, gt_labels, gt_boxes)``.

    NOTE: the ``loss_by_feat`` of mmdet's ``DETRHead`` / ``DINOHead`` is not
    reused: their classification loss takes ``(labels, label_weights)`` with
    a ``num_pos + bg_cls_weight * num_neg`` normaliser, while the official
    criterion gives VFL the IoU of each matched box and divides every term by
    the GT count averaged over ranks; they scale boxes by ``img_shape``
    (ours: ``batch_input_shape``); and DINO's denoising targets follow the
    layout of ``CdnQueryGenerator``, not that of :class:`DenoisingMeta`.
    """

    def loss(self, feats: Sequence[torch.Tensor], batch_data_samples: SampleList) -> dict:
        """Forward with denoising and compute every loss term.

        Args:
            feats (Sequence[Tensor]): Neck outputs.
            batch_data_samples (list[DetDataSample]): With ``gt_instances``
                (bboxes xyxy pixels of the network input, labels) and
                ``batch_input_shape`` in their metainfo.

        Returns:
            dict[str, Tensor]: ``loss_cls/loss_bbox/loss_iou`` (last layer),
            ``d{i}.loss_*`` (earlier layers), ``enc_loss_*`` (encoder top-k),
            ``dn_loss_*`` and ``d{i}.dn_loss_*`` (denoising).
        """
        gt_labels, gt_boxes, input_shapes = self._normalised_gts(batch_data_samples)
        outs = self(feats, gt_labels, gt_boxes)
        return self.loss_by_feat(outs, gt_labels, gt_boxes, input_shapes)

    def _normalised_gts(self, batch_data_samples: SampleList
                        ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[Tuple[int, int]]]:
        """GT labels and cxcywh boxes normalised to each sample's network input
        size (``batch_input_shape``, as the model sees the image).

        Returns:
            tuple: per image labels (n_i,) long, boxes (n_i, 4) cxcywh
            normalised, and the (H, W) of the network input.

        NOTE: mmdet's DETR heads normalise by ``img_shape``; with the fixed
        640x640 resize of RT-DETR both are equal, and ``batch_input_shape``
        stays right when images are padded.
        """
        labels, boxes, shapes = [], [], []
        for ds in batch_data_samples:
            h, w = ds.metainfo.get('batch_input_shape', ds.metainfo['img_shape'])[:2]
            xyxy = get_box_tensor(ds.gt_instances.bboxes)
            scale = xyxy.new_tensor([w, h, w, h])
            boxes.append(bbox_xyxy_to_cxcywh(xyxy / scale))
            labels.append(ds.gt_instances.labels.long())
            shapes.append((int(h), int(w)))
        return labels, boxes, shapes

    def loss_by_feat(self, outs: 'RTDETRv2HeadOutputs', gt_labels: List[torch.Tensor],
                     gt_boxes: List[torch.Tensor],
                     input_shapes: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
        """Loss terms of every output (see :meth:`loss`).

        The decoder layers and the encoder top-k are matched together
        (:meth:`_match`) and their losses computed together
        (:meth:`_loss_terms`), then the denoising outputs of all layers.

        Args:
            outs (RTDETRv2HeadOutputs): Training outputs.
            gt_labels (list[Tensor]): Per image (n_i,) labels.
            gt_boxes (list[Tensor]): Per image (n_i, 4) cxcywh normalised.
            input_shapes (list[tuple[int, int]]): (H, W) of the network input
                of each image, to compute GIoU in pixels.
        """
        device = outs.cls_scores.device
        dtype = compute_dtype(outs.cls_scores.dtype)   # fp32, float64 for a float64 model
        num_gts = [len(labels) for labels in gt_labels]
        num_boxes = self._num_boxes(sum(num_gts), device, dtype)
        targets = _Targets(labels=torch.cat(gt_labels),
                           boxes=torch.cat(gt_boxes).to(dtype),
                           scales=torch.tensor([[w, h, w, h] for h, w in input_shapes],
                                               dtype=dtype, device=device))
        num_layers = outs.cls_scores.shape[0]
        prefixes = [f'd{layer}.' for layer in range(num_layers - 1)] + ['']
        cls_scores, bbox_preds = outs.cls_scores, outs.bbox_preds
        if outs.enc_cls_scores is not None:
            cls_scores = torch.cat([cls_scores, outs.enc_cls_scores[None]])
            bbox_preds = torch.cat([bbox_preds, outs.enc_bbox_preds[None]])
            prefixes.append('enc_')
        with record_function('rtdetr_mm:matching'):
            pairs = self._match(cls_scores, bbox_preds, gt_labels, gt_boxes, input_shapes)
            if outs.dn_meta is not None:
                dn_pairs = outs.dn_meta.matched_pairs(num_gts, num_layers, device)
        with record_function('rtdetr_mm:loss'):
            losses = self._loss_terms(cls_scores, bbox_preds, targets, pairs, num_boxes,
                                      prefixes)
            if outs.dn_meta is not None:
                dn_prefixes = [f'd{layer}.dn_' for layer in range(num_layers - 1)] + ['dn_']
                losses.update(self._loss_terms(outs.dn_cls_scores, outs.dn_bbox_preds, targets,
                                               dn_pairs, num_boxes * outs.dn_meta.num_groups,
                                               dn_prefixes))
        return losses

    def _num_boxes(self, local_count: int, device: torch.device,
                   dtype: torch.dtype) -> torch.Tensor:
        """GT boxes averaged over ranks, at least 1 (official normaliser): a
        0-dim ``dtype`` tensor on ``device``, never read on the host."""
        count = torch.tensor(float(local_count), dtype=dtype, device=device)
        return reduce_mean(count).clamp(min=1)

    @torch.no_grad()
    def _match(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
               gt_labels: List[torch.Tensor], gt_boxes: List[torch.Tensor],
               input_shapes: List[Tuple[int, int]]) -> MatchedPairs:
        """Hungarian matching of S outputs of every image.

        With :class:`RTDETRv2HungarianAssigner` (the configs' assigner) all
        of them are matched at once (``match_batch``: one device-to-host
        copy); any other mmdet assigner is run per output and image through
        its ``assign`` (pixel xyxy boxes, ``img_shape`` = the network input).

        Args:
            cls_scores (Tensor): (S, B, Nq, C) logits.
            bbox_preds (Tensor): (S, B, Nq, 4) cxcywh normalised.

        Returns:
            MatchedPairs: sorted by output (stage).
        """
        if self.assigner is None:
            raise RuntimeError('RTDETRv2Head needs train_cfg.assigner to compute the loss')
        if hasattr(self.assigner, 'match_batch'):
            return self.assigner.match_batch(cls_scores, bbox_preds, gt_labels, gt_boxes)
        gt_offsets = [0]
        for labels in gt_labels:
            gt_offsets.append(gt_offsets[-1] + len(labels))
        rows, counts = [], []
        for stage in range(cls_scores.shape[0]):
            count = 0
            for i, (labels, boxes) in enumerate(zip(gt_labels, gt_boxes)):
                h, w = input_shapes[i]
                scale = boxes.new_tensor([w, h, w, h])
                pred = InstanceData(scores=upcast(cls_scores[stage, i]),
                                    bboxes=bbox_cxcywh_to_xyxy(upcast(bbox_preds[stage, i])) * scale)
                gt = InstanceData(labels=labels, bboxes=bbox_cxcywh_to_xyxy(upcast(boxes)) * scale)
                result = self.assigner.assign(pred, gt, img_meta=dict(img_shape=(h, w)))
                query = torch.nonzero(result.gt_inds > 0, as_tuple=False).squeeze(1).cpu()
                gt_idx = result.gt_inds[query].cpu() - 1 + gt_offsets[i]
                rows.append(torch.stack([torch.full_like(query, stage), torch.full_like(query, i),
                                         query, gt_idx]))
                count += len(query)
            counts.append(count)
        pairs = torch.cat(rows, 1) if rows else torch.zeros((4, 0), dtype=torch.long)
        return MatchedPairs.from_host(pairs.long().numpy(), counts, cls_scores.device)

    def _loss_terms(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                    targets: '_Targets', pairs: MatchedPairs, num_boxes: torch.Tensor,
                    prefixes: List[str]) -> Dict[str, torch.Tensor]:
        """Classification, L1 and GIoU loss of S outputs for fixed matches,
        each term computed for all outputs in one call.

        Args:
            cls_scores (Tensor): (S, B, N, C) logits.
            bbox_preds (Tensor): (S, B, N, 4) cxcywh normalised.
            targets (_Targets): GTs of all images concatenated.
            pairs (MatchedPairs): Matches of the S outputs.
            num_boxes (Tensor): 0-dim normaliser.
            prefixes (list[str]): Key prefix of each output (``''``,
                ``'d0.'``, ``'enc_'``, ``'dn_'``...), length S.

        NOTE: losses are computed in at least fp32 whatever the autocast
        dtype (float64 for a float64 model).
        """
        cls_scores, bbox_preds = upcast(cls_scores), upcast(bbox_preds)
        num_stages, bs, num_preds, _ = cls_scores.shape
        pred_boxes = bbox_preds[pairs.stage, pairs.batch, pairs.query]
        target_boxes = targets.boxes[pairs.gt]
        scales = targets.scales[pairs.batch]
        pred_xyxy = bbox_cxcywh_to_xyxy(pred_boxes) * scales
        target_xyxy = bbox_cxcywh_to_xyxy(target_boxes) * scales
        ious = bbox_overlaps(pred_xyxy.detach(), target_xyxy, is_aligned=True)

        labels = torch.full((num_stages, bs, num_preds), self.num_classes, dtype=torch.long,
                            device=cls_scores.device)
        labels[pairs.stage, pairs.batch, pairs.query] = targets.labels[pairs.gt]
        iou_targets = cls_scores.new_zeros((num_stages, bs, num_preds))
        iou_targets[pairs.stage, pairs.batch, pairs.query] = ious
        loss_cls = self.loss_cls(cls_scores.flatten(1, 2), labels.flatten(1),
                                 iou_targets.flatten(1), avg_factor=num_boxes)
        # Per-pair terms summed per output with a (S, P) one-hot product (a
        # deterministic reduction); ``bbox_preds * 0`` keeps every box-head
        # parameter in the graph when an output has no pair (DDP without
        # find_unused_parameters).
        stages = torch.arange(num_stages, device=pairs.stage.device)
        per_stage = (stages[:, None] == pairs.stage).to(pred_boxes.dtype)
        in_graph = bbox_preds.sum((1, 2, 3)) * 0
        if len(pairs.stage):
            l1 = self.loss_bbox(pred_boxes, target_boxes, reduction_override='none').sum(-1)
            giou = self.loss_iou(pred_xyxy, target_xyxy, reduction_override='none')
            loss_bbox = per_stage @ l1 / num_boxes + in_graph
            loss_iou = per_stage @ giou / num_boxes + in_graph
        else:
            loss_bbox = loss_iou = in_graph
        losses = {}
        for stage, prefix in enumerate(prefixes):
            losses[f'{prefix}loss_cls'] = loss_cls[stage]
            losses[f'{prefix}loss_bbox'] = loss_bbox[stage]
            losses[f'{prefix}loss_iou'] = loss_iou[stage]
        return losses


class _Targets(NamedTuple):
    """The GTs of a batch, concatenated over images.

    Attributes:
        labels (Tensor): (G,) long.
        boxes (Tensor): (G, 4) cxcywh normalised, fp32.
        scales (Tensor): (B, 4) ``[w, h, w, h]`` of each network input, to
            turn normalised boxes into pixels.
    """
    labels: torch.Tensor
    boxes: torch.Tensor
    scales: torch.Tensor
