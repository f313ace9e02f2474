"""Compare trained detectors in one table: parameters, FLOPs, latency,
training time and COCO bbox AP.

    python tools/analysis_tools/compare.py CONFIG [CONFIG ...] \\
        (--checkpoints CKPT [CKPT ...] | --work-dirs DIR [DIR ...]) \\
        [--names NAME ...] [--csv FILE] [--latency-runs 20] [--warmup-runs 3] \\
        [--device cpu] [--out-dir DIR] [--cfg-options K=V ...] [--verbose] \\
        [--results RESULT.json ...]

One checkpoint (or one training work dir, whose ``last_checkpoint`` is used)
per config, in the same order. For each model:

* **params**: every parameter of the model built from its config
  (``mmengine.analysis.parameter_count``).
* **FLOPs**: mmengine's ``FlopAnalyzer`` (1 multiply-add = 1 FLOP) on the
  tensor forward (``model._forward``: backbone, neck, head; no box decoding,
  no NMS) of the first test image after the test pipeline, batch 1, at the
  config's input size (for RT-DETRv2 configs ``image_size`` is written into
  the pipelines first, as ``RTDETRv2Runner`` does). Counted: conv, linear, (b)matmul, einsum, norms,
  interpolation, plus handles added here for ``baddbmm``,
  ``scaled_dot_product_attention`` and ``grid_sample`` (by mode: bilinear 4
  per sampled value, nearest 0, bicubic 16; the sampling of deformable
  attention). Elementwise ops, softmax, sorting and indexing are not counted
  (mmengine's / fvcore's convention). A value is marked ``>=`` (lower bound)
  when the trace met an operator that does arithmetic and has no counter
  (e.g. a compiled CUDA kernel such as mmcv's deformable attention on GPU).
* **latency**: median of ``--latency-runs`` timed ``model.test_step`` calls
  (data preprocessor, forward, post-processing incl. NMS) on that image,
  batch 1, after ``--warmup-runs`` untimed calls, on ``--device`` with
  torch's current number of threads.
* **train time**: the sum of all training-iteration times (data loading,
  forward, backward, optimizer step; not validation) stored in the
  checkpoint's message hub by mmengine's ``IterTimerHook`` (``train/time``,
  one value per iteration, kept across ``--resume``).
* **from scratch**: the table says every model was trained from scratch only
  when no config initialises from pretrained weights (``init_cfg`` of type
  ``Pretrained``, ``pretrained=``, ``load_from``); else it names them.
* **AP ... APl**: the config's test loop (test dataloader and evaluator,
  mmdet's ``CocoMetric``) run with the checkpoint, as ``tools/test.py``
  does.
* **img/s (train)**: training images per second of training time
  (iterations x ``train_dataloader.batch_size`` / train time; one process).

``--results``: rows measured elsewhere, one JSON file each, printed after
the configs' rows: ``tools/analysis_tools/hf_trainer_baseline.py`` writes
one (transformers' Trainer on a config's data; AP ... APl from the same
CocoMetric, its train time, images per second and params; no FLOPs or
latency, ``n/a``).

The Markdown table is all that goes to stdout (progress and the logs of the
test runs go to stderr), ``--csv`` writes the same rows as CSV. Checkpoints
load with ``torch.load(weights_only=True)`` and rtdetr_mm's allow-list
(``rtdetr_mm.engine.checkpoint_safety``).
"""
import argparse
import contextlib
import copy
import csv
import math
import os
import os.path as osp
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

# run from a checkout without installing: the repo root goes first on the path
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import rtdetr_mm  # noqa: F401,E402
from rtdetr_mm.engine.checkpoint_safety import safe_load_checkpoint  # noqa: E402
from rtdetr_mm.engine.cli import load_config  # noqa: E402
from rtdetr_mm.engine.runner import apply_image_size  # noqa: E402

import torch  # noqa: E402
from mmdet.registry import DATASETS, MODELS, RUNNERS  # noqa: E402
from mmengine.analysis import FlopAnalyzer, parameter_count  # noqa: E402
from mmengine.analysis.jit_handles import get_shape  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.model.utils import revert_sync_batchnorm  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from torch import nn  # noqa: E402

#: (column, key of mmdet's CocoMetric results)
AP_COLUMNS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
              ('AP75', 'coco/bbox_mAP_75'), ('APs', 'coco/bbox_mAP_s'),
              ('APm', 'coco/bbox_mAP_m'), ('APl', 'coco/bbox_mAP_l'))

