"""The loop benchmark (rtdetr_mm/testing/loop_benchmark.py,
``benchmark_vs_hf.py --loop``): its clock counts what an iteration of the
runner costs (waiting for data and every hook included), and the tool runs
the real demo config on tiny data. No time is compared with another."""
import csv
import time

import pytest
from mmdet.registry import RUNNERS
from mmengine.hooks import Hook

from rtdetr_mm.testing.checkout import run_python
from rtdetr_mm.testing.loop_benchmark import LOOP_COLUMNS, IterationClock
from rtdetr_mm.testing.synthetic import make_synthetic_coco
from rtdetr_mm.testing.toy_run import toy_run_config

SLEEP = 0.05


class SlowHook(Hook):
    """Adds SLEEP seconds after each iteration, before the clock's turn."""
    priority = 'NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        time.sleep(SLEEP)


def test_clock_counts_the_hooks_and_keeps_the_raw_batches(tmp_path):
    cfg = toy_run_config(tmp_path, name='clock', epochs=1, val_interval=1, samples=8,
                         scores=[0.5], metric=dict(), checkpoint=dict(interval=10),
                         custom_hooks=[])
    runner = RUNNERS.build(cfg)
    runner.register_hook(SlowHook())
    clock = IterationClock(keep=2)
    runner.register_hook(clock)
    runner.train()
    assert len(clock.seconds) == 4  # 8 samples, batch 2, one epoch
    assert min(clock.seconds) >= SLEEP  # a hook's time is in the iteration
    assert len(clock.batches) == 2
    # the raw batches the loop saw (ToyDataset: sample i is the vector (i, i))
    assert [[float(x[0]) for x in b['inputs']] for b in clock.batches] == [[0, 1], [2, 3]]


@pytest.mark.timeout(300)
def test_loop_mode_on_the_demo_config(tmp_path):
    data = tmp_path / 'data'
    make_synthetic_coco(str(data), num_train=12, num_val=4, image_size=((96, 128), (96, 128)))
    out = tmp_path / 'out'
    proc = run_python(['tools/analysis_tools/benchmark_vs_hf.py', '--loop', '--loop-iters', '3',
                       '--loop-warmup', '1', '--loop-workers', '0', '1', '--out-dir', str(out),
                       '--loop-cfg-options', f'train_dataloader.dataset.data_root={data}/'],
                      timeout=280)
    assert 'loop: num_workers 1:' in proc.stdout
    with open(out / 'loop.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['num_workers'] for r in rows] == ['0', '1'] and list(rows[0]) == LOOP_COLUMNS
    assert [r['persistent_workers'] for r in rows] == ['False', 'True']
    for r in rows:
        assert r['iters'] == '2' and float(r['loop_ms']) > 0 and float(r['step_ms']) > 0
        assert float(r['ratio']) == pytest.approx(float(r['loop_ms']) / float(r['step_ms']),
                                                  abs=2e-3)
