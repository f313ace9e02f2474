"""tools/analysis_tools/compare.py: a tiny RT-DETRv2 and a reduced mmdet DINO
(configs/comparison/) trained for 2 iterations each on the same synthetic
shapes data, then compared; every column is checked against a figure
obtained another way:

* params: ``sum(p.numel())`` of the model built from the config;
* AP ... APl: ``tools/test.py`` on the same checkpoint (its own runner and
  json log). The validation annotations are made from the two models' own
  top-2 detections, so the APs are neither 0 nor 1 and differ per model: a
  table that evaluated other weights would not match;
* train time / iterations: the per-iteration ``time`` of the training log;
* FLOPs: hand-counted toy modules (conv, linear, bilinear / nearest
  grid_sample) and the lower-bound mark for an operator without a counter.
"""
import contextlib
import csv
import glob
import io
import json
import os.path as osp

import pytest
import torch

from rtdetr_mm.testing.tools import load_tool
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import PIPELINES
R18 = osp.join(ROOT, 'configs/rtdetrv2/rtdetrv2_r18vd_4xb4-120e_coco.py')
DINO = osp.join(ROOT, 'configs/comparison/dino-4scale_r50_1xb4-12e_shapes.py')
IMAGE_SIZE = (64, 64)  # (h, w)
NUM_TRAIN, NUM_VAL, BATCH = 8, 4, 4  # 2 training iterations per model

pytestmark = pytest.mark.timeout(420)


# The data, input size, pipeline, evaluator and schedule length shared by
# both children (as configs/_base_/datasets/shapes_detection.py is shared by
# the real comparison configs), on the tiny data in the test's folder.
SHARED = '''
classes = {classes!r}
image_size = {size!r}
data_root = {root!r}
{pipelines}train_dataloader = dict(
    _delete_=True, batch_size={batch}, num_workers=0, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='images/train/'),
                 filter_cfg=dict(filter_empty_gt=False), pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True, batch_size=2, num_workers=0, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=dict(classes=classes),
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='images/val/'), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='CocoMetric', metric='bbox', format_only=False,
                     ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
randomness = dict(seed=0)
# one epoch (validated at its end, before the annotations are replaced)
train_cfg = dict(_delete_=True, type={loop!r}, max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))
log_processor = dict(window_size=1)  # the logged `time` is each iteration's own
log_level = 'WARNING'
# both trainings run in this process: mmengine keeps one visualizer (and so
# one scalars.json) per name
visualizer = dict(name={visualizer!r})
'''

RTDETR_MODEL = '''
# RT-DETRv2 reduced: 64-channel encoder / decoder, 1 decoder layer, 20 queries
model = dict(neck=dict(hidden_dim=64, dim_feedforward=128, num_heads=2),
             bbox_head=dict(num_classes={num_classes}, in_channels=(64, 64, 64),
                            hidden_dim=64, num_heads=2, dim_feedforward=128,
                            num_layers=1, num_queries=20,
                            dn_cfg=dict(num_denoising=10)))
# the recipe's EMA (a default hook of the base); no strong-augmentation
# switch (the shared light pipeline)
default_hooks['aug_switch'] = None
'''

DINO_MODEL = '''
# DINO reduced: ResNet-18, 1 encoder and 1 decoder layer, 10 queries
model = dict(num_queries=10,
             backbone=dict(depth=18),
             neck=dict(in_channels=[128, 256, 512]),
             encoder=dict(num_layers=1),
             decoder=dict(num_layers=1),
             bbox_head=dict(num_classes={num_classes}),
             dn_cfg=dict(group_cfg=dict(num_dn_queries=10)),
             test_cfg=dict(max_per_img=10))
'''


def _write_config(path: str, base: str, model_text: str, loop: str, data_root: str,
                  classes) -> str:
    text = f'_base_ = {base!r}\n' + SHARED.format(
        classes=tuple(classes), size=IMAGE_SIZE, root=data_root, pipelines=PIPELINES,
        batch=BATCH, loop=loop,
        visualizer='visualizer_' + osp.splitext(osp.basename(path))[0])
    text += model_text.format(num_classes=len(classes))
    with open(path, 'w') as f:
        f.write(text)
    return path


def _top_detections(config: str, checkpoint: str, images: list, k: int) -> list:
    """The ``k`` best detections (label, xyxy box in original pixels) of each
    image, from mmdet's ``init_detector`` / ``inference_detector``."""
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(config, checkpoint, device='cpu')
    found = []
    for result in inference_detector(model, images):
        pred = result.pred_instances
        order = pred.scores.argsort(descending=True)
        found.append([(int(pred.labels[i]), pred.bboxes[i].tolist()) for i in order[:k]])
    return found


