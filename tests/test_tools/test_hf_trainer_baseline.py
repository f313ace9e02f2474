"""tools/analysis_tools/hf_trainer_baseline.py: transformers' RT-DETRv2 trained
by transformers' Trainer on an rtdetr_mm config's data, then printed by
compare.py beside an rtdetr_mm row of the same config.

One tiny dataset (8 images, 128 x 128) and the demo model's shape (r18vd,
128-wide, 2 decoder layers, 100 queries) through a child of the demo
config: 1 epoch of 2 batches of 4 = 2 optimizer steps for both. Checked
another way:

* the steps, batch and input size of the result are the config's run;
* the result's AP columns = pycocotools' COCOeval run here on the saved
  final weights' detections (not through mmdet's CocoMetric);
* params = the parameters of the saved model; the AdamW groups hold the same
  parameters as rtdetr_mm's optimizer constructor builds from the config;
* the knobs: those transformers reads change its loss, the others do not;
* rtdetr_mm trains through tools/train.py with accelerate and albumentations
  unimportable.
"""
import contextlib
import copy
import csv
import io
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.checkout import run_python
from rtdetr_mm.testing.tiny_coco import make_tiny_coco, tiny_config
from rtdetr_mm.testing.tools import load_tool

DEMO = osp.join(ROOT, 'configs/rtdetrv2_demo/rtdetrv2_r18vd-demo_1xb4-12e_shapes.py')
SIZE = (128, 128)
NUM_IMAGES, BATCH = 8, 4  # 2 optimizer steps per epoch, 1 epoch

pytestmark = pytest.mark.timeout(300)

#: a seed script's constants as users write them (read, never run)
KNOBS = '''
TRAIN_BATCH = 2
GRAD_ACCUM = 2
EPOCHS = 60
LEARNING_RATE = 1e-5 * 2
WEIGHT_DECAY = 5e-3
WARMUP_RATIO = 0.1
USE_FP16 = False
USE_BF16 = False
IMAGE_SIZE = 255
EVAL_RATE_EPOCHS = 0.5
VAL_BATCH = 2
USE_FOCAL_LOSS = True
FOCAL_GAMMA = 1.0
FOCAL_ALPHA = 0.25
LABEL_SMOOTHING_IN_MODEL = 0.02
EOS_COEF = 1e-5
MATCHER_CLASS_COST = 2.0
MATCHER_BBOX_COST = 4.0
CLASS_LOSS_COEF = 2.0
'''

#: train rtdetr_mm through tools/train.py with the baseline's extras unimportable
TRAIN_WITHOUT_EXTRAS = '''
import runpy, sys
for name in ('accelerate', 'albumentations', 'albucore'):
    sys.modules[name] = None  # `import name` raises ImportError
sys.argv = ['tools/train.py', sys.argv[1], '--work-dir', sys.argv[2]]
runpy.run_path('tools/train.py', run_name='__main__')
'''


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('hf_baseline')
    data = make_tiny_coco(str(tmp / 'data'), num_images=NUM_IMAGES, size=SIZE)
    config = tiny_config(str(tmp / 'demo_tiny.py'), DEMO, data, size=SIZE, max_epochs=1,
                         batch_size=BATCH)
    knobs = tmp / 'train_model_finetuned.py'
    knobs.write_text(KNOBS)
    return dict(tmp=tmp, data=data, config=config, knobs=str(knobs))


@pytest.fixture(scope='module')
def ours(setup):
    """The rtdetr_mm row: tools/train.py on the same config (a child process
    in which accelerate and albumentations cannot be imported)."""
    work_dir = str(setup['tmp'] / 'work_ours')
    run_python(['-c', TRAIN_WITHOUT_EXTRAS, setup['config'], work_dir])
    return work_dir


@pytest.fixture(scope='module')
def baseline(setup):
    """hf_trainer_baseline.py CONFIG --knobs SCRIPT (its main(argv))."""
    tool = load_tool('analysis_tools/hf_trainer_baseline')
    work_dir = str(setup['tmp'] / 'work_hf')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = tool.main([setup['config'], '--work-dir', work_dir, '--knobs', setup['knobs'],
                            '--name', 'hf-trainer'])
    assert status == 0, out.getvalue()[-3000:]
    with open(osp.join(work_dir, 'hf_trainer_result.json')) as f:
        result = json.load(f)
    return dict(work_dir=work_dir, result=result, log=out.getvalue())


