"""Benchmark rtdetr_mm's RT-DETRv2 against transformers' RTDetrV2ForObjectDetection
with the same weights (transformers' model with re-drawn weights, converted to
ours by rtdetr_mm's converter) on the same inputs.

Numbers measured on a small machine (2 CPU cores) are only meaningful with
nothing else running on it: close other jobs, and compare ratios rather
than absolute times.

Modes (combine them; with none of --rows/--sweeps/--profile the rows run):

* rows: for each --sizes x --modes (inference, train step = forward + loss +
  backward + AdamW step) x --batches x --precisions (fp32; bf16 = autocast
  around forward + loss on both sides): median of --repeats runs of each
  implementation, interleaved in one process (one warm-up each, then ours,
  hf, ours, hf, ...), ratio ours/hf (< 1: ours faster). Train rows add the
  peak training memory of two steps (a fresh subprocess per implementation,
  both at once; CPU: peak RSS growth over the RSS after building the model,
  CUDA: torch.cuda.max_memory_allocated) and the
  host syncs / aten ops of forward+loss+backward and of the optimizer step
  (rtdetr_mm.testing.op_counter). Inference rows add the FLOPs of the forward
  (torch.utils.flop_counter: matmuls and convolutions), the achieved FLOP/s
  and its share of this machine's torch.mm peak (--mm-size). Writes
  rows.csv and peak.csv:

    python tools/analysis_tools/benchmark_vs_hf.py --sizes r18vd r50vd --batches 1 4

* sweeps (fp32, --sweep-size, interleaved; --sweeps NAME... runs some):
  image size (batch --sweep-batch), batch (image --image), GT boxes per
  image (train step only, batch --sweep-batch, image --image), each written
  as sweep_<name>.csv and a PNG, plus step(100 GT) / step(4 GT) per
  implementation (target for ours: <= 1.3):

    python tools/analysis_tools/benchmark_vs_hf.py --sweeps
    python tools/analysis_tools/benchmark_vs_hf.py --sweeps gt --sweep-gts 4 100

* profile: torch.profiler ranges per stage (backbone, encoder, query
  selection, denoising, decoder, matching, loss, backward, optimizer, other)
  of a train step and an inference call (--modes) of each implementation
  (fp32, --profile-steps after one warm-up), side by side. Ours: forward
  hooks on the backbone and the neck, the head's own rtdetr_mm:* ranges;
  transformers': hooks on its backbone, input projections + encoder,
  query-selection heads (its top-k / gather stay in 'other'), decoder,
  Hungarian matcher, and wrappers of its loss and denoising functions. A stage's time is its ranges' wall time
  minus the stage ranges nested in it, so the stages add up to the step.
  Writes profile.md (a markdown table for docs/performance.md):

    python tools/analysis_tools/benchmark_vs_hf.py --profile --sizes r18vd r50vd \\
        --profile-batch 4 --image 640

* loop (ours only): an iteration of tools/train.py on --loop-config (the
  demo by default; its data: tools/misc/make_demo_data.py) against the
  model's train_step alone on the same batches, for each --loop-workers
  setting (rtdetr_mm/testing/loop_benchmark.py; target <= 1.1). Writes
  loop.csv:

    python tools/analysis_tools/benchmark_vs_hf.py --loop --loop-workers 0 1 2

* compile (ours only): our training step (--sizes[0], --batches[0], --image,
  fp32) eager against forward + loss through torch.compile, interleaved
  after the compiled step's warm-up; the first compiled call's time and
  dynamo's graph breaks. Writes compile.csv:

    python tools/analysis_tools/benchmark_vs_hf.py --compile --sizes r18vd --batches 2

--with-cp builds ours with activation checkpointing in the backbone and the
encoder (what it saves and costs: run the train rows with and without it).

Tiny smoke run (checks the code, not the speed):

    OMP_NUM_THREADS=1 python tools/analysis_tools/benchmark_vs_hf.py --rows --sweeps \\
        --profile --sizes r18vd --batches 1 --precisions fp32 --image 128 --repeats 1 \\
        --sweep-images 128 160 --sweep-batches 1 2 --sweep-gts 4 100 --sweep-batch 1 \\
        --profile-batch 1 --mm-size 256

Images must be >= 128 px (transformers selects its 300 queries among the
encoder's tokens). --device cuda runs everything on the GPU (synchronized
timings, CUDA peak memory); the profile's ranges are then host-side times.
"""
import argparse
import csv
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

