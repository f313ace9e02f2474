"""The three-arm measurement of "Coming from the transformers script"
(issue 11, item 3); ``tools/analysis_tools/seed_migration_benchmark.py`` is
its command line.

The arms, all on the same data (the bundled shapes data by default), at the
demo's input size and model shape (r18vd, 128-wide encoder and decoder, 2
decoder layers, 100 queries, 256 x 256), each from the same initial weights
per seed:

* **a** transformers' ``Trainer`` with the seed script's constants:
  ``hf_trainer_baseline.py ARM_B_CONFIG --knobs SCRIPT --max-steps N --seed S``
  (the Trainer on arm b's data, input size and batch; the knobs the Trainer
  expresses act, the rest had no effect in the script and have none here).
  Its initial weights (transformers' initialisation after ``set_seed(S)``)
  are saved in ``seed_S/a_hf_trainer/init_hf``;
* **b** rtdetr_mm with the config ``seed_to_config.py SCRIPT --fix-image-size``
  writes (``configs/seed_config.py``, base: the r18 fine-tuning config, as a
  user runs it), through ``configs/arm_b.py``, a child that only sets the
  demo's model shape, the data root and the number of epochs;
* **c** rtdetr_mm with its own recipe for this data and model: the demo config
  (``configs/arm_c.py``: its child with the data root and the number of
  epochs).

``init_hf`` is converted once per seed by
``tools/model_converters/rtdetrv2_to_mmdet.py ... --config configs/arm_c.py``
to ``seed_S/init.pth``, which arms b and c load (``load_from``); it is
checked key by key and shape by shape against the model of both configs
before they train (:func:`check_init_fits`), so no layer is silently left at
its own initialisation.

Budget (how the steps are matched):

* every arm runs exactly ``--steps`` OPTIMIZER steps: arm a through the
  Trainer's ``max_steps``; arms b and c through ``train_cfg.max_epochs =
  steps / optimizer steps per epoch``, so ``--steps`` must be a multiple of
  the optimizer steps of one epoch (100 on the shapes data: 400 images / 4
  images per step), and an epoch's iterations a multiple of
  ``accumulative_counts``, or the run is refused before anything trains.
  The steps are then read back from each run (the Trainer's ``global_step``;
  rtdetr_mm's iteration count in the last checkpoint / accumulation);
* images per optimizer step are the same, 4, in every arm, but split
  differently: arms a and b take the seed script's TRAIN_BATCH 2 x
  GRAD_ACCUM 2 (arm a reads both from arm b's config, as the Trainer's
  ``per_device_train_batch_size`` / ``gradient_accumulation_steps``), arm c
  the demo's batch 4 x 1. The batch is the recipe's, not the budget's: the
  images seen are equal;
* each arm keeps its own learning-rate schedule, warm-up, EMA, augmentation
  and evaluation interval (the recipe is what is compared): arm a / b
  evaluate every EVAL_RATE_EPOCHS 0.5 epoch (50 steps on the shapes data),
  arm c every epoch (100 steps), all on the val split (the curve). The final
  numbers: arm a's from the config's test split after the last step
  (hf_trainer_baseline.py), arms b and c's from their validation after the
  last step (EMA weights, as their recipe evaluates); the test split is the
  val split on the shapes data, so all three are the same 100 images.

Outputs in ``--work-dir``: ``seed_S/{a_hf_trainer,b_seed_config,c_rtdetr_mm}``
(one work dir per arm and seed), ``runs.csv`` (one row per arm and seed),
``arms.csv`` (per arm: the mean, min and max over the seeds of AP, AP50,
AP75, APs, APm, APl, train time, wall time and images per second: the
spread is min-max), ``arms.md`` (the same as a Markdown table),
``arms_map.png`` (the val mAP of every arm and seed against optimizer steps),
``arms.json`` (all of it, the curves and the commands run) and
``commands.sh`` (the exact commands, in order). A finished arm leaves
``arm_done.json`` (its command and wall time) in its work dir; a second call
with the same ``--work-dir`` reuses the arms whose command is unchanged and
runs the rest (a measurement that stopped half-way goes on).

Timings: train time excludes evaluation (the Trainer's run time minus its
curve evaluations; rtdetr_mm's per-iteration ``train/time``, as compare.py
sums it); wall time is the whole arm command (start-up, training,
evaluations). The arms run one after the other, never in parallel; the
numbers mean something only on an otherwise idle machine (a warning is
printed when the load average says it is not).
"""
import csv
import json
import math
import os
import os.path as osp
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from . import ROOT

