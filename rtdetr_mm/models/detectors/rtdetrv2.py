"""RT-DETRv2 detector."""
import itertools
from typing import Dict, Tuple, Union

import torch
import torch.nn as nn
from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList, SampleList
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig
from torch import Tensor

from ..layers.reparameterize import reparameterize_, reparameterized_copy
from .checkpoint_fit import CHECKPOINT_FIT_MODES, checkpoint_fit_pre_hook


class _InferenceCopyCache:
    """Holds the detector's fused inference copy OUTSIDE its module tree.

    A plain object on purpose: ``nn.Module.__setattr__`` registers any
    module attribute as a submodule, and the copy would then be in
    ``state_dict()`` (checkpoints), ``parameters()`` (the optimizer), moved
    by ``.to()`` and switched by ``train()``. Copying or pickling the holder
    gives an empty one (``__reduce__``), so ``copy.deepcopy(detector)`` (EMA
    models, ``reparameterized_copy`` itself) and ``torch.save(detector)``
    never carry the copy along.
    """
    __slots__ = ('model', 'fingerprint')

    def __init__(self) -> None:
        self.model = None
        self.fingerprint = None

    def clear(self) -> None:
        self.model = None
        self.fingerprint = None

    def __reduce__(self):
        return (_InferenceCopyCache, ())


def _drop_inference_copy(module: nn.Module, incompatible_keys) -> None:
    """``load_state_dict`` post hook (torch's and mmengine's loaders both
    call it): the loaded weights were copied in place, so the fingerprint
    would not see them."""
    module.invalidate_inference_copy()


