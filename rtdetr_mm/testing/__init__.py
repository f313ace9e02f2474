"""What the tests share (as ``mmdet/testing`` for mmdet), and the synthetic
shapes data that the tests and ``make demo`` generate.

- :mod:`.model_utils`: models built from the shipped configs, data samples;
- :mod:`.tiny_coco`: tiny COCO datasets and child configs of the shipped ones;
- :mod:`.tiny_mmdet`: tiny mmdet detectors for the comparison tool;
- :mod:`.hf_reference`: transformers' RT-DETRv2, the parity reference;
- :mod:`.checkout`: child processes that run this checkout, never an
  installed copy (``child_site/sitecustomize.py`` checks it);
- :mod:`.synthetic`: the synthetic shapes dataset (COCO format).

Nothing here is imported by ``import rtdetr_mm``. ``ROOT`` is the checkout
(configs and tools live there, not in the package).
"""
import os.path as osp

#: the repository root of this checkout
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