SIZES = ['r18vd', 'r34vd', 'r50vd', 'r101vd']
ROW_COLUMNS = ['with_cp', 'size', 'mode', 'batch', 'image', 'precision', 'ours_s', 'hf_s',
               'ratio',
               'ours_peak_mb', 'hf_peak_mb', 'mem_ratio',
               'ours_fwd_bwd_syncs', 'ours_fwd_bwd_ops', 'ours_opt_syncs', 'ours_opt_ops',
               'hf_fwd_bwd_syncs', 'hf_fwd_bwd_ops', 'hf_opt_syncs', 'hf_opt_ops',
               'ours_sync_kinds', 'hf_sync_kinds', 'ours_opt_sync_kinds', 'hf_opt_sync_kinds',
               'ours_gflop', 'hf_gflop',
               'ours_gflop_s', 'hf_gflop_s', 'ours_peak_frac', 'hf_peak_frac']
SWEEP_COLUMNS = ['sweep', 'value', 'mode', 'ours_s', 'hf_s', 'ratio']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', action='store_true', help='the rows (default without a mode)')
    p.add_argument('--sweeps', nargs='*', choices=['image', 'batch', 'gt'],
                   help='sweeps of image size / batch / GT boxes (none named: all)')
    p.add_argument('--profile', action='store_true', help='per-stage profile')
    p.add_argument('--compile', action='store_true',
                   help='our training step eager against torch.compile')
    p.add_argument('--loop', action='store_true',
                   help='a tools/train.py iteration against the model step alone')
    p.add_argument('--loop-config', default=osp.join(
        ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py'))
    p.add_argument('--loop-iters', type=int, default=40, help='loop iterations per setting')
    p.add_argument('--loop-warmup', type=int, default=5, help='iterations left out')
    p.add_argument('--loop-workers', nargs='+', type=int, default=[0, 1, 2],
                   help='num_workers settings (persistent_workers when > 0)')
    p.add_argument('--loop-cfg-options', nargs='+', default=[],
                   help='key=value merged into --loop-config (e.g. data_root=data/tiny/)')
    p.add_argument('--sizes', nargs='+', default=['r18vd', 'r50vd'], choices=SIZES)
    p.add_argument('--batches', nargs='+', type=int, default=[1, 4])
    p.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'], choices=['fp32', 'bf16'])
    p.add_argument('--modes', nargs='+', default=['inference', 'train'],
                   choices=['inference', 'train'])
    p.add_argument('--image', type=int, default=640)
    p.add_argument('--num-gt', type=int, default=8, help='GT boxes per image (train step)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--no-memory', action='store_true', help='rows: skip peak memory')
    p.add_argument('--with-cp', action='store_true',
                   help='ours with activation checkpointing (backbone.with_cp, neck.with_cp)')
    p.add_argument('--no-counts', action='store_true', help='rows: skip sync / op counts')
    p.add_argument('--no-flops', action='store_true', help='rows: skip FLOPs and mm peak')
    p.add_argument('--mm-size', type=int, default=2048, help='torch.mm size of the peak')
    p.add_argument('--sweep-size', default='r18vd', choices=SIZES)
    p.add_argument('--sweep-batch', type=int, default=2, help='batch of the image/GT sweeps')
    p.add_argument('--sweep-images', nargs='+', type=int, default=[320, 480, 640, 800, 960, 1280])
    p.add_argument('--sweep-batches', nargs='+', type=int, default=[1, 2, 4, 8])
    p.add_argument('--sweep-gts', nargs='+', type=int, default=[1, 4, 10, 30, 100, 300])
    p.add_argument('--profile-batch', type=int, default=4)
    p.add_argument('--profile-steps', type=int, default=1, help='profiled steps (mean)')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    p.add_argument('--out-dir', default=osp.join('work_dirs', 'benchmark_vs_hf'))
    p.add_argument('--memory-child', nargs=2, metavar=('IMPL', 'WORKDIR'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sweeps is not None:
        args.sweeps = args.sweeps or ['image', 'batch', 'gt']
    if not (args.rows or args.sweeps or args.profile or args.loop or args.compile):
        args.rows = True
    for image in {args.image, *(args.sweep_images if args.sweeps else [])}:
        if sum((-(-image // s)) ** 2 for s in (8, 16, 32)) < 300:
            p.error(f'image {image}: fewer encoder tokens than the 300 queries '
                    "(transformers' top-k fails); use >= 128")
    return args


class Session:
    """Both models of each size, built once (same weights), and the inputs."""

    def __init__(self, args, tmp: str) -> None:
        self.args, self.tmp, self.pairs, self.workdirs = args, tmp, {}, {}

    def models(self, size: str) -> dict:
        from rtdetr_mm.testing.benchmark_utils import build_pair
        if size not in self.pairs:
            self.workdirs[size] = osp.join(self.tmp, size)
            os.makedirs(self.workdirs[size])
            self.pairs[size] = build_pair(size, self.args.device, self.workdirs[size],
                                          self.args.with_cp)
        return self.pairs[size]

    def steppers(self, size, mode, batch, image, precision='fp32', num_gt=None) -> dict:
        from rtdetr_mm.testing.benchmark_utils import Stepper, make_inputs
        num_gt = self.args.num_gt if num_gt is None else num_gt
        inputs = make_inputs(batch, image, num_gt, self.args.device)
        return {impl: Stepper(impl, model, inputs, mode, precision, self.args.device)
                for impl, model in self.models(size).items()}


# ---------------------------------------------------------------- rows
def run_rows(args, session) -> list:
    peaks = {} if args.no_flops else measure_peaks(args)
    rows = []
    print(f"\n{'size':<7}{'mode':<10}{'batch':>6}{'prec':>6}{'ours s':>9}{'hf s':>9}"
          f"{'ratio':>7}{'ours MB':>9}{'hf MB':>9}{'ours syncs':>11}{'hf syncs':>9}")
    for size in args.sizes:
        for mode in args.modes:
            for batch in args.batches:
                for precision in args.precisions:
                    row = measure_row(args, session, size, mode, batch, precision, peaks)
                    rows.append(row)
                    print(f"{size:<7}{mode:<10}{batch:>6}{precision:>6}{row['ours_s']:>9.3f}"
                          f"{row['hf_s']:>9.3f}{row['ratio']:>7.2f}"
                          f"{_fmt(row.get('ours_peak_mb')):>9}{_fmt(row.get('hf_peak_mb')):>9}"
                          f"{_fmt(row.get('ours_fwd_bwd_syncs')):>11}"
                          f"{_fmt(row.get('hf_fwd_bwd_syncs')):>9}", flush=True)
    write_csv(osp.join(args.out_dir, 'rows.csv'), rows, ROW_COLUMNS)
    print_counts(rows)
    print_flops(rows)
    return rows


def measure_row(args, session, size, mode, batch, precision, peaks) -> dict:
    from rtdetr_mm.testing.benchmark_utils import (count_train_step, forward_flops,
                                                   interleaved_medians)
    steppers = session.steppers(size, mode, batch, args.image, precision)
    times = interleaved_medians(steppers, args.repeats, args.device)
    row = dict(with_cp=args.with_cp, size=size, mode=mode, batch=batch, image=args.image,
               precision=precision,
               ours_s=times['ours'], hf_s=times['hf'], ratio=times['ours'] / times['hf'])
    if mode == 'train' and not args.no_counts:
        for impl, stepper in steppers.items():
            counts = count_train_step(stepper)
            row.update({f'{impl}_{k}': v for k, v in counts.items()})
    if mode == 'train' and not args.no_memory:
        mem = memory_in_children(args, session, size, batch, precision)
        row.update(ours_peak_mb=mem['ours'], hf_peak_mb=mem['hf'],
                   mem_ratio=mem['ours'] / mem['hf'] if mem['hf'] > 0 else '')
    if mode == 'inference' and peaks:
        for impl, stepper in steppers.items():
            flops = forward_flops(stepper)
            row[f'{impl}_gflop'] = flops / 1e9
            row[f'{impl}_gflop_s'] = flops / times[impl] / 1e9
            row[f'{impl}_peak_frac'] = flops / times[impl] / peaks[precision]
    return row


def measure_peaks(args) -> dict:
    import torch
    from rtdetr_mm.testing.benchmark_utils import mm_peak_flops
    dtypes = dict(fp32=torch.float32, bf16=torch.bfloat16)
    peaks = {p: mm_peak_flops(dtypes[p], args.mm_size, args.device) for p in args.precisions}
    print(f'torch.mm {args.mm_size}x{args.mm_size} peak on {args.device}: '
          + ', '.join(f'{p} {v / 1e9:.1f} GFLOP/s' for p, v in peaks.items()))
    write_csv(osp.join(args.out_dir, 'peak.csv'),
              [dict(precision=p, mm_size=args.mm_size, gflop_s=v / 1e9) for p, v in peaks.items()],
              ['precision', 'mm_size', 'gflop_s'])
    return peaks


def memory_in_children(args, session, size, batch, precision) -> dict:
    """Peak training memory (MB) of each implementation, each in a fresh
    process (both at once: each measures its own process only)."""
    session.models(size)
    procs = {}
    for impl in ('ours', 'hf'):
        cmd = [sys.executable, osp.abspath(__file__), '--memory-child', impl,
               session.workdirs[size], '--sizes', size, '--batches', str(batch),
               '--precisions', precision, '--image', str(args.image), '--num-gt',
               str(args.num_gt), '--device', args.device, '--threads', str(args.threads)]
        cmd += ['--with-cp'] if args.with_cp else []
        procs[impl] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=dict(os.environ, PYTHONWARNINGS='ignore'))
    peaks = {}
    for impl, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f'{impl} memory child failed ({proc.returncode}):\n{err[-3000:]}')
        peaks[impl] = json.loads(out.strip().splitlines()[-1])['peak_mb']
    return peaks


def memory_child(args) -> None:
    from rtdetr_mm.testing.benchmark_utils import (Stepper, load_one, make_inputs,
                                                   peak_train_memory_mb)
    impl, workdir = args.memory_child
    model = load_one(impl, args.sizes[0], workdir, args.device, args.with_cp)
    inputs = make_inputs(args.batches[0], args.image, args.num_gt, args.device)
    stepper = Stepper(impl, model, inputs, 'train', args.precisions[0], args.device)
    print(json.dumps(dict(peak_mb=peak_train_memory_mb(stepper))))


def print_counts(rows) -> None:
    counted = [r for r in rows if 'ours_fwd_bwd_syncs' in r]
    if not counted:
        return
    print('\nHost syncs / aten ops of one train step (fwd+loss+bwd | optimizer step):')
    for r in counted:
        print(f"  {r['size']} batch {r['batch']} {r['precision']}:")
        for impl in ('ours', 'hf'):
            c = {k[len(impl) + 1:]: v for k, v in r.items() if k.startswith(impl + '_')}
            print(f"    {impl:<5} syncs {c['fwd_bwd_syncs']:>5} | {c['opt_syncs']:<4}"
                  f" aten ops {c['fwd_bwd_ops']:>7} | {c['opt_ops']:<6}"
                  f" by kind: {c['sync_kinds'] or '-'} | {c['opt_sync_kinds'] or '-'}")
    print("  (the optimizer's syncs are AdamW's reads of its per-parameter step counters, "
          'CPU scalars: no device wait on a GPU)')


def print_flops(rows) -> None:
    counted = [r for r in rows if 'ours_gflop' in r]
    if not counted:
        return
    print('\nInference FLOPs (matmuls + convolutions of one call), achieved GFLOP/s '
          '(FLOPs / median time) and share of the torch.mm peak:')
    for r in counted:
        print(f"  {r['size']} batch {r['batch']} {r['precision']}: " + '; '.join(
            f"{impl} {r[impl + '_gflop']:.2f} GFLOP, {r[impl + '_gflop_s']:.1f} GFLOP/s, "
            f"{100 * r[impl + '_peak_frac']:.1f}% of peak" for impl in ('ours', 'hf')))


# ---------------------------------------------------------------- sweeps
def run_sweeps(args, session) -> dict:
    from rtdetr_mm.testing.benchmark_utils import interleaved_medians
    size, sb = args.sweep_size, args.sweep_batch
    plan = dict(image=[(v, dict(batch=sb, image=v)) for v in args.sweep_images],
                batch=[(v, dict(batch=v, image=args.image)) for v in args.sweep_batches],
                gt=[(v, dict(batch=sb, image=args.image, num_gt=v)) for v in args.sweep_gts])
    results = {}
    for sweep in args.sweeps:
        points = plan[sweep]
        rows = []
        for mode in (['train'] if sweep == 'gt' else args.modes):
            for value, kwargs in points:
                times = interleaved_medians(session.steppers(size, mode, **kwargs),
                                            args.repeats, args.device)
                rows.append(dict(sweep=sweep, value=value, mode=mode, ours_s=times['ours'],
                                 hf_s=times['hf'], ratio=times['ours'] / times['hf']))
                print(f"sweep {sweep:<6}{value:>6} {mode:<10}ours {times['ours']:.3f} s  "
                      f"hf {times['hf']:.3f} s  ratio {rows[-1]['ratio']:.2f}", flush=True)
        write_csv(osp.join(args.out_dir, f'sweep_{sweep}.csv'), rows, SWEEP_COLUMNS)
        plot_sweep(osp.join(args.out_dir, f'sweep_{sweep}.png'), rows, sweep, size)
        results[sweep] = rows
    gt = {r['value']: r for r in results.get('gt', [])}
    if 4 in gt and 100 in gt:
        print('train step(100 GT) / step(4 GT): ' + ', '.join(
            f"{impl} {gt[100][impl + '_s'] / gt[4][impl + '_s']:.2f}" for impl in ('ours', 'hf'))
            + ' (target for ours: <= 1.3)')
    return results


def plot_sweep(path, rows, sweep, size) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    modes = list(dict.fromkeys(r['mode'] for r in rows))
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    labels = dict(image='image size (px)', batch='batch', gt='GT boxes per image')
    for ax, mode in zip(axes[0], modes):
        sel = [r for r in rows if r['mode'] == mode]
        for impl, name in (('ours', 'rtdetr_mm'), ('hf', 'transformers')):
            ax.plot([r['value'] for r in sel], [r[impl + '_s'] for r in sel], 'o-', label=name)
        ax.set(xlabel=labels[sweep], ylabel='seconds (median)', title=f'{size} {mode}')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- profile
def run_profile(args, session) -> list:
    import torch
    from rtdetr_mm.testing.benchmark_utils import STAGES, profile_step
    tables, md = [], []
    for size in args.sizes:
        for mode in [m for m in ('train', 'inference') if m in args.modes]:
            steppers = session.steppers(size, mode, args.profile_batch, args.image)
            res = {impl: profile_step(s, args.profile_steps) for impl, s in steppers.items()}
            extra = sorted((set(res['ours']) | set(res['hf'])) - set(STAGES) - {'total'})
            stages = [s for s in STAGES + tuple(extra) if s in res['ours'] or s in res['hf']]
            title = (f'{size}, {mode}, batch {args.profile_batch}, {args.image}x{args.image}, '
                     f'{args.device}, {torch.get_num_threads()} threads, '
                     f'mean of {args.profile_steps} step(s)')
            table = [(s, res['ours'].get(s), res['hf'].get(s)) for s in stages]
            table.append(('total', res['ours']['total'], res['hf']['total']))
            print_profile(title, table, res)
            md.append(profile_markdown(title, table, res))
            tables.append(dict(size=size, mode=mode, stages=table))
    with open(osp.join(args.out_dir, 'profile.md'), 'w') as f:
        f.write('\n'.join(md))
    print(f"profile table: {osp.join(args.out_dir, 'profile.md')}")
    return tables


def _share(ms, res, impl) -> str:
    return '' if ms is None else f"{100 * ms / res[impl]['total']:.1f}%"


def print_profile(title, table, res) -> None:
    print(f"\nprofile: {title}\n{'stage':<17}{'ours ms':>10}{'share':>8}{'hf ms':>10}{'share':>8}")
    for stage, ours, hf in table:
        print(f"{stage:<17}{_fmt(ours, '.1f'):>10}{_share(ours, res, 'ours'):>8}"
              f"{_fmt(hf, '.1f'):>10}{_share(hf, res, 'hf'):>8}")


def profile_markdown(title, table, res) -> str:
    lines = [f'**{title}**', '',
             '| stage | rtdetr_mm ms | share | transformers ms | share |',
             '|---|---:|---:|---:|---:|']
    for stage, ours, hf in table:
        lines.append(f"| {stage} | {_fmt(ours, '.1f')} | {_share(ours, res, 'ours')} | "
                     f"{_fmt(hf, '.1f')} | {_share(hf, res, 'hf')} |")
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------- output
def _fmt(value, spec='.0f') -> str:
    if value is None or value == '':
        return '-'
    return format(value, spec) if isinstance(value, float) else str(value)


def run_compile(args, session) -> dict:
    """The compile mode: see the module docstring."""
    import copy
    import time

    import torch
    import torch._dynamo
    from rtdetr_mm.testing.benchmark_utils import (Stepper, interleaved_medians, make_inputs,
                                                   synchronize)
    size, batch = args.sizes[0], args.batches[0]
    eager_model = session.models(size)['ours']
    inputs = make_inputs(batch, args.image, args.num_gt, args.device)
    steppers = dict(eager=Stepper('ours', eager_model, inputs, 'train', 'fp32', args.device),
                    compiled=Stepper('ours', copy.deepcopy(eager_model), inputs, 'train',
                                     'fp32', args.device, compile=True))
    counters = torch._dynamo.utils.counters  # dynamo's own tally of frames and breaks
    counters.clear()
    synchronize(args.device)
    start = time.perf_counter()
    steppers['compiled']()  # compiles
    synchronize(args.device)
    first = time.perf_counter() - start
    breaks = dict(counters['graph_break'])
    times = interleaved_medians(steppers, args.repeats, args.device)
    row = dict(size=size, batch=batch, image=args.image, first_call_s=round(first, 1),
               eager_s=times['eager'], compiled_s=times['compiled'],
               speedup=times['eager'] / times['compiled'],
               graph_breaks=sum(breaks.values()),
               break_reasons='; '.join(f'{n}x {r[:80]}' for r, n in breaks.items()))
    print(f"compile: {size} batch {batch} {args.image}px: first compiled step {first:.0f} s; "
          f"eager {row['eager_s']:.2f} s, compiled {row['compiled_s']:.2f} s "
          f"(speed-up {row['speedup']:.2f}x, median of {args.repeats}); "
          f"{row['graph_breaks']} graph breaks: {row['break_reasons']}", flush=True)
    write_csv(osp.join(args.out_dir, 'compile.csv'), [row], list(row))
    return row


def run_loop(args) -> list:
    """The loop mode (ours only): see rtdetr_mm/testing/loop_benchmark.py."""
    from mmengine.config import Config, DictAction

    from rtdetr_mm.testing.loop_benchmark import LOOP_COLUMNS, measure_loop
    cfg = Config.fromfile(args.loop_config)
    options = argparse.Namespace()
    DictAction(option_strings=[], dest='o')(None, options, args.loop_cfg_options)
    cfg.merge_from_dict(getattr(options, 'o', {}))
    rows = []  # on the runner's device (CUDA when there is one), not --device
    for workers in args.loop_workers:
        with tempfile.TemporaryDirectory() as work_dir:
            row = measure_loop(cfg, args.loop_iters, args.loop_warmup, workers, work_dir)
        rows.append(row)
        print(f"loop: num_workers {workers}: iteration {row['loop_ms']:.0f} ms, model step "
              f"{row['step_ms']:.0f} ms, ratio {row['ratio']:.3f} (median of {row['iters']})",
              flush=True)
    write_csv(osp.join(args.out_dir, 'loop.csv'), rows, LOOP_COLUMNS)
    return rows


def write_csv(path, rows, columns) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval='')
        writer.writeheader()
        writer.writerows(rows)
    print(f'wrote {path}')


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    if args.device is None:
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args)
    os.makedirs(args.out_dir, exist_ok=True)
    print(f'device {args.device}, torch threads {torch.get_num_threads()}, '
          f'torch {torch.__version__}; out-dir {args.out_dir}')
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(args, tmp)
        if args.rows:
            run_rows(args, session)
        if args.sweeps:
            run_sweeps(args, session)
        if args.profile:
            run_profile(args, session)
        if args.compile:
            run_compile(args, session)
    if args.loop:
        run_loop(args)


if __name__ == '__main__':
    main()