#: Traced operators that do arithmetic worth counting: one of these without a
#: counter makes the FLOPs a lower bound. Everything else left uncounted is
#: elementwise, a reduction, a sort or indexing (not counted by convention).
_COUNTABLE_OP = re.compile(
    r'conv|mm\b|matmul|linear|einsum|attention|grid_sampler|deform|norm|'
    r'upsample|interpolate|PythonOp|lstm|gru|rnn|fft', re.IGNORECASE)

_FOOTNOTE = (
    'Every model was trained from scratch on the same data (no pretrained '
    'weights: no `init_cfg` of type Pretrained, no `pretrained`, no `load_from` '
    'in the configs).')


# --------------------------------------------------------------------------
# FLOP counters for operators mmengine does not count (or counts as bilinear)
# --------------------------------------------------------------------------
def grid_sampler_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::grid_sampler(input, grid, mode, padding_mode, align_corners)``.

    The output is (N, C, H_out, W_out); each value is a weighted sum of 4
    (bilinear, mode 0), 1 (nearest, mode 1: a copy, 0 multiply-adds) or 16
    (bicubic, mode 2) input values.
    """
    mode = inputs[2].toIValue()
    macs_per_value = {0: 4, 1: 0, 2: 16}[mode]
    return macs_per_value * math.prod(get_shape(outputs[0]))


def baddbmm_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::baddbmm(input, batch1 (B, N, M), batch2 (B, M, P), ...)``:
    B * N * M * P multiply-adds (the scaled addition of ``input`` is
    elementwise, not counted)."""
    b, n, m = get_shape(inputs[1])
    p = get_shape(inputs[2])[-1]
    return b * n * m * p


def sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::scaled_dot_product_attention(q (..., L, E), k (..., S, E),
    v (..., S, Ev), ...)``: Q K^T and the weighted sum of V,
    prod(...) * L * S * (E + Ev) multiply-adds."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


# --------------------------------------------------------------------------
# Per-model measurements
# --------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table (``None``: not available)."""
    name: str
    config: str
    checkpoint: str
    input_shape: str = ''
    params: Optional[int] = None
    flops: Optional[int] = None
    flops_lower_bound: bool = False
    uncounted_ops: List[str] = field(default_factory=list)
    latency_ms: Optional[float] = None
    train_time_s: Optional[float] = None
    train_iters: Optional[int] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    #: where the config initialises from pretrained weights (empty: from scratch)
    pretrained: List[str] = field(default_factory=list)
    images_per_s: Optional[float] = None
    #: the --results file this row was read from ('' for a measured config)
    result_file: str = ''


def resolve_checkpoint(work_dir: str) -> str:
    """The checkpoint a training run in ``work_dir`` saved last: the path in
    its ``last_checkpoint`` file (mmengine's CheckpointHook), else the newest
    ``epoch_*.pth`` / ``iter_*.pth``."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            path = f.read().strip()
        for candidate in (path, osp.join(work_dir, osp.basename(path))):
            if osp.isfile(candidate):
                return candidate
    found = [osp.join(work_dir, n) for n in os.listdir(work_dir)
             if re.fullmatch(r'(epoch|iter)_\d+\.pth', n)] if osp.isdir(work_dir) else []
    if not found:
        raise FileNotFoundError(f'{work_dir}: no last_checkpoint, epoch_*.pth or iter_*.pth')
    return max(found, key=osp.getmtime)


def pretrained_sources(cfg: Config) -> List[str]:
    """Where ``cfg`` starts from pretrained weights: ``init_cfg`` entries of
    type ``Pretrained`` and ``pretrained=`` keys anywhere in ``cfg.model``
    (as ``key.path=checkpoint``), and ``load_from``. Empty: from scratch."""
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            kind = str(node.get('type', '')).split('.')[-1]
            if kind == 'Pretrained':
                found.append(f'{path}={node.get("checkpoint")}')
            for key, value in node.items():
                if key == 'pretrained' and value:
                    found.append(f'{path}.pretrained={value}')
                else:
                    walk(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f'{path}.{i}')

    walk(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else cfg.model, 'model')
    if cfg.get('load_from'):
        found.append(f'load_from={cfg.load_from}')
    return found


def build_model(cfg: Config, checkpoint: dict, device: str, checkpoint_path: str) -> nn.Module:
    """The config's model with the checkpoint's ``state_dict`` (the EMA
    weights when the run used an EMA hook), SyncBN turned into BN, eval mode."""
    # a copy: mmdet's DETR detectors write into their bbox_head config
    model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(cfg.model)))
    state_dict = checkpoint.get('state_dict', checkpoint)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise RuntimeError(f'{checkpoint_path} does not fit the model of {cfg.filename}: '
                           f'missing keys {missing[:5]}, unexpected keys {unexpected[:5]}')
    return model.to(device).eval()


def first_test_batch(cfg: Config) -> dict:
    """The first image of the config's test dataset after its test pipeline,
    collated as a batch of 1 (``inputs``: list of one (3, H, W) uint8)."""
    dataset_cfg = cfg.test_dataloader.dataset
    dataset = DATASETS.build(copy.deepcopy(dataset_cfg))
    if len(dataset) == 0:
        raise ValueError(f'{cfg.filename}: test_dataloader.dataset is empty')
    return pseudo_collate([dataset[0]])


class _TensorForward(nn.Module):
    """``detector._forward`` (backbone -> neck -> head, raw outputs) with the
    data samples bound, returning a flat tuple of tensors for jit tracing."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor) -> tuple:
        return tuple(_tensors(self.detector._forward(inputs, self.data_samples)))