def _annotate_with_detections(ann_file: str, per_model: list) -> None:
    """Replace the annotations of ``ann_file`` by the models' top detections
    (clipped to the image; boxes under 1 px skipped)."""
    with open(ann_file) as f:
        coco = json.load(f)
    annotations = []
    for img_idx, image in enumerate(coco['images']):
        for detections in per_model:
            for label, (x1, y1, x2, y2) in detections[img_idx]:
                x1, x2 = (min(max(v, 0.0), image['width']) for v in (x1, x2))
                y1, y2 = (min(max(v, 0.0), image['height']) for v in (y1, y2))
                w, h = x2 - x1, y2 - y1
                if w < 1 or h < 1:
                    continue
                annotations.append(dict(id=len(annotations) + 1, image_id=image['id'],
                                        category_id=coco['categories'][label]['id'],
                                        bbox=[x1, y1, w, h], area=w * h, iscrowd=0))
    coco['annotations'] = annotations
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


def _json_log_records(work_dir: str) -> list:
    """Every record of the json logs mmengine wrote under ``work_dir``."""
    records = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
                       + glob.glob(osp.join(work_dir, '*', '*.json'))):
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two configs, each trained for 2 iterations on the same tiny data,
    with validation annotations made from their own detections."""
    from rtdetr_mm.testing.synthetic import make_synthetic_coco
    from rtdetr_mm.testing.synthetic import DEFAULT_CLASSES
    tmp = tmp_path_factory.mktemp('compare')
    data = make_synthetic_coco(str(tmp / 'shapes'), num_train=NUM_TRAIN, num_val=NUM_VAL,
                               image_size=IMAGE_SIZE, min_objects=1, max_objects=3)
    data_root = data['data_root'].rstrip('/') + '/'
    configs = dict(
        rtdetr=_write_config(str(tmp / 'rtdetrv2_tiny.py'), R18, RTDETR_MODEL,
                             'RTDETRv2EpochBasedTrainLoop', data_root, DEFAULT_CLASSES),
        dino=_write_config(str(tmp / 'dino_tiny.py'), DINO, DINO_MODEL,
                           'EpochBasedTrainLoop', data_root, DEFAULT_CLASSES))
    train = load_tool('train')
    work_dirs, checkpoints = {}, {}
    for name, config in configs.items():
        work_dirs[name] = str(tmp / f'work_{name}')
        train.main([config, '--work-dir', work_dirs[name]])
        with open(osp.join(work_dirs[name], 'last_checkpoint')) as f:
            checkpoints[name] = f.read().strip()

    val_dir = osp.join(data_root, 'images/val')
    with open(data['val_ann']) as f:
        images = [osp.join(val_dir, i['file_name']) for i in json.load(f)['images']]
    per_model = [_top_detections(configs[n], checkpoints[n], images, k=2) for n in configs]
    _annotate_with_detections(data['val_ann'], per_model)
    return dict(tmp=tmp, configs=configs, work_dirs=work_dirs, checkpoints=checkpoints)


@pytest.fixture(scope='module')
def table(trained):
    """compare.py's rows, Markdown (stdout) and CSV."""
    compare = load_tool('analysis_tools/compare')
    tmp = trained['tmp']
    csv_file = str(tmp / 'table.csv')
    names = list(trained['configs'])
    argv = [trained['configs'][n] for n in names]
    argv += ['--work-dirs'] + [trained['work_dirs'][n] for n in names]
    argv += ['--names', 'rtdetrv2-tiny', 'dino-tiny', '--csv', csv_file,
             '--latency-runs', '2', '--warmup-runs', '1', '--device', 'cpu',
             '--out-dir', str(tmp / 'compare_out')]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = compare.main(argv)
    markdown = out.getvalue()
    print(markdown)  # shown with -s
    with open(csv_file) as f:
        records = {r['model']: r for r in csv.DictReader(f)}
    return dict(rows=rows, markdown=markdown, csv=records,
                names=dict(zip(names, ['rtdetrv2-tiny', 'dino-tiny'])))


def test_params_equal_sum_of_parameter_sizes(trained, table):
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    for key, config in trained['configs'].items():
        model = MODELS.build(Config.fromfile(config).model)
        expected = sum(p.numel() for p in model.parameters())
        record = table['csv'][table['names'][key]]
        assert int(record['params']) == expected, (key, record['params'], expected)
        assert f'| {expected / 1e6:.2f} |' in table['markdown']


def test_ap_equals_tools_test(trained, table):
    """AP columns == tools/test.py's CocoMetric on the same checkpoint."""
    test_tool = load_tool('test')
    keys = dict(AP='coco/bbox_mAP', AP50='coco/bbox_mAP_50', AP75='coco/bbox_mAP_75',
                APs='coco/bbox_mAP_s', APm='coco/bbox_mAP_m', APl='coco/bbox_mAP_l')
    aps = {}
    for key, config in trained['configs'].items():
        work_dir = str(trained['tmp'] / f'test_{key}')
        test_tool.main([config, trained['checkpoints'][key], '--work-dir', work_dir])
        metrics = [r for r in _json_log_records(work_dir) if 'coco/bbox_mAP' in r]
        assert len(metrics) == 1, metrics
        record = table['csv'][table['names'][key]]
        for column, metric in keys.items():
            assert float(record[column]) == pytest.approx(metrics[0][metric], abs=1e-9), \
                (key, column, record[column], metrics[0][metric])
        aps[key] = metrics[0]['coco/bbox_mAP']
    # the annotations make the check meaningful: partial AP, not 0 or 1
    assert all(0.05 < ap < 0.95 for ap in aps.values()), aps


