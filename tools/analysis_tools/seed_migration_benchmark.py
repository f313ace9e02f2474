"""The three-arm measurement of the README's "Coming from the transformers
script": (a) transformers' Trainer with a seed script's constants, (b)
rtdetr_mm with the config seed_to_config.py writes from the same script,
(c) rtdetr_mm with its own recipe (the demo config), on the same data and
model shape, from the same initial weights, for the same optimizer steps.

    python tools/misc/make_demo_data.py
    python tools/analysis_tools/seed_migration_benchmark.py \\
        --work-dir work_dirs/seed_migration [--steps 1200] [--seeds 0 1] \\
        [--script configs/rtdetrv2_finetune/reference_seed_script.py] \\
        [--data-root data/shapes/] [--demo-config CONFIG]

Prints every command it runs (also written to WORK_DIR/commands.sh), runs the
arms one after the other (about an hour for 1200 steps x 2 seeds on 2 CPU
cores; run it on an otherwise idle machine), and writes WORK_DIR/arms.csv,
runs.csv, arms.md, arms_map.png and arms.json. What each arm is and how the
budget is matched: ``rtdetr_mm/testing/seed_migration.py``.

Exit status 0: done; 1: ``error: <message>`` (a refused --steps, a missing
file, an arm that failed: its own output is above the message).
"""
import argparse
import os.path as osp
import sys

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from rtdetr_mm.testing.seed_migration import (DEMO_CONFIG, REFERENCE_SCRIPT,  # noqa: E402
                                              BenchmarkError, run_benchmark)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', required=True, help='where the arms and tables go')
    parser.add_argument('--steps', type=int, default=1200,
                        help='optimizer steps of every arm (default 1200, the demo run)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1],
                        help='one run of every arm per seed (default 0 1)')
    parser.add_argument('--script', default=REFERENCE_SCRIPT,
                        help='the transformers seed script (read, never run)')
    parser.add_argument('--data-root', default='data/shapes/',
                        help='COCO-format shapes data (tools/misc/make_demo_data.py)')
    parser.add_argument('--demo-config', default=DEMO_CONFIG,
                        help="arm c's config and the model shape of every arm")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run_benchmark(args.work_dir, args.steps, args.seeds, script=args.script,
                      data_root=args.data_root, demo_config=args.demo_config)
    except BenchmarkError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
