"""Check this installation on a device: versions, training (fp32, bf16, fp16
with loss scaling), device vs CPU agreement, SyncBN in a process group,
tools/train.py --amp, ONNX export, images per second.

    python tools/misc/selfcheck.py [--device cuda|cpu] [--out report.json]
        [--only ITEM ...] [--size 640] [--step-size N] [--quick] [--work-dir DIR]
    make selfcheck [DEVICE=cuda|cpu] [OUT=report.json]

Prints one line per item, PASS / FAIL / SKIP with the reason, and writes
the report (every item with its numbers) to ``--out`` as JSON. Exit status
1 if an item FAILed or on a bad option (``error: <message>``), else 0. The
items and what each asserts: ``rtdetr_mm/testing/selfcheck.py``.
"""
import argparse
import json
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402

from rtdetr_mm.testing.selfcheck import (ITEMS, QUICK, Options, SelfCheckError,  # noqa: E402
                                         run)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Check this rtdetr_mm installation on a device')
    parser.add_argument('--device', choices=('cuda', 'cpu'),
                        default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='default: cuda when a GPU is visible, else cpu')
    parser.add_argument('--out', help='write the report here (JSON)')
    parser.add_argument('--only', nargs='+', metavar='ITEM', default=(),
                        help=f'run only these items ({", ".join(ITEMS)})')
    parser.add_argument('--size', type=int, default=640,
                        help='image side of the forward/backward and inference items (640)')
    parser.add_argument('--step-size', type=int,
                        help='image side of the training steps (640 on cuda, 160 on cpu)')
    parser.add_argument('--quick', action='store_true',
                        help=f'a fast smoke run (the tests use it): {QUICK["size"]}² / '
                        f'{QUICK["step_size"]}² images, {QUICK["steps"]} steps, a small model '
                        'with a frozen backbone')
    parser.add_argument('--work-dir', help='keep the generated data, train run and ONNX file '
                        'here (default: a temporary folder)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = dict(QUICK, quick=True) if args.quick else dict(size=args.size,
                                                             step_size=args.step_size)
    opts = Options(device=args.device, work_dir=args.work_dir, **sizes)
    print(f'rtdetr_mm self-check on {opts.device}', flush=True)
    try:
        report = run(opts, only=args.only, log=lambda line: print(line, flush=True))
    except SelfCheckError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    failed = report['failed']
    print(f"{report['status']}: {len(report['items'])} items in {report['seconds']} s"
          + (f"; failed: {', '.join(failed)}" if failed else '')
          + (f'; report: {args.out}' if args.out else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