def _tensors(obj: Any) -> List[torch.Tensor]:
    """Every tensor inside nested tuples / lists / dicts / dataclass-like
    objects, depth first."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        values = obj.values()
    elif isinstance(obj, (list, tuple)):
        values = obj
    elif hasattr(obj, '__dict__'):
        values = vars(obj).values()
    else:
        return []
    return [t for value in values for t in _tensors(value)]


def count_flops(model: nn.Module, data: dict) -> tuple:
    """(FLOPs, lower_bound, uncounted arithmetic ops) of one tensor forward
    of the preprocessed batch ``data`` (``inputs`` (1, 3, H, W))."""
    analyzer = FlopAnalyzer(_TensorForward(model, data['data_samples']), (data['inputs'], ))
    analyzer.set_op_handle('aten::grid_sampler', grid_sampler_flops,
                           'aten::baddbmm', baddbmm_flops,
                           'aten::scaled_dot_product_attention', sdpa_flops)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    total = analyzer.total()
    uncounted = sorted(op for op in analyzer.unsupported_ops() if _COUNTABLE_OP.search(op))
    return total, bool(uncounted), uncounted


def measure_latency(model: nn.Module, batch: dict, device: str, runs: int,
                    warmup: int) -> float:
    """Median wall time in ms of ``model.test_step(batch)`` (preprocessing,
    forward, post-processing) over ``runs`` calls after ``warmup`` calls."""
    def synchronize():
        if device.startswith('cuda'):
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            synchronize()
            start = time.perf_counter()
            model.test_step(batch)
            synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def training_time(checkpoint: dict) -> tuple:
    """(seconds, iterations) summed from the checkpoint's message hub
    ``train/time`` history (one entry per training iteration), or
    (None, None) for a checkpoint not saved by a training run."""
    scalars = checkpoint.get('message_hub', {}).get('log_scalars', {})
    buffer = scalars.get('train/time')
    if buffer is None:
        return None, None
    history, counts = buffer.data
    return float(history.sum()), int(counts.sum())


def evaluate(cfg: Config, checkpoint_path: str, work_dir: str, tag: str,
             verbose: bool) -> Dict[str, float]:
    """The config's test loop with ``checkpoint_path``, as tools/test.py runs
    it; returns the evaluator's metrics (``coco/bbox_mAP`` ...)."""
    cfg = copy.deepcopy(cfg)
    cfg.load_from = checkpoint_path
    cfg.work_dir = work_dir
    cfg.resume = False
    cfg.experiment_name = tag  # one logger / message hub per model
    if cfg.get('visualizer') is not None:
        # mmengine keeps one visualizer per name in a process: without its own
        # name a model's test logs would go to the first model's work dir
        cfg.visualizer['name'] = tag
    if not verbose:
        cfg.log_level = 'WARNING'
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    return runner.test()


