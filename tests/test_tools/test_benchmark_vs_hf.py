"""tools/analysis_tools/benchmark_vs_hf.py, smoke-run with the smallest
settings (r18vd, batch 1, 128x128: the least with >= 300 encoder tokens,
one repeat, fp32) in one child process:
the rows CSV, the sweeps' CSVs and plots and the profile table have what
they promise. Nothing here checks a time against another (the machine is
shared); only that times are positive and counts are integers.

The full runs (minutes to hours) are documented in the tool's docstring.
"""
import csv
import os.path as osp

import pytest

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.checkout import run_python

TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_vs_hf.py')
TINY = ['--sizes', 'r18vd', '--batches', '1', '--precisions', 'fp32', '--image', '128',
        '--repeats', '1', '--num-gt', '3', '--mm-size', '128']

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    proc = run_python([TOOL, '--rows', '--profile', *TINY, '--out-dir', str(out),
                       '--sweeps', 'gt', '--sweep-gts', '4', '100', '--sweep-batch', '1',
                       '--profile-batch', '1'],
                      timeout=280)
    return out, proc.stdout


def _read(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_rows(run):
    out, stdout = run
    rows = _read(osp.join(out, 'rows.csv'))
    assert [(r['size'], r['mode'], r['batch'], r['image'], r['precision']) for r in rows] == [
        ('r18vd', 'inference', '1', '128', 'fp32'), ('r18vd', 'train', '1', '128', 'fp32')]
    for row in rows:
        assert float(row['ours_s']) > 0 and float(row['hf_s']) > 0
        assert float(row['ratio']) == pytest.approx(float(row['ours_s']) / float(row['hf_s']),
                                                    rel=1e-6)
    infer, train = rows
    for impl in ('ours', 'hf'):
        for key in ('fwd_bwd_syncs', 'fwd_bwd_ops', 'opt_syncs', 'opt_ops'):
            assert int(train[f'{impl}_{key}']) >= 0, (impl, key)
        assert int(train[f'{impl}_fwd_bwd_ops']) > int(train[f'{impl}_opt_ops']) > 0
        assert float(train[f'{impl}_peak_mb']) > 0
        assert float(infer[f'{impl}_gflop']) > 0 and 0 < float(infer[f'{impl}_peak_frac'])
        assert infer[f'{impl}_fwd_bwd_syncs'] == '' and infer[f'{impl}_peak_mb'] == ''
    # transformers' matcher copies its cost matrix to the host for scipy.
    assert 'Tensor.cpu' in train['hf_sync_kinds']
    assert train['ours_fwd_bwd_syncs'] != ''
    assert 'Host syncs / aten ops' in stdout
    assert _read(osp.join(out, 'peak.csv'))[0]['precision'] == 'fp32'


def test_sweeps(run):
    out, stdout = run
    # Only the GT sweep (the image and batch sweeps run the same code on
    # other points, see the tool's docstring for their commands).
    expected = dict(gt=[('train', '4'), ('train', '100')])
    for sweep, points in expected.items():
        rows = _read(osp.join(out, f'sweep_{sweep}.csv'))
        assert [(r['mode'], r['value']) for r in rows] == points, sweep
        assert all(float(r['ours_s']) > 0 and float(r['hf_s']) > 0 for r in rows)
        with open(osp.join(out, f'sweep_{sweep}.png'), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert 'step(100 GT) / step(4 GT): ours' in stdout
    assert not osp.exists(osp.join(out, 'sweep_image.csv'))  # not asked for


def test_profile(run):
    out, stdout = run
    with open(osp.join(out, 'profile.md')) as f:
        text = f.read()
    assert text.count('| stage | rtdetr_mm ms | share | transformers ms | share |') == 2
    for stage in ('backbone', 'encoder', 'decoder', 'other', 'total'):
        assert f'| {stage} |' in text, stage
    train = text.split('**r18vd, inference')[0]
    for stage in ('backward', 'optimizer', 'matching', 'loss'):
        line = next(li for li in train.splitlines() if li.startswith(f'| {stage} |'))
        hf_ms = line.split('|')[4].strip()
        assert float(hf_ms) > 0, line
    line = next(li for li in train.splitlines() if li.startswith('| backbone |'))
    assert float(line.split('|')[2]) > 0 and float(line.split('|')[4]) > 0