def test_budget_input_and_knobs_of_the_run(baseline):
    result = baseline['result']
    # the config's run: 8 images / batch 4 (drop_last False) x 1 epoch, no
    # accumulation; TRAIN_BATCH / GRAD_ACCUM / EPOCHS / IMAGE_SIZE do not win
    assert (result['train_steps'], result['images_per_step']) == (2, BATCH)
    assert result['input'] == f'{SIZE[0]}x{SIZE[1]}'
    assert result['images_per_s'] == pytest.approx(2 * BATCH / result['train_time_s'])
    settings = {s['target']: s for s in result['settings'] if s['source'].startswith('knob')}
    assert settings['TrainingArguments.learning_rate']['value'] == pytest.approx(2e-5)
    assert 'no effect' in settings['focal_alpha (no transformers field; its VFL reads '
                                   'focal_loss_alpha)']['source']
    assert settings['RTDetrV2Config.matcher_bbox_cost']['value'] == 4.0
    assert 'CONFIG decides' in settings['train_dataloader.batch_size']['source']
    assert 'no effect' in settings['eos_coefficient (read by no RT-DETR loss)']['source']
    # the saved model carries them (transformers' config.json)
    with open(osp.join(baseline['work_dir'], 'final_hf', 'config.json')) as f:
        hf_cfg = json.load(f)
    # FOCAL_* as the script set them reach no transformers field: its defaults
    assert (hf_cfg['focal_loss_alpha'], hf_cfg['focal_loss_gamma']) == (0.75, 2.0)
    assert (hf_cfg['matcher_bbox_cost'], hf_cfg['weight_loss_vfl']) == (4.0, 1.0)
    assert (hf_cfg['num_queries'], hf_cfg['decoder_layers'], hf_cfg['d_model']) == (100, 2, 128)
    # EVAL_RATE_EPOCHS 0.5 of a 2-step epoch: a point after step 1, and the
    # final evaluation (val split = test split here) at step 2
    assert [p['step'] for p in result['curve']] == [1, 2]
    assert 'USE_BF16' in baseline['log'] and "precision = 'fp32'" in baseline['log']


def _coco_stats(model_dir: str, ann_file: str, img_dir: str, classes) -> list:
    """COCOeval bbox stats[0:6] of the model's detections (pycocotools
    directly: category ids by class name, boxes xywh in image pixels)."""
    import cv2
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from transformers import RTDetrV2ForObjectDetection
    from transformers.models.rt_detr.image_processing_pil_rt_detr import \
        RTDetrImageProcessorPil
    model = RTDetrV2ForObjectDetection.from_pretrained(model_dir).eval()
    processor = RTDetrImageProcessorPil(size=dict(height=SIZE[0], width=SIZE[1]))
    coco = COCO(ann_file)
    cat_of = {c['name']: c['id'] for c in coco.loadCats(coco.getCatIds())}
    detections = []
    for image in coco.loadImgs(coco.getImgIds()):
        rgb = cv2.imread(osp.join(img_dir, image['file_name']))[:, :, ::-1].copy()
        with torch.no_grad():
            out = model(pixel_values=processor(images=rgb, return_tensors='pt')['pixel_values'])
        found = processor.post_process_object_detection(
            out, threshold=-1.0, target_sizes=[rgb.shape[:2]])[0]
        for score, label, (x1, y1, x2, y2) in zip(found['scores'].tolist(),
                                                  found['labels'].tolist(),
                                                  found['boxes'].tolist()):
            detections.append(dict(image_id=image['id'], category_id=cat_of[classes[label]],
                                   bbox=[x1, y1, x2 - x1, y2 - y1], score=score))
    evaluator = COCOeval(coco, coco.loadRes(detections), 'bbox')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return list(evaluator.stats[:6])


def test_ap_columns_equal_cocoeval_of_the_saved_model(setup, baseline):
    from rtdetr_mm.testing.tiny_coco import CLASSES
    stats = _coco_stats(osp.join(baseline['work_dir'], 'final_hf'), setup['data']['ann_file'],
                        setup['data']['img_dir'], CLASSES)
    metrics = baseline['result']['metrics']
    keys = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75', 'coco/bbox_mAP_s',
            'coco/bbox_mAP_m', 'coco/bbox_mAP_l')
    # mmdet's CocoMetric rounds to 3 decimals
    assert [metrics[k] for k in keys] == [round(float(s), 3) for s in stats], (metrics, stats)