def measure(name: str, config: str, checkpoint_path: str, cfg_options: Optional[dict],
            device: str, latency_runs: int, warmup_runs: int, out_dir: str,
            index: int, verbose: bool) -> Row:
    """Every column of one model."""
    cfg = load_config(config, 'none', cfg_options, None)
    if str(cfg.get('runner_type', '')).split('.')[-1] == 'RTDETRv2Runner':
        # the runner writes `image_size` into every Resize when it starts
        # (tools/test.py, and evaluate() below); the FLOP and latency image
        # must have that size too
        apply_image_size(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    row = Row(name=name, config=config, checkpoint=checkpoint_path,
              pretrained=pretrained_sources(cfg))

    checkpoint = safe_load_checkpoint(checkpoint_path, map_location='cpu')
    row.train_time_s, row.train_iters = training_time(checkpoint)
    if row.train_time_s:
        row.images_per_s = row.train_iters * cfg.train_dataloader.batch_size / row.train_time_s
    model = build_model(cfg, checkpoint, device, checkpoint_path)
    del checkpoint
    row.params = parameter_count(model)['']

    batch = first_test_batch(cfg)
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    row.input_shape = 'x'.join(str(s) for s in data['inputs'].shape[-2:])
    with torch.no_grad():
        row.flops, row.flops_lower_bound, row.uncounted_ops = count_flops(model, data)
    row.latency_ms = measure_latency(model, batch, device, latency_runs, warmup_runs)
    del model

    safe_name = re.sub(r'[^A-Za-z0-9_.-]', '_', name)
    tag = f'compare_{index}_{safe_name}_{time.strftime("%Y%m%d_%H%M%S")}'
    row.metrics = evaluate(cfg, checkpoint_path, osp.join(out_dir, tag), tag, verbose)
    return row


#: ``format`` of the result files ``--results`` reads (hf_trainer_baseline.py)
RESULT_FORMAT = 'rtdetr_mm.hf_trainer_baseline/1'


def read_result(path: str) -> Row:
    """One row from a result file of ``hf_trainer_baseline.py`` (JSON:
    ``name``, ``config``, ``input``, ``params``, ``train_time_s``,
    ``train_steps``, ``images_per_s``, ``metrics`` with CocoMetric keys,
    ``init``: the initial weights, null for a random initialisation)."""
    import json
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f'--results {path}: cannot be read as JSON ({err})') from None
    if not isinstance(record, dict) or record.get('format') != RESULT_FORMAT:
        found = record.get('format') if isinstance(record, dict) else type(record).__name__
        raise ValueError(f'--results {path}: format {found!r}, expected {RESULT_FORMAT!r} '
                         '(a file written by tools/analysis_tools/hf_trainer_baseline.py)')
    return Row(name=record['name'], config=record['config'], checkpoint=path,
               input_shape=record['input'], params=record['params'],
               train_time_s=record['train_time_s'], train_iters=record['train_steps'],
               images_per_s=record['images_per_s'],
               metrics={k: v for k, v in record['metrics'].items() if v is not None},
               pretrained=[f'init={record["init"]}'] if record.get('init') else [],
               result_file=path)


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def _fmt(value: Optional[float], spec: str) -> str:
    return 'n/a' if value is None else format(value, spec)


def _fmt_time(seconds: Optional[float], iters: Optional[int]) -> str:
    if seconds is None:
        return 'n/a'
    text = f'{seconds / 60:.1f} min' if seconds >= 60 else f'{seconds:.1f} s'
    return f'{text} ({iters} it)'