@MODELS.register_module()
class RTDETRv2(SingleStageDetector):
    """RT-DETRv2 (`arXiv:2407.17140 <https://arxiv.org/abs/2407.17140>`_):
    ``PResNet`` backbone -> ``RTDETRv2HybridEncoder`` neck -> ``RTDETRv2Head``.

    The data flow is mmdet's single-stage one and reads top to bottom::

        images (B, 3, H, W), RGB in [0, 1]
          -> backbone: strides 8/16/32 maps
          -> neck (hybrid encoder): 3 maps of ``hidden_dim`` channels
          -> bbox_head.loss(...)     training: dict of losses
          -> bbox_head.predict(...)  inference: top-300 (label, score, xyxy box)
          -> bbox_head.loss_and_predict(...)  validation loss: both, one forward
             (:meth:`val_loss_and_predict`, ``RTDETRv2ValLoop(compute_loss=True)``)

    NOTE: mmdet's DINO/DeformableDETR classes are not subclassed: RT-DETR has
    no learned content queries, no padding masks and its encoder is a neck,
    so their four-stage ``**dict`` pipeline would only be overridden
    everywhere. The whole decoder lives in the head (official layout).

    Args:
        backbone (dict): Backbone config (``PResNet``).
        neck (dict): Neck config (``RTDETRv2HybridEncoder``).
        bbox_head (dict): Head config (``RTDETRv2Head``).
        train_cfg (dict, optional): Passed to the head (``assigner``).
        test_cfg (dict, optional): Passed to the head (``max_per_img``).
        data_preprocessor (dict, optional): Usually ``DetDataPreprocessor``
            with mean 0, std 255, ``bgr_to_rgb=True``.
        reparameterize (bool): In eval mode, ``predict`` and ``_forward`` run a
            fused copy (``layers/reparameterize.py``: RepVGG blocks merged,
            every BN folded into its conv), so validation, ``tools/test.py``,
            ``DetInferencer`` and ``init_detector`` models run fewer ops;
            the detector's own weights are never changed. False: inference
            runs the detector itself.
        channels_last (bool): The fused inference copy keeps its conv
            weights, and gets the images, in ``torch.channels_last`` memory
            format (NHWC); same values (no effect with ``reparameterize``
            off). On a CPU this measured 0.78x (r18vd) and 0.80x (r50vd) of
            the NCHW inference time at batch 4, 640 (``docs/performance.md``).
            NOTE: training stays NCHW: NHWC trained 0.88x as long, but its
            BatchNorm batch statistics round differently (losses 3e-5 apart
            relative), above the transformers loss-parity tolerance.
        checkpoint_fit (str): What a checkpoint loaded into the detector
            (``load_from``, ``tools/test.py``, ``init_detector``, the ONNX
            export: any ``load_state_dict``) may differ in
            (``checkpoint_fit.py``): ``'fine_tune'`` (default) only the
            class-dependent layers, in the number of classes (they keep
            their initialisation, logged); ``'exact'`` nothing (what
            ``tools/test.py`` and the export use); ``'off'`` anything: the
            weights that fit load, the rest is logged as a warning (for
            experts: e.g. a deliberately changed architecture).
            Otherwise a checkpoint that does not fit raises
            ``CheckpointMismatchError`` naming the file, the keys by module
            and the architecture facts that differ.
        init_cfg (dict, optional): mmengine init config.

    The fused copy is built lazily at the first inference call and cached.
    It is dropped by ``train(mode)`` (so also by ``eval()``, which mmengine's
    ValLoop / TestLoop call after the EMA hook has swapped the averaged
    weights in, in place) and by ``load_state_dict`` (torch's or mmengine's,
    through a post hook), and rebuilt when the parameters and buffers are no
    longer the same tensors: a fingerprint of their ``data_ptr()``, device
    and dtype catches ``.to()`` / ``.cuda()`` / ``.half()`` and ``.data``
    swaps. NOT caught: weights edited in place while in eval mode (e.g.
    ``p.data.copy_(...)`` or ``p.add_(...)`` under ``no_grad`` after a
    prediction), or freed tensors replaced by new ones at exactly the same
    addresses; call :meth:`invalidate_inference_copy` after such edits. The
    copy's parameters do not require gradients: gradients with respect to
    the weights through ``predict`` in eval mode need ``reparameterize=False``.
    """

    def __init__(self, backbone: ConfigType, neck: ConfigType, bbox_head: ConfigType,
                 train_cfg: OptConfigType = None, test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None, reparameterize: bool = True,
                 channels_last: bool = True, checkpoint_fit: str = 'fine_tune',
                 init_cfg: OptMultiConfig = None) -> None:
        if checkpoint_fit not in CHECKPOINT_FIT_MODES:
            raise ValueError(f'model.checkpoint_fit={checkpoint_fit!r}: must be one of '
                             f'{CHECKPOINT_FIT_MODES}')
        super().__init__(backbone=backbone, neck=neck, bbox_head=bbox_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.reparameterize = bool(reparameterize)
        self.channels_last = bool(channels_last)
        self._inference_copy_cache = _InferenceCopyCache()
        self.checkpoint_fit = checkpoint_fit
        self.register_load_state_dict_pre_hook(checkpoint_fit_pre_hook)
        self.register_load_state_dict_post_hook(_drop_inference_copy)

    def invalidate_inference_copy(self) -> None:
        """Drop the cached fused copy; the next inference call rebuilds it
        from the current weights. Needed only after in-place weight edits
        in eval mode (see the class docstring)."""
        cache = self.__dict__.get('_inference_copy_cache')
        if cache is not None:
            cache.clear()

    def _weights_fingerprint(self) -> Tuple:
        """(data_ptr, device, dtype) of every parameter and buffer."""
        return tuple((t.data_ptr(), t.device, t.dtype)
                     for t in itertools.chain(self.parameters(), self.buffers()))

    def inference_model(self) -> nn.Module:
        """The module inference runs: ``self`` while training or with
        ``reparameterize`` off, else the cached fused copy (built now when
        missing or stale; see the class docstring)."""
        if self.training or not self.reparameterize:
            return self
        cache = self._inference_copy_cache
        fingerprint = self._weights_fingerprint()
        model = cache.model
        if model is None or cache.fingerprint != fingerprint:
            cache.clear()  # free the stale copy before building the next one
            # normal tensors even when first called under inference_mode
            # (inference tensors could not be used with autograd later)
            with torch.inference_mode(False):
                model = reparameterized_copy(self)
                if self.channels_last:
                    model.to(memory_format=torch.channels_last)
            cache.model, cache.fingerprint = model, fingerprint
        return model

    def train(self, mode: bool = True) -> 'RTDETRv2':
        """Set the mode (``eval()`` calls this too) and drop the fused copy."""
        self.invalidate_inference_copy()
        return super().train(mode)

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """mmdet's ``predict`` (images (B, 3, H, W) -> data samples with
        ``pred_instances``), run by :meth:`inference_model`."""
        model = self.inference_model()
        if model is not self:
            return model.predict(self._inference_layout(batch_inputs), batch_data_samples,
                                 rescale=rescale)
        return super().predict(batch_inputs, batch_data_samples, rescale=rescale)

    def val_loss_and_predict(self, data: Union[dict, tuple, list]
                             ) -> Tuple[Dict[str, Tensor], SampleList]:
        """``val_step`` plus the loss of the same forward: what
        ``RTDETRv2ValLoop(compute_loss=True)`` calls per batch.

        Args:
            data (dict): A batch from the val dataloader (``inputs`` and
                ``data_samples``), preprocessed here as ``val_step`` does
                (``data_preprocessor(data, False)``: no batch augmentation).

        Returns:
            tuple: the loss dict of :meth:`loss_and_predict` and the data
            samples with ``pred_instances``, equal to what ``val_step``
            returns.
        """
        data = self.data_preprocessor(data, False)
        return self.loss_and_predict(data['inputs'], data['data_samples'])

    def loss_and_predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                         rescale: bool = True) -> Tuple[Dict[str, Tensor], SampleList]:
        """The loss and the predictions of ONE forward, run by
        :meth:`inference_model` like :meth:`predict`.

        In eval mode the predictions equal :meth:`predict`'s and the loss is
        the training criterion on the same outputs without denoising
        (``RTDETRv2Head.loss_and_predict``). With ``reparameterize`` (the
        default) both come from the fused copy of the detector's CURRENT
        weights (the EMA weights while ``RTDETRv2EMAHook`` has swapped them
        in for validation): the same function as the detector in eval mode,
        equal up to float rounding.

        Args:
            batch_inputs (Tensor): Images (B, 3, H, W).
            batch_data_samples (list[DetDataSample]): With ``gt_instances``
                (xyxy pixels of the network input).
            rescale (bool): As :meth:`predict`.

        Returns:
            tuple: dict of loss terms (0-dim tensors) and the data samples
            with ``pred_instances`` (xyxy pixels of the original image).

        Raises:
            ValueError: A data sample without ground truth (the val
                pipeline has no ``LoadAnnotations``), naming the image.
        """
        for ds in batch_data_samples:
            if 'bboxes' not in getattr(ds, 'gt_instances', {}):
                raise ValueError(
                    f'the validation loss needs ground-truth boxes, but image '
                    f'{ds.metainfo.get("img_path", ds.metainfo.get("img_id", "?"))} has none '
                    '(no gt_instances): add dict(type=\'LoadAnnotations\', with_bbox=True) '
                    'to val_dataloader.dataset.pipeline before PackDetInputs, or set '
                    'val_cfg.compute_loss=False')
        model = self.inference_model()
        if model is not self:
            return model.loss_and_predict(self._inference_layout(batch_inputs),
                                          batch_data_samples, rescale=rescale)
        feats = self.extract_feat(batch_inputs)
        losses, results = self.bbox_head.loss_and_predict(feats, batch_data_samples,
                                                          rescale=rescale)
        return losses, self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: OptSampleList = None
                 ) -> Tuple[Tensor, Tensor]:
        """mmdet's tensor forward, run by :meth:`inference_model` (FLOP
        counting traces the fused model).

        Returns:
            tuple[Tensor, Tensor]: The head's ``cls_scores`` (L', B, Nq, C)
            logits and ``bbox_preds`` (L', B, Nq, 4) boxes, cxcywh normalised
            to the network input (:class:`RTDETRv2HeadOutputs`).

        NOTE: a tuple, not the head's dataclass: mmdet's ``get_flops.py``
        traces ``mode='tensor'`` with ``torch.jit``, which takes tuples only.
        """
        model = self.inference_model()
        if model is not self:
            return model._forward(self._inference_layout(batch_inputs), batch_data_samples)
        outs = super()._forward(batch_inputs, batch_data_samples)
        return outs.cls_scores, outs.bbox_preds

    def _inference_layout(self, batch_inputs: Tensor) -> Tensor:
        """Images (B, 3, H, W) in the fused copy's memory format."""
        if self.channels_last:
            return batch_inputs.contiguous(memory_format=torch.channels_last)
        return batch_inputs

    def switch_to_deploy(self) -> None:
        """Fuse the RepVGG blocks and fold every conv-BN IN PLACE, for
        deployment (outputs unchanged in eval mode; the state dict changes:
        norm entries go, convs get biases). ``reparameterize`` is turned off
        (nothing left to fold). To keep the detector unchanged use
        ``layers.reparameterize.reparameterized_copy``."""
        reparameterize_(self)
        self.reparameterize = False
        self.invalidate_inference_copy()
