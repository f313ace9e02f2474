"""OperatingPointMetric in a real tiny run (tools/test.py, next to
CocoMetric) and tools/analysis_tools/operating_point.py (a checkpoint, or
the pkl of tools/test.py --out)."""
import glob
import json
import os.path as osp
import pickle

import pytest

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.model_utils import save_random_checkpoint
from rtdetr_mm.testing.tiny_coco import CLASSES, make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
REPORT = ('operating_points.csv', 'pr_curve.png', 'f1_curve.png', 'confusion_matrix.png',
          'confusion_matrix.csv')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A small-model config whose val / test evaluator is [CocoMetric,
    OperatingPointMetric(score_thr=0, out_dir)], a checkpoint of it, and
    tools/test.py's run with --out."""
    base = tmp_path_factory.mktemp('op')
    data = make_tiny_coco(str(base / 'data'), num_images=4, size=(64, 64))
    metric_dir = str(base / 'metric_report')
    extra = f'''val_evaluator = [
    dict(type='CocoMetric', ann_file={data['ann_file']!r}, metric='bbox'),
    dict(type='OperatingPointMetric', score_thr=0.0, iou_thr=0.5, out_dir={metric_dir!r})]
test_evaluator = val_evaluator'''
    config = tiny_config(str(base / 'cfg.py'), R18, data, size=(64, 64), max_epochs=1,
                         batch_size=2, small_model=True, extra=extra)
    ckpt = str(base / 'model.pth')
    save_random_checkpoint(config, ckpt, CLASSES)
    work_dir, out = str(base / 'test_work'), str(base / 'results.pkl')
    status = load_tool('test').main([config, ckpt, '--work-dir', work_dir, '--out', out])
    return dict(base=base, config=config, ckpt=ckpt, work_dir=work_dir, out=out, status=status,
                metric_dir=metric_dir)


def _read(path):
    with open(path) as f:
        return f.read()


def _assert_report(folder):
    for name in REPORT:
        path = osp.join(folder, name)
        assert osp.isfile(path), path
        if name.endswith('.png'):
            with open(path, 'rb') as f:
                assert f.read(8) == b'\x89PNG\r\n\x1a\n', path
    rows = _read(osp.join(folder, 'operating_points.csv')).splitlines()
    assert rows[0].startswith('class,gt,tp,fp,fn,precision,recall,f1,best_thr')
    assert [r.split(',')[0] for r in rows[1:]] == list(CLASSES) + ['all']
    # square, disk, background: rows and columns
    assert len(_read(osp.join(folder, 'confusion_matrix.csv')).splitlines()) == 4


def test_metric_next_to_coco_metric_in_tools_test(run):
    assert run['status'] == 0
    logged, = glob.glob(osp.join(run['work_dir'], '*', '*.json'))
    with open(logged) as f:
        metrics = json.loads(f.readline())
    for key in ('coco/bbox_mAP', 'op/F1', 'op/precision', 'op/recall', 'op/best_thr',
                'op/best_F1', 'op/square_F1', 'op/disk_best_thr'):
        assert key in metrics, (key, metrics)
    # score_thr 0 keeps every prediction (20 queries x 4 images): FP > 0
    rows = _read(osp.join(run['metric_dir'], 'operating_points.csv')).splitlines()
    assert int(rows[-1].split(',')[3]) > 0
    _assert_report(run['metric_dir'])


def test_cli_on_the_results_of_tools_test(run, capsys):
    """The pkl of tools/test.py --out, ground truth from the config's test
    dataset: the same figures as the metric computed in the run."""
    work = str(run['base'] / 'cli_results')
    status = load_tool('analysis_tools/operating_point').main(
        [run['config'], '--results', run['out'], '--score-thr', '0', '--work-dir', work])
    printed = capsys.readouterr().out
    assert status == 0
    assert 'class' in printed and 'square' in printed and 'best thr' in printed
    _assert_report(work)
    for name in ('operating_points.csv', 'confusion_matrix.csv'):
        assert _read(osp.join(work, name)) == _read(osp.join(run['metric_dir'], name))


def test_cli_with_a_checkpoint(run, capsys):
    work = str(run['base'] / 'cli_ckpt')
    status = load_tool('analysis_tools/operating_point').main(
        [run['config'], run['ckpt'], '--score-thr', '0', '--work-dir', work])
    assert status == 0
    assert osp.isfile(osp.join(work, 'results.pkl'))
    _assert_report(work)
    assert _read(osp.join(work, 'operating_points.csv')) == \
        _read(osp.join(run['metric_dir'], 'operating_points.csv'))


def test_cli_errors_name_the_input(run, capsys, tmp_path):
    tool = load_tool('analysis_tools/operating_point')
    assert tool.main([run['config'], '--results', run['out'], '--score-thr', '1.5',
                      '--work-dir', str(tmp_path)]) == 1
    assert 'error: tools/analysis_tools/operating_point.py: --score-thr=1.5 is out of range; ' \
           'valid is a number in [0, 1]' in capsys.readouterr().err
    # predictions of another dataset: image ids that the test dataset lacks
    with open(run['out'], 'rb') as f:
        results = pickle.load(f)
    results[0]['img_id'] = 999
    other = str(tmp_path / 'other.pkl')
    with open(other, 'wb') as f:
        pickle.dump(results, f)
    assert tool.main([run['config'], '--results', other, '--work-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'error: {other} has no predictions for image id 1' in err, err
    assert f'of the test dataset of {run["config"]}' in err, err
    assert not osp.exists(osp.join(str(tmp_path), 'operating_points.csv'))
    # predictions for an image the dataset lacks (all of its own present)
    with open(other, 'wb') as f:
        pickle.dump(results[1:] + [dict(results[0], img_id=1), dict(results[0], img_id=999)], f)
    assert tool.main([run['config'], '--results', other, '--work-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'error: {other} has predictions for 1 image id(s) that the test dataset of ' \
           f'{run["config"]} lacks (e.g. 999)' in err, err
    # not tools/test.py --out's file
    assert tool.main([run['config'], '--results', run['config'],
                      '--work-dir', str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f'error: {run["config"]}: cannot be read as a pickle' in err, err
    with open(other, 'wb') as f:
        pickle.dump({'img_id': 1}, f)
    assert tool.main([run['config'], '--results', other, '--work-dir', str(tmp_path)]) == 1
    assert f'error: {other}: not the predictions of tools/test.py --out' in \
        capsys.readouterr().err
