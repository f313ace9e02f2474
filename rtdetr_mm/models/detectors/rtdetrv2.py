"""RT-DETRv2 detector."""
from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType, OptMultiConfig


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
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self, backbone: ConfigType, neck: ConfigType, bbox_head: ConfigType,
                 train_cfg: OptConfigType = None, test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(backbone=backbone, neck=neck, bbox_head=bbox_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)

    def switch_to_deploy(self) -> None:
        """Fuse the neck's RepVGG branches for deployment (outputs unchanged)."""
        if hasattr(self.neck, 'switch_to_deploy'):
            self.neck.switch_to_deploy()
