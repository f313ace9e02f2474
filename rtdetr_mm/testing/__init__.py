"""What the tests share (as ``mmdet/testing`` for mmdet), and the synthetic
shapes data that the tests and ``make demo`` generate.

- :mod:`.model_utils`: models built from the shipped configs, data samples;
- :mod:`.tiny_coco`: tiny COCO datasets and child configs of the shipped ones;
- :mod:`.tiny_mmdet`: tiny mmdet detectors for the comparison tool;
- :mod:`.hf_reference`: transformers' RT-DETRv2, the parity reference;
- :mod:`.checkout`: child processes that run this checkout, never an
  installed copy (``child_site/sitecustomize.py`` checks it);
- :mod:`.synthetic`: the synthetic shapes dataset (COCO format);
- :mod:`.asserts`, :mod:`.tools`: shared assertions, ``tools/`` scripts as modules;
- :mod:`.toy_run`, :mod:`.ranks`: a toy training run for loop / hook tests,
  two CPU ranks with a hard time limit;
- :mod:`.export_models`, :mod:`.fused_models`, :mod:`.oracle_detector`:
  calibrated random models for the ONNX, reparameterisation and sliced
  inference tests;
- :mod:`.op_counter`: host syncs and aten ops of a piece of torch code;
- :mod:`.benchmark_utils`, :mod:`.loop_benchmark`: ``benchmark_vs_hf.py``;
- :mod:`.hf_trainer`, :mod:`.seed_migration`: the transformers ``Trainer``
  baseline and the three-arm migration benchmark;
- :mod:`.selfcheck`: ``tools/misc/selfcheck.py``.

Nothing here is imported by ``import rtdetr_mm``. ``ROOT`` is the checkout
(configs and tools live there, not in the package).
"""
import os.path as osp

#: the repository root of this checkout
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