DEMO_CONFIG = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
REFERENCE_SCRIPT = osp.join(ROOT, 'configs/rtdetrv2_finetune/reference_seed_script.py')

#: the result columns: (column name, mmdet CocoMetric key)
AP_COLUMNS = (('AP', 'coco/bbox_mAP'), ('AP50', 'coco/bbox_mAP_50'),
              ('AP75', 'coco/bbox_mAP_75'), ('APs', 'coco/bbox_mAP_s'),
              ('APm', 'coco/bbox_mAP_m'), ('APl', 'coco/bbox_mAP_l'))
#: the other columns averaged over the seeds
TIME_COLUMNS = ('train_time_s', 'wall_s', 'images_per_s')
# in an arm's work dir once its command finished: the command and its wall time
ARM_DONE = 'arm_done.json'

#: the demo's model shape, copied into arm b's config (dotted key in ``model``)
MODEL_SHAPE_KEYS = (
    'neck.hidden_dim', 'neck.dim_feedforward', 'neck.num_heads',
    'bbox_head.in_channels', 'bbox_head.hidden_dim', 'bbox_head.num_heads',
    'bbox_head.dim_feedforward', 'bbox_head.num_layers', 'bbox_head.num_queries',
    'bbox_head.dn_cfg.num_denoising', 'test_cfg.max_per_img')


@dataclass(frozen=True)
class Arm:
    key: str          # 'a', 'b', 'c'
    dir_name: str     # work dir of one seed: seed_S/<dir_name>
    name: str         # row name in the tables


ARMS = (Arm('a', 'a_hf_trainer', 'a: transformers Trainer, seed script'),
        Arm('b', 'b_seed_config', 'b: rtdetr_mm, seed_to_config.py config'),
        Arm('c', 'c_rtdetr_mm', 'c: rtdetr_mm, its own recipe (demo)'))


class BenchmarkError(RuntimeError):
    """The measurement cannot run as asked (names the option or file and
    what to do)."""


@dataclass
class RunResult:
    """One arm, one seed."""
    arm: str
    seed: int
    work_dir: str
    steps: int                       # optimizer steps, read back from the run
    images_per_step: int
    metrics: Dict[str, Optional[float]]   # AP ... APl, final evaluation
    train_time_s: Optional[float]
    wall_s: float
    images_per_s: Optional[float]
    curve: List[dict] = field(default_factory=list)  # [{step, AP}] on the val split


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------
def tool(relative: str) -> str:
    return osp.join(ROOT, 'tools', relative)


def run_command(argv: Sequence[str], log: Callable[[str], None], what: str,
                in_process: bool = False) -> float:
    """Run ``argv`` (``python tools/X.py ARGS``), print it first as it can be
    pasted, and return its wall time in seconds.

    A child process with the parent's environment (every training arm: its
    timings are its own), or with ``in_process`` the tool's ``main(ARGS)``
    in this process (the untimed preparation steps: seed_to_config.py and
    the converter, which only saves their start-up).
    """
    command = ' '.join(shlex.quote(a) for a in argv)
    log('$ ' + command)
    start = time.perf_counter()
    if in_process:
        from .tools import load_tool
        relative = osp.splitext(osp.relpath(argv[1], osp.join(ROOT, 'tools')))[0]
        status = load_tool(relative).main(list(argv[2:]))
    else:
        status = subprocess.run(list(argv), cwd=ROOT).returncode
    wall = time.perf_counter() - start
    if status != 0:
        raise BenchmarkError(f'{what} failed with exit status {status} (its output is '
                             f'above); command: {command}')
    return wall


def idle_warning() -> Optional[str]:
    """A warning when the 1-minute load average says the machine is busy."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    if load > 0.5:
        return (f'warning: load average {load:.2f} on {cores} cores before the first arm: '
                'timings (train time, images/s) need an otherwise idle machine; the APs do not')
    return None


# --------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------
def _get(node, dotted: str):
    for part in dotted.split('.'):
        node = node[part]
    return node


def _nest(dotted: str, value) -> dict:
    out = value
    for part in reversed(dotted.split('.')):
        out = {part: out}
    return out


def _merge(into: dict, other: dict) -> dict:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def demo_model_shape(demo_config: str) -> dict:
    """The demo config's :data:`MODEL_SHAPE_KEYS` as a nested ``model`` dict."""
    from mmengine.config import Config
    model = Config.fromfile(demo_config).model
    shape: dict = {}
    for key in MODEL_SHAPE_KEYS:
        value = _get(model, key)
        _merge(shape, _nest(key, tuple(value) if isinstance(value, list) else value))
    return shape


