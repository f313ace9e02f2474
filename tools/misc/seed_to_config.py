"""Carry a transformers Trainer script's settings over to an rtdetr_mm config.

    python tools/misc/seed_to_config.py SCRIPT.py [--base r18|r50|CONFIG]
        [--out my_config.py] [--dry-run] [--fix-image-size]

Reads the script's top-level constants (TRAIN_BATCH, LEARNING_RATE, EOS_COEF,
...: README, "Fine-tuning knobs") with ``ast``, never running it, and
writes a child config of the r18 (default) or r50 fine-tuning config, each
key commented with the constant it came from. It prints what each constant
maps to, where its meaning differs from the script, warnings (EOS_COEF
1e-5), the constants the script lacks (the config default is kept) and
misspelled ones. The logic: ``rtdetr_mm/converters/seed_script.py``.

Exit status 0: written (or printed with ``--dry-run``); 1: refused, nothing
written, ``error: <message>`` on stderr naming the constant, its value and
why (IMAGE_SIZE not a multiple of 32 without ``--fix-image-size``, USE_FP16
and USE_BF16 both True, a value outside the run-settings table, a script
that does not parse).
"""
import argparse
import os
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from rtdetr_mm.converters.seed_script import (SeedScriptError, report_lines,  # noqa: E402
                                              translate)

BASES = {
    'r18': osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py'),
    'r50': osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r50vd_1xb8-36e_custom.py'),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Write an rtdetr_mm config from a transformers Trainer script's constants")
    parser.add_argument('script', help='the transformers training script (read, never run)')
    parser.add_argument('--base', default='r18',
                        help="'r18' (default), 'r50' or the path of a fine-tuning config")
    parser.add_argument('--out', default='my_config.py', help='config to write')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the config instead of writing it')
    parser.add_argument('--fix-image-size', action='store_true',
                        help='use the nearest multiple of 32 for an IMAGE_SIZE that is not one')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """0 when written (printed with --dry-run), 1 when refused (nothing written)."""
    args = parse_args(argv)
    base = BASES.get(args.base, args.base)
    if not osp.isfile(base):
        print(f'error: --base {args.base}: no such config (r18, r50 or the path of a '
              'config of configs/rtdetrv2_finetune/)', file=sys.stderr)
        return 1
    try:
        result = translate(args.script, base, args.out, fix_image_size=args.fix_image_size)
    except SeedScriptError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print('\n'.join(report_lines(result, args.out)))
    if result.refusals:
        for refusal in result.refusals:
            print(f'error: {refusal}', file=sys.stderr)
        print(f'error: nothing written to {args.out}', file=sys.stderr)
        return 1
    if args.dry_run:
        print(f'--dry-run: {args.out} not written; it would hold:\n')
        print(result.text, end='')
        return 0
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(result.text)
    print(f'Wrote {args.out}; next: python tools/misc/check_dataset.py {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