def markdown_table(rows: Sequence[Row], device: str, threads: int) -> str:
    header = ['model', 'input', 'params (M)', 'FLOPs (G)', f'latency (ms, {device})',
              'train time', 'img/s (train)'] + [c for c, _ in AP_COLUMNS]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        flops = _fmt(None if r.flops is None else r.flops / 1e9, '.2f')
        if r.flops_lower_bound:
            flops = '≥ ' + flops
        cells = [r.name, r.input_shape, _fmt(r.params / 1e6, '.2f'), flops,
                 _fmt(r.latency_ms, '.1f'), _fmt_time(r.train_time_s, r.train_iters),
                 _fmt(r.images_per_s, '.1f')]
        cells += [_fmt(r.metrics.get(key), '.3f') for _, key in AP_COLUMNS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    notes = ['']
    pretrained = [r for r in rows if r.pretrained]
    if pretrained:
        notes.append('NOT all trained from scratch: ' + '; '.join(
            f'{r.name} starts from {", ".join(r.pretrained)}' for r in pretrained) + '.')
    else:
        notes.append(_FOOTNOTE)
    notes += [
        '',
        'FLOPs: multiply-adds of one forward pass (backbone, neck, head; no box '
        'decoding or NMS), batch 1, counted by mmengine\'s FlopAnalyzer including '
        'grid_sample (deformable attention sampling; bilinear = 4 per sampled value); '
        'elementwise ops, softmax, sorting and indexing are not counted.',
        f'Latency: median of timed `test_step` calls (preprocessing, forward, '
        f'post-processing), batch 1, {device}, {threads} torch thread(s).',
        'Train time: sum of training-iteration times (without validation) from the '
        'checkpoint\'s message hub. AP: COCO bbox AP of the checkpoint on the '
        'config\'s test split (mmdet CocoMetric).',
    ]
    read = [r for r in rows if r.result_file]
    if read:
        notes.append('Read from --results (transformers\' Trainer, '
                     'hf_trainer_baseline.py; train time: Trainer.train without '
                     'evaluations, "it" = optimizer steps; no FLOPs / latency measured): '
                     + '; '.join(f'{r.name}: {r.result_file}' for r in read) + '.')
    bounded = [r for r in rows if r.flops_lower_bound]
    if bounded:
        notes.append('≥: lower bound, operators without a FLOP counter: ' + '; '.join(
            f'{r.name}: {", ".join(r.uncounted_ops)}' for r in bounded) + '.')
    return '\n'.join(lines + notes)


CSV_FIELDS = ['model', 'config', 'checkpoint', 'input', 'params', 'flops',
              'flops_lower_bound', 'latency_ms', 'device', 'threads', 'train_time_s',
              'train_iters', 'images_per_s'] + [c for c, _ in AP_COLUMNS] + ['from_scratch']


def write_csv(path: str, rows: Sequence[Row], device: str, threads: int) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in rows:
            record = dict(model=r.name, config=r.config, checkpoint=r.checkpoint,
                          input=r.input_shape, params=r.params, flops=r.flops,
                          flops_lower_bound=r.flops_lower_bound,
                          latency_ms='' if r.latency_ms is None else f'{r.latency_ms:.3f}',
                          device=device, threads=threads,
                          train_time_s='' if r.train_time_s is None else f'{r.train_time_s:.3f}',
                          train_iters='' if r.train_iters is None else r.train_iters,
                          images_per_s='' if r.images_per_s is None else f'{r.images_per_s:.3f}',
                          from_scratch=not r.pretrained)
            for column, key in AP_COLUMNS:
                record[column] = r.metrics.get(key, '')
            writer.writerow(record)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('configs', nargs='*', help='config files')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--checkpoints', nargs='+', help='one checkpoint per config')
    source.add_argument('--work-dirs', nargs='+',
                        help='one training work dir per config (its last checkpoint)')
    parser.add_argument('--names', nargs='+', help='row names (default: config file names)')
    parser.add_argument('--csv', help='also write the table to this CSV file')
    parser.add_argument('--latency-runs', type=int, default=20, help='timed runs (median)')
    parser.add_argument('--warmup-runs', type=int, default=3, help='untimed runs first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out-dir', help='work dir of the test runs (default: a temp dir)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to every config (key=value)')
    parser.add_argument('--verbose', action='store_true', help='INFO logs of the test runs')
    parser.add_argument('--results', nargs='+', default=[],
                        help='rows measured elsewhere: hf_trainer_baseline.py result files')
    args = parser.parse_args(argv)
    if not args.configs and not args.results:
        parser.error('nothing to compare: give configs (with --checkpoints / --work-dirs) '
                     'and / or --results')
    sources = args.checkpoints or args.work_dirs or []
    if len(sources) != len(args.configs):
        parser.error(f'{len(args.configs)} configs but {len(sources)} '
                     f'{"checkpoints" if args.checkpoints else "work dirs"}')
    if args.names and len(args.names) != len(args.configs):
        parser.error(f'{len(args.configs)} configs but {len(args.names)} names')
    if args.latency_runs < 1 or args.warmup_runs < 0:
        parser.error('--latency-runs must be >= 1 and --warmup-runs >= 0')
    return args


def main(argv=None) -> List[Row]:
    args = parse_args(argv)
    checkpoints = args.checkpoints or [resolve_checkpoint(d) for d in args.work_dirs or []]
    names = args.names or [osp.splitext(osp.basename(c))[0] for c in args.configs]
    read = [read_result(path) for path in args.results]  # a bad file stops before measuring
    out_dir = args.out_dir or tempfile.mkdtemp(prefix='compare_')
    rows = []
    for index, (name, config, checkpoint) in enumerate(zip(names, args.configs, checkpoints)):
        print(f'[compare] {name}: {checkpoint}', file=sys.stderr, flush=True)
        # stdout carries only the table (`compare.py ... > table.md`):
        # pycocotools' and the test runs' prints go to stderr
        with contextlib.redirect_stdout(sys.stderr):
            rows.append(measure(name, config, checkpoint, args.cfg_options, args.device,
                                args.latency_runs, args.warmup_runs, out_dir, index,
                                args.verbose))
    rows += read
    threads = torch.get_num_threads()
    print(markdown_table(rows, args.device, threads), flush=True)
    if args.csv:
        write_csv(args.csv, rows, args.device, threads)
        print(f'[compare] CSV: {args.csv}', file=sys.stderr)
    return rows


if __name__ == '__main__':
    main()