def test_train_time_is_sum_of_logged_iteration_times(trained, table):
    for key, work_dir in trained['work_dirs'].items():
        times = [r['time'] for r in _json_log_records(work_dir)
                 if {'time', 'lr', 'iter'} <= set(r)]  # training iterations
        assert len(times) == NUM_TRAIN // BATCH
        record = table['csv'][table['names'][key]]
        assert int(record['train_iters']) == NUM_TRAIN // BATCH
        # logged times are rounded to 4 decimals
        assert float(record['train_time_s']) == pytest.approx(sum(times), abs=1e-3 * len(times))


def test_table_columns_and_notes(table):
    header = table['markdown'].splitlines()[0]  # stdout is the table alone
    for column in ('params (M)', 'FLOPs (G)', 'latency (ms, cpu)', 'train time', 'AP',
                   'AP50', 'AP75', 'APs', 'APm', 'APl'):
        assert f'| {column} |' in header, header
    assert 'trained from scratch' in table['markdown']
    for record in table['csv'].values():
        assert record['from_scratch'] == 'True'
        assert record['input'] == f'{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}'
        assert int(record['flops']) > 0 and float(record['latency_ms']) > 0
        # on the CPU both deformable attentions run through grid_sample,
        # which is counted: exact, not a lower bound
        assert record['flops_lower_bound'] == 'False'
    assert '≥' not in table['markdown']


# --------------------------------------------------------------------------
# FLOP counting on hand-countable modules
# --------------------------------------------------------------------------
class _Toy(torch.nn.Module):
    """conv 3->8 (3x3, pad 1) on 16x16, grid_sample of 5x7 points, linear 8->4."""

    def __init__(self, mode: str = 'bilinear') -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)
        self.mode = mode

    def _forward(self, inputs, data_samples=None):
        feat = self.conv(inputs)                                   # (1, 8, 16, 16)
        grid = torch.linspace(-1, 1, 70).reshape(1, 5, 7, 2)
        sampled = torch.nn.functional.grid_sample(feat, grid, mode=self.mode,
                                                  align_corners=False)  # (1, 8, 5, 7)
        return (self.fc(sampled.flatten(2).transpose(1, 2)), )    # (1, 35, 4)


class _Opaque(torch.autograd.Function):
    """A custom op (as mmcv's CUDA deformable attention): traced as PythonOp."""

    @staticmethod
    def forward(ctx, x):
        return x @ x.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ToyWithOpaque(_Toy):

    def _forward(self, inputs, data_samples=None):
        return (_Opaque.apply(self.conv(inputs)), )


def test_flop_counts_by_hand():
    compare = load_tool('analysis_tools/compare')
    data = dict(inputs=torch.rand(1, 3, 16, 16), data_samples=None)
    conv = 8 * 3 * 9 * 16 * 16
    linear = 35 * 8 * 4
    with torch.no_grad():
        flops, lower_bound, uncounted = compare.count_flops(_Toy('bilinear'), data)
        assert (flops, lower_bound, uncounted) == (conv + 4 * 8 * 35 + linear, False, [])
        flops, lower_bound, _ = compare.count_flops(_Toy('nearest'), data)
        assert (flops, lower_bound) == (conv + linear, False)
        flops, lower_bound, uncounted = compare.count_flops(_ToyWithOpaque(), data)
    assert flops == conv and lower_bound and uncounted == ['prim::PythonOp._Opaque'], uncounted
    row = compare.Row(name='opaque', config='c.py', checkpoint='x.pth', params=10**6,
                      flops=flops, flops_lower_bound=True, uncounted_ops=uncounted)
    text = compare.markdown_table([row], 'cpu', 1)
    assert f'| ≥ {flops / 1e9:.2f} |' in text and 'opaque: prim::PythonOp._Opaque' in text


def test_from_scratch_is_checked_in_the_configs():
    """The comparison configs (and RT-DETRv2's) start from no pretrained
    weights; a config that does is named in the table instead."""
    from mmengine.config import Config
    compare = load_tool('analysis_tools/compare')
    for config in sorted(glob.glob(osp.join(ROOT, 'configs/comparison/*.py'))) + [R18]:
        assert compare.pretrained_sources(Config.fromfile(config)) == [], config
    cfg = Config.fromfile(DINO)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='torchvision://resnet50')
    found = compare.pretrained_sources(cfg)
    assert found == ['model.backbone.init_cfg=torchvision://resnet50'], found
    row = compare.Row(name='dino', config=DINO, checkpoint='x.pth', params=1, flops=1,
                      pretrained=found)
    text = compare.markdown_table([row], 'cpu', 1)
    assert 'trained from scratch on the same data' not in text
    assert 'NOT all trained from scratch: dino starts from model.backbone.init_cfg=' in text
