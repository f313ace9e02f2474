"""Train transformers' RTDetrV2ForObjectDetection with transformers' Trainer on
the data of an rtdetr_mm config, evaluate it with the config's COCO evaluator,
and write a result that compare.py prints beside rtdetr_mm's rows.

    python tools/analysis_tools/hf_trainer_baseline.py CONFIG --work-dir DIR \\
        [--knobs SCRIPT.py] [--max-steps N] [--init HF_DIR] [--seed S] \\
        [--name NAME] [--cfg-options K=V ...]

    python tools/analysis_tools/compare.py CONFIG --work-dirs RUN \\
        --results DIR/hf_trainer_result.json

Same as ``tools/train.py CONFIG``: the images and boxes (the config's datasets
built by mmdet), the input size (``image_size``), the batch
(``train_dataloader.batch_size`` x ``accumulative_counts``), the number of
optimizer steps (the config's run, or ``--max-steps``), the architecture
(checked by rtdetr_mm's converter), the parameter groups, lr, weight decay,
gradient clip and warm-up, and the evaluator (mmdet's CocoMetric on the
config's test split, as ``tools/test.py``; the mAP curve on the val split).

``--knobs SCRIPT.py``: the constants of a transformers seed script (read
without running it, ``rtdetr_mm.converters.seed_script.read_constants``);
the run is then the script's Trainer on CONFIG's data and budget. The knobs
the Trainer or transformers' model config express override the config:
LEARNING_RATE, WEIGHT_DECAY, WARMUP_RATIO, USE_FP16 / USE_BF16, VAL_BATCH,
EVAL_RATE_EPOCHS, USE_FOCAL_LOSS, FOCAL_GAMMA, FOCAL_ALPHA (these two act in
transformers' VFL), MATCHER_CLASS_COST, MATCHER_BBOX_COST. TRAIN_BATCH,
GRAD_ACCUM, EPOCHS and IMAGE_SIZE are the config's (same data and budget as
the rtdetr_mm runs it is compared with). LABEL_SMOOTHING_IN_MODEL, EOS_COEF
and CLASS_LOSS_COEF had no effect in the script (transformers reads none of
them) and have none here. The Trainer settings no knob covers are
transformers' defaults, as the script's Trainer had them: lr schedule
'linear' (decay to 0 after the warm-up), max_grad_norm 1.0; without
--knobs they are the config's (constant lr after the warm-up, its gradient
clip). The log and the result file list every value and where it came from.

Augmentation (pinned: albumentations 2.0.8, albucore 0.0.24): the training
augmentation of transformers' object-detection fine-tuning guide,
https://huggingface.co/docs/transformers/tasks/object_detection ::

    A.Compose([A.Perspective(p=0.1), A.HorizontalFlip(p=0.5),
               A.RandomBrightnessContrast(p=0.5), A.HueSaturationValue(p=0.1)],
              bbox_params=A.BboxParams(format="coco", label_fields=["category"],
                                       clip=True, min_area=25))

then transformers' RT-DETR image processor (resize to ``image_size``,
pixels / 255). Evaluation images are only resized, as the guide's
``A.NoOp()`` validation transform.

Model: transformers' own initialisation after ``set_seed(--seed, default the
config's randomness.seed)``, or the weights of ``--init HF_DIR`` (a
save_pretrained directory of the config's architecture). The initial weights
are saved in ``DIR/init_hf/`` (convert them with
``tools/model_converters/rtdetrv2_to_mmdet.py DIR/init_hf init.pth --config
CONFIG`` to start an rtdetr_mm run from the same weights), the trained ones
in ``DIR/final_hf/``.

Writes ``DIR/hf_trainer_result.json``: AP, AP50, AP75, APs, APm, APl, train
time (wall time of ``Trainer.train`` without the curve's evaluations),
images per second, parameters, the mAP curve, every setting with its source.

Needs ``accelerate`` and ``albumentations`` (pinned in
requirements/tests.txt; ``make install`` installs them). Exit status 1 with
``error: <message>`` when they are missing or CONFIG / the knobs / --init
cannot be used; training with rtdetr_mm never imports them.
"""
import argparse
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.engine.cli import USER_ERRORS, load_config  # noqa: E402
from rtdetr_mm.engine.runner import apply_image_size  # noqa: E402
from rtdetr_mm.testing import hf_trainer  # noqa: E402
from mmengine.config import DictAction  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='rtdetr_mm config: data, input size, batch, steps')
    parser.add_argument('--work-dir', required=True, help='where the result and models go')
    parser.add_argument('--knobs', help='a transformers seed script: its constants')
    parser.add_argument('--max-steps', type=int,
                        help="optimizer steps instead of the config's run")
    parser.add_argument('--init', help='initial weights: a Hugging Face RT-DETRv2 directory')
    parser.add_argument('--seed', type=int, help="instead of the config's randomness.seed")
    parser.add_argument('--name', help='row name in compare.py (default: from the config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of the config (key=value)')
    args = parser.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error(f'--max-steps {args.max_steps}: at least 1')
    return args


def read_knobs(path: str) -> dict:
    """The seed script's constants, read without running it."""
    if not osp.isfile(path):
        raise hf_trainer.BaselineError(f'--knobs {path}: no such file')
    from rtdetr_mm.converters.seed_script import read_constants
    return read_constants(path)


def run(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, 'none', args.cfg_options, args.work_dir)
    apply_image_size(cfg)  # as RTDETRv2Runner does when a run starts
    knobs = read_knobs(args.knobs) if args.knobs else None
    return hf_trainer.run(cfg, args.work_dir, knobs=knobs, knobs_path=args.knobs,
                          max_steps=args.max_steps, init=args.init, seed=args.seed,
                          name=args.name)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except (hf_trainer.BaselineError, hf_trainer.MissingExtrasError) + USER_ERRORS as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