def _annotate_with_top_detections(src: str, dst: str, model_dir: str, img_dir: str) -> None:
    """``src`` with its annotations replaced by the model's best and 8th best
    box per image (so that the AP is partial, neither 0 nor 1)."""
    import cv2
    from transformers import RTDetrV2ForObjectDetection
    from transformers.models.rt_detr.image_processing_pil_rt_detr import \
        RTDetrImageProcessorPil
    model = RTDetrV2ForObjectDetection.from_pretrained(model_dir).eval()
    processor = RTDetrImageProcessorPil(size=dict(height=SIZE[0], width=SIZE[1]))
    with open(src) as f:
        coco = json.load(f)
    annotations = []
    for image in coco['images']:
        rgb = cv2.imread(osp.join(img_dir, image['file_name']))[:, :, ::-1].copy()
        with torch.no_grad():
            out = model(pixel_values=processor(images=rgb, return_tensors='pt')['pixel_values'])
        found = processor.post_process_object_detection(
            out, threshold=-1.0, target_sizes=[rgb.shape[:2]])[0]
        ranked = list(zip(found['labels'].tolist(), found['boxes'].tolist()))
        for label, box in (ranked[0], ranked[7]):  # ranks 2-7: false positives
            x1, y1, x2, y2 = np.clip(box, 0, [image['width'], image['height']] * 2)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                annotations.append(dict(id=len(annotations) + 1, image_id=image['id'],
                                        category_id=coco['categories'][label]['id'],
                                        bbox=[x1, y1, x2 - x1, y2 - y1],
                                        area=(x2 - x1) * (y2 - y1), iscrowd=0))
    coco['annotations'] = annotations
    with open(dst, 'w') as f:
        json.dump(coco, f)


def test_evaluation_equals_cocoeval_on_partial_ground_truth(setup, baseline):
    """The evaluation the tool runs (the config's CocoMetric on transformers'
    detections) against COCOeval, on ground truth where the AP is partial."""
    from mmengine.config import Config
    from rtdetr_mm.engine.runner import apply_image_size
    from rtdetr_mm.testing import hf_trainer
    from rtdetr_mm.testing.tiny_coco import CLASSES
    model_dir = osp.join(baseline['work_dir'], 'final_hf')
    ann_file = str(setup['tmp'] / 'detections_as_gt.json')
    _annotate_with_top_detections(setup['data']['ann_file'], ann_file, model_dir,
                                  setup['data']['img_dir'])
    cfg = Config.fromfile(setup['config'])
    apply_image_size(cfg)
    cfg.test_dataloader.dataset.ann_file = ann_file
    cfg.test_evaluator.ann_file = ann_file
    from transformers import RTDetrV2ForObjectDetection
    model = RTDetrV2ForObjectDetection.from_pretrained(model_dir)
    plan = hf_trainer.make_plan(cfg, NUM_IMAGES)
    metrics = hf_trainer.evaluate(model, hf_trainer.make_processor(plan), cfg,
                                  hf_trainer.build_split(cfg, 'test'), plan, 'test')
    stats = _coco_stats(model_dir, ann_file, setup['data']['img_dir'], CLASSES)
    keys = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75')
    assert [metrics[k] for k in keys] == [round(float(s), 3) for s in stats[:3]], (metrics, stats)
    assert 0.05 < stats[0] < 0.95, stats


def test_compare_prints_it_beside_an_rtdetr_mm_row(setup, ours, baseline):
    compare = load_tool('analysis_tools/compare')
    csv_file = str(setup['tmp'] / 'table.csv')
    result_file = osp.join(baseline['work_dir'], 'hf_trainer_result.json')
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        compare.main([setup['config'], '--work-dirs', ours, '--names', 'rtdetr_mm',
                      '--results', result_file, '--csv', csv_file, '--latency-runs', '1',
                      '--warmup-runs', '0', '--device', 'cpu',
                      '--out-dir', str(setup['tmp'] / 'compare_out')])
    markdown = out.getvalue()
    print(markdown)  # shown with -s
    with open(csv_file) as f:
        rows = {r['model']: r for r in csv.DictReader(f)}
    assert list(rows) == ['rtdetr_mm', 'hf-trainer']
    hf, mm = rows['hf-trainer'], rows['rtdetr_mm']
    result = baseline['result']
    assert int(hf['params']) == result['params']
    assert (int(hf['train_iters']), int(mm['train_iters'])) == (2, 2)
    assert hf['input'] == mm['input'] == f'{SIZE[0]}x{SIZE[1]}'
    assert float(hf['AP']) == result['metrics']['coco/bbox_mAP']
    assert float(hf['images_per_s']) == pytest.approx(result['images_per_s'], rel=1e-3)
    assert float(mm['images_per_s']) == pytest.approx(
        2 * BATCH / float(mm['train_time_s']), rel=1e-2)
    lines = markdown.splitlines()
    assert '| img/s (train) |' in lines[0]
    assert any(line.startswith('| rtdetr_mm | 128x128 |') for line in lines)
    assert any(line.startswith('| hf-trainer | 128x128 |') and '| n/a | n/a |' in line
               for line in lines)
    assert f'hf-trainer: {result_file}' in markdown