def _data_override(cfg, data_root: str) -> str:
    """Config text pointing the train / val / test datasets and evaluators of
    ``cfg`` at ``data_root`` (their relative ann_file / data_prefix kept)."""
    root = data_root.rstrip('/') + '/'
    lines = []
    for split in ('train', 'val', 'test'):
        lines.append(f'{split}_dataloader = dict(dataset=dict(data_root={root!r}))')
    ann = cfg.val_dataloader.dataset.ann_file
    for split in ('val', 'test'):
        lines.append(f'{split}_evaluator = dict(ann_file={osp.join(root, ann)!r})')
    return '\n'.join(lines) + '\n'


def write_arm_config(path: str, base: str, data_root: str, epochs: int,
                     model_shape: Optional[dict] = None) -> str:
    """Write the child config of ``base`` one arm trains with: the data root,
    ``train_cfg.max_epochs`` and, when given, the model shape.

    NOTE: ``default_hooks.logger.log_metric_by_epoch=False`` logs every
    validation at its iteration (mmengine's default logs it at its epoch,
    which cannot place a mid-epoch validation, EVAL_RATE_EPOCHS 0.5, on the
    curve).
    """
    from mmengine.config import Config
    cfg = Config.fromfile(base)
    text = ['# Written by rtdetr_mm/testing/seed_migration.py (the three-arm measurement)',
            f'_base_ = {osp.abspath(base)!r}', '',
            _data_override(cfg, data_root),
            f'train_cfg = dict(max_epochs={int(epochs)})',
            'default_hooks = dict(logger=dict(log_metric_by_epoch=False))']
    if model_shape:
        text.append(f'# the demo model shape ({DEMO_CONFIG})')
        text.append(f'model = {model_shape!r}')
    with open(path, 'w') as f:
        f.write('\n'.join(text) + '\n')
    return path


@dataclass
class Budget:
    """How one rtdetr_mm config reaches ``steps`` optimizer steps."""
    config: str
    train_images: int
    batch_size: int
    accumulative_counts: int
    iters_per_epoch: int
    steps_per_epoch: int
    epochs: int


