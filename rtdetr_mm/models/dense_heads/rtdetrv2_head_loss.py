"""Training loss of :class:`RTDETRv2Head` (the official criterion): GT
normalisation, Hungarian matching per decoder layer and for the encoder's
top-k, fixed matching of the denoising queries, and the classification /
L1 / GIoU terms."""
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import torch
from mmdet.structures import SampleList
from mmdet.structures.bbox import (bbox_cxcywh_to_xyxy, bbox_overlaps,
                                   bbox_xyxy_to_cxcywh, get_box_tensor)
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData

if TYPE_CHECKING:
    from .rtdetrv2_head import RTDETRv2HeadOutputs

MatchIndices = List[Tuple[torch.Tensor, torch.Tensor]]


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

        Args:
            outs (RTDETRv2HeadOutputs): Training outputs.
            gt_labels (list[Tensor]): Per image (n_i,) labels.
            gt_boxes (list[Tensor]): Per image (n_i, 4) cxcywh normalised.
            input_shapes (list[tuple[int, int]]): (H, W) of the network input
                of each image, to compute GIoU in pixels.
        """
        num_gts = [len(labels) for labels in gt_labels]
        num_boxes = self._num_boxes(sum(num_gts), outs.cls_scores.device)
        losses = {}
        num_layers = outs.cls_scores.shape[0]
        for layer in range(num_layers):
            prefix = '' if layer == num_layers - 1 else f'd{layer}.'
            cls_scores, bbox_preds = outs.cls_scores[layer], outs.bbox_preds[layer]
            indices = self._match(cls_scores, bbox_preds, gt_labels, gt_boxes, input_shapes)
            losses.update(self._loss_terms(cls_scores, bbox_preds, gt_labels, gt_boxes,
                                           input_shapes, indices, num_boxes, prefix))
        if outs.enc_cls_scores is not None:
            indices = self._match(outs.enc_cls_scores, outs.enc_bbox_preds, gt_labels,
                                  gt_boxes, input_shapes)
            losses.update(self._loss_terms(outs.enc_cls_scores, outs.enc_bbox_preds,
                                           gt_labels, gt_boxes, input_shapes, indices,
                                           num_boxes, 'enc_'))
        if outs.dn_meta is not None:
            indices = outs.dn_meta.gt_indices(num_gts)
            dn_num_boxes = num_boxes * outs.dn_meta.num_groups
            for layer in range(num_layers):
                prefix = 'dn_' if layer == num_layers - 1 else f'd{layer}.dn_'
                losses.update(self._loss_terms(outs.dn_cls_scores[layer],
                                               outs.dn_bbox_preds[layer], gt_labels,
                                               gt_boxes, input_shapes, indices,
                                               dn_num_boxes, prefix))
        return losses

    def _num_boxes(self, local_count: int, device: torch.device) -> float:
        """GT boxes averaged over ranks, at least 1 (official normaliser)."""
        count = torch.tensor(float(local_count), device=device)
        return reduce_mean(count).clamp(min=1).item()

    @torch.no_grad()
    def _match(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
               gt_labels: List[torch.Tensor], gt_boxes: List[torch.Tensor],
               input_shapes: List[Tuple[int, int]]) -> MatchIndices:
        """Hungarian matching per image.

        Args:
            cls_scores (Tensor): (B, Nq, C) logits.
            bbox_preds (Tensor): (B, Nq, 4) cxcywh normalised.

        Returns:
            list[tuple[Tensor, Tensor]]: per image (query indices, GT indices).
        """
        if self.assigner is None:
            raise RuntimeError('RTDETRv2Head needs train_cfg.assigner to compute the loss')
        indices = []
        for i, (labels, boxes) in enumerate(zip(gt_labels, gt_boxes)):
            h, w = input_shapes[i]
            scale = boxes.new_tensor([w, h, w, h])
            pred = InstanceData(scores=cls_scores[i].float(),
                                bboxes=bbox_cxcywh_to_xyxy(bbox_preds[i].float()) * scale)
            gt = InstanceData(labels=labels, bboxes=bbox_cxcywh_to_xyxy(boxes.float()) * scale)
            result = self.assigner.assign(pred, gt, img_meta=dict(img_shape=(h, w)))
            query_idx = torch.nonzero(result.gt_inds > 0, as_tuple=False).squeeze(1)
            indices.append((query_idx, result.gt_inds[query_idx] - 1))
        return indices

    def _loss_terms(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                    gt_labels: List[torch.Tensor], gt_boxes: List[torch.Tensor],
                    input_shapes: List[Tuple[int, int]], indices: MatchIndices,
                    num_boxes: float, prefix: str) -> Dict[str, torch.Tensor]:
        """Classification, L1 and GIoU loss of one output for fixed matches.

        Args:
            cls_scores (Tensor): (B, N, C) logits.
            bbox_preds (Tensor): (B, N, 4) cxcywh normalised.
            indices (list[tuple[Tensor, Tensor]]): (query idx, GT idx) per image.
            num_boxes (float): Normaliser.
            prefix (str): Key prefix (``''``, ``'d0.'``, ``'enc_'``, ``'dn_'``...).

        NOTE: losses are computed in fp32 whatever the autocast dtype.
        """
        cls_scores, bbox_preds = cls_scores.float(), bbox_preds.float()
        bs, num_preds, _ = cls_scores.shape
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        query_idx = torch.cat([q for q, _ in indices])
        matched_labels = torch.cat([labels[g] for labels, (_, g) in zip(gt_labels, indices)])
        target_boxes = torch.cat([boxes[g] for boxes, (_, g) in zip(gt_boxes, indices)]).float()
        scales = torch.cat([
            target_boxes.new_tensor([w, h, w, h]).expand(len(q), 4)
            for (h, w), (q, _) in zip(input_shapes, indices)])

        pred_boxes = bbox_preds[batch_idx, query_idx]
        pred_xyxy = bbox_cxcywh_to_xyxy(pred_boxes) * scales
        target_xyxy = bbox_cxcywh_to_xyxy(target_boxes) * scales
        ious = bbox_overlaps(pred_xyxy.detach(), target_xyxy, is_aligned=True)

        labels = torch.full((bs, num_preds), self.num_classes, dtype=torch.long,
                            device=cls_scores.device)
        labels[batch_idx, query_idx] = matched_labels
        iou_targets = cls_scores.new_zeros((bs, num_preds))
        iou_targets[batch_idx, query_idx] = ious
        loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels.flatten(),
                                 iou_targets.flatten(), avg_factor=num_boxes)
        loss_bbox = self.loss_bbox(pred_boxes, target_boxes, avg_factor=num_boxes)
        loss_iou = self.loss_iou(pred_xyxy, target_xyxy, avg_factor=num_boxes)
        if len(query_idx) == 0:
            # Keep every box-head parameter in the graph (DDP without
            # find_unused_parameters) when there is nothing to regress.
            loss_bbox = loss_bbox + bbox_preds.sum() * 0
            loss_iou = loss_iou + bbox_preds.sum() * 0
        return {f'{prefix}loss_cls': loss_cls, f'{prefix}loss_bbox': loss_bbox,
                f'{prefix}loss_iou': loss_iou}
