"""Convert RT-DETRv2 weights to an rtdetr_mm (mmengine) checkpoint.

SRC may be:
  * a Hugging Face model directory (config.json + model.safetensors, as
    ``save_pretrained`` writes it; read without pickle),
  * an official lyuwenyu/RT-DETR checkpoint ({'ema': {'module': ...}} or
    {'model': ...}),
  * an ImageNet PResNet-vd backbone checkpoint (usable as the backbone
    ``init_cfg=dict(type='Pretrained', checkpoint=DST)``).

Examples:
  python tools/model_converters/rtdetrv2_to_mmdet.py PekingU-rtdetr_v2_r18vd/ \
      checkpoints/rtdetrv2_r18vd_coco.pth --config configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py
"""
import argparse
import os.path as osp
import sys
import warnings

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402  (registers modules, checkpoint allow-list)
from rtdetr_mm.converters.rtdetrv2 import ConversionError, convert  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='HF model directory, official .pth, or ImageNet PResNet .pth')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--config', help='rtdetr_mm config to check the architecture against')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            summary = convert(args.src, args.dst, args.config)
        except ConversionError as err:
            print(f'error: {err}', file=sys.stderr)
            return 1
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f'warning: {w.message}', file=sys.stderr)
    arch = summary['arch']
    if arch:
        print(f"converted {summary['kind']} RT-DETRv2: PResNet-{arch['depth']}, "
              f"{arch['num_layers']} decoder layers, {arch['num_classes']} classes -> {args.dst}")
    else:
        print(f'converted ImageNet PResNet backbone -> {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