def test_params_and_parameter_groups_match_rtdetr_mm(setup, baseline):
    """Same architecture (params) and the same AdamW groups (parameters, lr,
    weight decay) as rtdetr_mm's optimizer constructor builds from CONFIG."""
    import rtdetr_mm  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from transformers import RTDetrV2ForObjectDetection
    from rtdetr_mm.engine.runner import apply_image_size
    from rtdetr_mm.testing import hf_trainer
    hf = RTDetrV2ForObjectDetection.from_pretrained(osp.join(baseline['work_dir'], 'final_hf'))
    assert baseline['result']['params'] == sum(p.numel() for p in hf.parameters())
    init_default_scope('mmdet')
    cfg = Config.fromfile(setup['config'])
    apply_image_size(cfg)
    ours = MODELS.build(copy.deepcopy(cfg.model))
    assert sum(p.numel() for p in ours.parameters()) == baseline['result']['params']
    plan = hf_trainer.make_plan(cfg, NUM_IMAGES)
    assert plan.param_groups, 'the demo config has parameter groups'
    theirs = sorted((sum(p.numel() for p in g['params']), g['lr'], g['weight_decay'])
                    for g in hf_trainer._param_groups(hf, plan))
    wrapper = build_optim_wrapper(ours, copy.deepcopy(cfg.optim_wrapper))
    mine = sorted((sum(p.numel() for p in g['params']), g['lr'], g['weight_decay'])
                  for g in wrapper.optimizer.param_groups)
    assert theirs == mine


def test_which_knobs_act_in_transformers():
    """The KNOBS table's claims: transformers' RT-DETRv2 loss reads
    focal_loss_alpha / focal_loss_gamma, but not the focal_alpha /
    focal_gamma the seed script sets, nor eos_coefficient, label_smoothing,
    class_loss_coefficient."""
    from transformers import RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection
    from rtdetr_mm.testing import hf_trainer
    backbone = RTDetrResNetConfig(**hf_trainer.BACKBONES[18], out_features=['stage2', 'stage3',
                                                                           'stage4'])
    small = dict(num_labels=3, encoder_in_channels=[128, 256, 512], hidden_expansion=0.5,
                 decoder_layers=2, num_queries=50, num_denoising=0, d_model=64,
                 encoder_hidden_dim=64, decoder_in_channels=[64, 64, 64], encoder_ffn_dim=128,
                 decoder_ffn_dim=128)
    images = torch.rand(1, 3, 128, 128)
    labels = [dict(class_labels=torch.tensor([1]), boxes=torch.tensor([[0.5, 0.5, 0.3, 0.3]]))]

    def vfl(**knob):
        torch.manual_seed(0)
        model = RTDetrV2ForObjectDetection(RTDetrV2Config(backbone_config=backbone, **small,
                                                          **knob)).eval()
        with torch.no_grad():
            return model(pixel_values=images, labels=labels).loss_dict['loss_vfl'].item()

    base = vfl()
    for field in ('focal_loss_alpha', 'focal_loss_gamma'):  # the real fields act
        assert vfl(**{field: 0.1}) != pytest.approx(base), field
    for field in ('focal_alpha', 'focal_gamma', 'eos_coefficient', 'label_smoothing',
                  'class_loss_coefficient'):  # what the script sets does not
        assert vfl(**{field: 1e-5}) == pytest.approx(base, abs=0), field
    inert = {n for n, (kind, _) in hf_trainer.KNOBS.items() if kind == 'inert'}
    assert inert == {'EOS_COEF', 'LABEL_SMOOTHING_IN_MODEL', 'CLASS_LOSS_COEF', 'FOCAL_GAMMA',
                     'FOCAL_ALPHA'}
    # the reference script sets exactly those names
    with open(osp.join(ROOT, 'configs/rtdetrv2_finetune/reference_seed_script.py')) as f:
        script = f.read()
    assert 'focal_gamma=FOCAL_GAMMA' in script and 'focal_alpha=FOCAL_ALPHA' in script


def test_missing_extras_exit_1_with_how_to_install(setup, monkeypatch, capsys):
    tool = load_tool('analysis_tools/hf_trainer_baseline')
    monkeypatch.setitem(sys.modules, 'albumentations', None)  # import raises ImportError
    status = tool.main([setup['config'], '--work-dir', str(setup['tmp'] / 'work_missing')])
    err = capsys.readouterr().err
    assert status == 1, err
    assert 'error: the transformers Trainer baseline needs albumentations' in err
    assert 'make install' in err and '--no-deps' in err


def test_architecture_transformers_cannot_build_exit_1(setup, capsys):
    tool = load_tool('analysis_tools/hf_trainer_baseline')
    status = tool.main([setup['config'], '--work-dir', str(setup['tmp'] / 'work_depth'),
                        '--cfg-options', 'model.neck.depth_mult=0.5'])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "error: model.neck.depth_mult=0.5: transformers' encoder has 3 RepVGG" in err