def plan_budget(config: str, steps: int) -> Budget:
    """Epochs of ``config`` that make exactly ``steps`` optimizer steps, or
    :class:`BenchmarkError` naming the valid ``--steps``."""
    from mmengine.config import Config
    from .hf_trainer import build_split
    cfg = Config.fromfile(config)
    loader = cfg.train_dataloader
    num_train = len(build_split(cfg, 'train'))
    batch = int(loader.batch_size)
    accum = int(cfg.optim_wrapper.get('accumulative_counts', 1) or 1)
    iters = num_train // batch if loader.get('drop_last', False) else math.ceil(num_train / batch)
    if iters == 0 or iters % accum:
        raise BenchmarkError(
            f'{config}: {num_train} training images in batches of {batch} give {iters} '
            f'iterations per epoch, not a multiple of optim_wrapper.accumulative_counts={accum}: '
            'the optimizer steps of an epoch would not be whole; use a training set whose size '
            f'is a multiple of {batch * accum}')
    per_epoch = iters // accum
    if steps % per_epoch:
        raise BenchmarkError(
            f'--steps {steps}: {config} makes {per_epoch} optimizer steps per epoch '
            f'({num_train} images / {batch * accum} per step); the rtdetr_mm arms stop at an '
            f'epoch end, so --steps must be a multiple of {per_epoch} (e.g. '
            f'{max(per_epoch, steps // per_epoch * per_epoch)} or '
            f'{(steps // per_epoch + 1) * per_epoch})')
    return Budget(config, num_train, batch, accum, iters, per_epoch, steps // per_epoch)


def check_init_fits(init: str, config: str) -> None:
    """Every parameter and buffer of ``config``'s model has a tensor of the
    same shape in ``init`` (an rtdetr_mm checkpoint) and ``init`` has nothing
    else: loading it leaves no layer at its own initialisation. Raises
    :class:`BenchmarkError` naming the keys."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from ..engine.checkpoint_safety import safe_load_checkpoint
    from ..engine.runner import apply_image_size
    cfg = Config.fromfile(config)
    apply_image_size(cfg)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_state = MODELS.build(cfg.model).state_dict()
    ckpt = safe_load_checkpoint(init, map_location='cpu')
    ckpt_state = ckpt.get('state_dict', ckpt)
    missing = sorted(set(model_state) - set(ckpt_state))
    extra = sorted(set(ckpt_state) - set(model_state))
    shape = sorted(k for k in set(model_state) & set(ckpt_state)
                   if tuple(model_state[k].shape) != tuple(ckpt_state[k].shape))
    if missing or extra or shape:
        raise BenchmarkError(
            f'{init} does not fit the model of {config}: missing {missing[:5]} '
            f'({len(missing)}), unexpected {extra[:5]} ({len(extra)}), other shape '
            f'{shape[:5]} ({len(shape)}); the arms would not start from the same weights')


# --------------------------------------------------------------------------
# Reading the runs
# --------------------------------------------------------------------------
def _ap(value) -> Optional[float]:
    """A CocoMetric value; None for pycocotools' -1 (no ground truth of that
    size: APs / APm / APl on data without such objects)."""
    return None if value is None or float(value) < 0 else float(value)


def read_hf_run(work_dir: str, seed: int, wall: float) -> RunResult:
    from .hf_trainer import RESULT_FILE
    with open(osp.join(work_dir, RESULT_FILE)) as f:
        result = json.load(f)
    metrics = {col: _ap(result['metrics'].get(key)) for col, key in AP_COLUMNS}
    curve = [dict(step=int(p['step']), AP=_ap(p.get('coco/bbox_mAP'))) for p in result['curve']]
    return RunResult('a', seed, work_dir, int(result['train_steps']),
                     int(result['images_per_step']), metrics, result['train_time_s'], wall,
                     result['images_per_s'], curve)


def _scalars(work_dir: str) -> List[dict]:
    """mmengine's ``<timestamp>/vis_data/scalars.json`` of the (only) run."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise BenchmarkError(f'{work_dir}: no <timestamp>/vis_data/scalars.json: the run logged '
                             'nothing')
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_mm_run(arm: str, work_dir: str, seed: int, wall: float, budget: Budget) -> RunResult:
    """An rtdetr_mm arm: the val metrics logged at each iteration (the last
    one: the end of training), the train time and iterations of its last
    checkpoint's message hub (compare.py's reading)."""
    from ..engine.checkpoint_safety import safe_load_checkpoint
    from .tools import load_tool
    compare = load_tool('analysis_tools/compare')
    checkpoint = safe_load_checkpoint(compare.resolve_checkpoint(work_dir), map_location='cpu')
    train_time, iters = compare.training_time(checkpoint)
    evals = [r for r in _scalars(work_dir) if 'coco/bbox_mAP' in r]
    if not evals:
        raise BenchmarkError(f'{work_dir}: no coco/bbox_mAP in scalars.json: the run never '
                             'validated')
    accum = budget.accumulative_counts
    curve = [dict(step=int(r['step']) // accum, AP=_ap(r['coco/bbox_mAP'])) for r in evals]
    metrics = {col: _ap(evals[-1].get(key)) for col, key in AP_COLUMNS}
    steps = int(iters) // accum if iters else 0
    images = steps * budget.batch_size * accum
    return RunResult(arm, seed, work_dir, steps, budget.batch_size * accum, metrics, train_time,
                     wall, images / train_time if train_time else None, curve)


# --------------------------------------------------------------------------
# Tables and plot
# --------------------------------------------------------------------------
def summarise(runs: Sequence[RunResult]) -> List[dict]:
    """Per arm: seeds, steps, and mean / min / max of every AP and time column."""
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r.arm == arm.key]
        if not mine:
            continue
        row = dict(arm=arm.name, seeds=' '.join(str(r.seed) for r in mine),
                   steps=' '.join(sorted({str(r.steps) for r in mine})),
                   images_per_step=mine[0].images_per_step)
        for col in [c for c, _ in AP_COLUMNS] + list(TIME_COLUMNS):
            values = [v for v in (r.metrics.get(col) if col in r.metrics else getattr(r, col)
                                  for r in mine) if v is not None]
            row[f'{col}_mean'] = sum(values) / len(values) if values else None
            row[f'{col}_min'] = min(values) if values else None
            row[f'{col}_max'] = max(values) if values else None
        rows.append(row)
    return rows


def write_runs_csv(path: str, runs: Sequence[RunResult]) -> None:
    cols = ['arm', 'seed', 'steps', 'images_per_step'] + [c for c, _ in AP_COLUMNS] + \
        list(TIME_COLUMNS) + ['work_dir']
    names = {a.key: a.name for a in ARMS}
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for r in runs:
            writer.writerow(dict(arm=names[r.arm], seed=r.seed, steps=r.steps,
                                 images_per_step=r.images_per_step, **r.metrics,
                                 train_time_s=r.train_time_s, wall_s=r.wall_s,
                                 images_per_s=r.images_per_s, work_dir=r.work_dir))


def write_arms_csv(path: str, rows: Sequence[dict]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _cell(row: dict, col: str, scale: float, spec: str) -> str:
    mean, lo, hi = (row[f'{col}_{k}'] for k in ('mean', 'min', 'max'))
    if mean is None:
        return 'n/a'
    if lo == hi:
        return format(mean * scale, spec)
    return f'{format(mean * scale, spec)} ({format(lo * scale, spec)}-{format(hi * scale, spec)})'


def markdown(rows: Sequence[dict], steps: int, seeds: Sequence[int]) -> str:
    head = ['arm', 'steps'] + [c for c, _ in AP_COLUMNS] + ['train time (s)', 'wall (s)',
                                                          'img/s (train)']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for row in rows:
        cells = [row['arm'], row['steps']]
        cells += [_cell(row, c, 100.0, '.1f') for c, _ in AP_COLUMNS]
        cells += [_cell(row, 'train_time_s', 1.0, '.0f'), _cell(row, 'wall_s', 1.0, '.0f'),
                  _cell(row, 'images_per_s', 1.0, '.2f')]
        lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    lines.append('')
    lines.append(f'COCO bbox AP x 100 on the val split after {steps} optimizer steps of 4 '
                 f'images; mean over seeds {" ".join(map(str, seeds))} with (min-max) when they '
                 'differ. Train time excludes evaluation; wall time is the whole arm command.')
    return '\n'.join(lines) + '\n'


def plot(path: str, runs: Sequence[RunResult]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    colours = dict(a='tab:blue', b='tab:red', c='tab:green')
    styles = ['-', '--', ':', '-.']
    names = {a.key: a.name for a in ARMS}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        points = [(p['step'], p['AP'] * 100) for p in r.curve if p['AP'] is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, styles[r.seed % len(styles)], color=colours[r.arm], marker='o',
                    markersize=3, label=f'{names[r.arm]} (seed {r.seed})')
    ax.set_xlabel('optimizer steps (4 images each)')
    ax.set_ylabel('val mAP (COCO bbox AP x 100)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------
def run_benchmark(work_dir: str, steps: int, seeds: Sequence[int],
                  script: str = REFERENCE_SCRIPT, data_root: str = 'data/shapes/',
                  demo_config: str = DEMO_CONFIG, log: Callable[[str], None] = print) -> dict:
    """Run the three arms for every seed, one after the other, and write the
    tables and the plot (module docstring). Returns what ``arms.json`` holds."""
    if steps < 1:
        raise BenchmarkError(f'--steps {steps}: at least 1')
    for path, what in ((script, '--script'), (demo_config, '--demo-config')):
        if not osp.isfile(path):
            raise BenchmarkError(f'{what} {path}: no such file')
    if not osp.isdir(data_root):
        raise BenchmarkError(f'--data-root {data_root}: no such folder; make the shapes data '
                             'with `python tools/misc/make_demo_data.py`')
    warning = idle_warning()
    if warning:
        log(warning)
    log('The arms run one after the other; timings need an otherwise idle machine.')
    work_dir = osp.abspath(work_dir)
    cfg_dir = osp.join(work_dir, 'configs')
    os.makedirs(cfg_dir, exist_ok=True)
    py = sys.executable
    commands: List[str] = []

    def call(argv, what, in_process=False):
        commands.append(' '.join(shlex.quote(a) for a in argv))
        return run_command(argv, log, what, in_process)

    def train_arm(argv, what, arm_dir):
        """Run one arm, or reuse it when an earlier call finished the same
        command (a long measurement that stopped half-way goes on from the
        arms it has; the marker holds the arm's wall time)."""
        command = ' '.join(shlex.quote(a) for a in argv)
        marker = osp.join(arm_dir, ARM_DONE)
        if osp.isfile(marker):
            with open(marker) as f:
                done = json.load(f)
            if done.get('command') == command:
                commands.append(command)
                log(f'reusing {arm_dir}: {what} finished earlier with this command '
                    f'(delete the folder to run it again)')
                return done['wall_s']
        wall = call(argv, what)
        with open(marker, 'w') as f:
            json.dump(dict(command=command, wall_s=wall), f)
        return wall

    seed_config = osp.join(cfg_dir, 'seed_config.py')
    call([py, tool('misc/seed_to_config.py'), script, '--fix-image-size', '--out', seed_config],
         'seed_to_config.py', in_process=True)
    shape = demo_model_shape(demo_config)
    # epochs need the budget, the budget the dataset: written once with 1 epoch first
    configs = dict(b=osp.join(cfg_dir, 'arm_b.py'), c=osp.join(cfg_dir, 'arm_c.py'))
    bases = dict(b=seed_config, c=demo_config)
    budgets = {}
    for key in ('b', 'c'):
        write_arm_config(configs[key], bases[key], data_root, 1, shape if key == 'b' else None)
        budgets[key] = plan_budget(configs[key], steps)
        write_arm_config(configs[key], bases[key], data_root, budgets[key].epochs,
                         shape if key == 'b' else None)
        log(f'arm {key}: {configs[key]}: {budgets[key]}')

    runs: List[RunResult] = []
    for seed in seeds:
        seed_dir = osp.join(work_dir, f'seed_{seed}')
        dirs = {arm.key: osp.join(seed_dir, arm.dir_name) for arm in ARMS}
        wall = train_arm([py, tool('analysis_tools/hf_trainer_baseline.py'), configs['b'],
                          '--knobs', script, '--work-dir', dirs['a'], '--max-steps', str(steps),
                          '--seed', str(seed), '--name', ARMS[0].name], f'arm a, seed {seed}',
                         dirs['a'])
        runs.append(read_hf_run(dirs['a'], seed, wall))
        init = osp.join(seed_dir, 'init.pth')
        call([py, tool('model_converters/rtdetrv2_to_mmdet.py'), osp.join(dirs['a'], 'init_hf'),
              init, '--config', configs['c']], f'converting the seed {seed} initial weights',
             in_process=True)
        for key in ('b', 'c'):
            check_init_fits(init, configs[key])
        for arm in ARMS[1:]:
            argv = [py, tool('train.py'), configs[arm.key], '--work-dir', dirs[arm.key],
                    '--cfg-options', f'load_from={init}', f'randomness.seed={seed}']
            wall = train_arm(argv, f'arm {arm.key}, seed {seed}', dirs[arm.key])
            runs.append(read_mm_run(arm.key, dirs[arm.key], seed, wall, budgets[arm.key]))

    wrong = [f'{r.arm} seed {r.seed}: {r.steps}' for r in runs if r.steps != steps]
    if wrong:
        raise BenchmarkError(f'--steps {steps}: runs made another number of optimizer steps '
                             f'({", ".join(wrong)}); the table would compare unequal budgets')
    rows = summarise(runs)
    write_runs_csv(osp.join(work_dir, 'runs.csv'), runs)
    write_arms_csv(osp.join(work_dir, 'arms.csv'), rows)
    table = markdown(rows, steps, seeds)
    with open(osp.join(work_dir, 'arms.md'), 'w') as f:
        f.write(table)
    plot(osp.join(work_dir, 'arms_map.png'), runs)
    with open(osp.join(work_dir, 'commands.sh'), 'w') as f:
        f.write('\n'.join(commands) + '\n')
    record = dict(steps=steps, seeds=list(seeds), script=osp.abspath(script),
                  data_root=osp.abspath(data_root), configs=configs,
                  budgets={k: asdict(b) for k, b in budgets.items()},
                  runs=[asdict(r) for r in runs], arms=rows, commands=commands)
    with open(osp.join(work_dir, 'arms.json'), 'w') as f:
        json.dump(record, f, indent=1)
    log(table)
    log(f'Wrote {work_dir}/arms.csv, runs.csv, arms.md, arms_map.png, arms.json, commands.sh')
    return record
