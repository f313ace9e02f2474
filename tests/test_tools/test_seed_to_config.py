"""Issue 11, item 1: tools/misc/seed_to_config.py carries a transformers
Trainer script's constants over to a child config of a fine-tuning config.

Every test goes through the tool's ``main(argv)`` and reads what it wrote
with mmengine's ``Config.fromfile``; the last one trains the written config
through ``tools/train.py`` and checks that every carried value acts in what
the runner built and ran.
"""
import os.path as osp
import textwrap

import pytest
import torch
from mmdet.registry import HOOKS
from mmengine.config import Config
from mmengine.hooks import Hook

from rtdetr_mm.converters.seed_script import KNOBS, read_constants
from rtdetr_mm.testing import ROOT
from rtdetr_mm.testing.tiny_coco import CLASSES, make_tiny_coco
from rtdetr_mm.testing.tools import load_tool

pytestmark = pytest.mark.timeout(300)

FT18 = osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r18vd_1xb8-36e_custom.py')
FT50 = osp.join(ROOT, 'configs/rtdetrv2_finetune/rtdetrv2_r50vd_1xb8-36e_custom.py')
REFERENCE = osp.join(ROOT, 'configs/rtdetrv2_finetune/reference_seed_script.py')
HEAD = 'model.bbox_head.loss_cls'
COSTS = 'model.train_cfg.assigner.match_costs'
#: every key a constant can set, and the dataset keys
KEYS = sorted({key for knob in KNOBS for key in knob.keys}) + [
    'model.bbox_head.num_classes', 'train_dataloader.dataset.data_root',
    'train_dataloader.dataset.ann_file', 'train_dataloader.dataset.data_prefix.img',
    'val_dataloader.dataset.ann_file', 'test_dataloader.dataset.data_prefix.img',
    'train_dataloader.dataset.metainfo.classes', 'val_evaluator.ann_file']


@pytest.fixture(scope='module')
def tool():
    return load_tool('misc/seed_to_config')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp('seed_data')), num_images=4,
                          size=(64, 64))


@pytest.fixture(scope='module')
def defaults():
    """(base config path) -> its value of every key in KEYS."""
    cache = {}

    def values_of(base):
        if base not in cache:
            cache[base] = _values(Config.fromfile(base))
        return dict(cache[base])
    return values_of


def _get(cfg, key):
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if part.isdigit() else node.get(part)
    return node


def _values(cfg):
    return {key: _get(cfg, key) for key in KEYS}


def _run(tool, tmp_path, capsys, script_text, *args):
    """Write the script, run the tool; (status, stdout, stderr, out path)."""
    script = tmp_path / 'train_model_finetuned.py'
    script.write_text(textwrap.dedent(script_text))
    out = str(tmp_path / 'my_config.py')
    status = tool.main([str(script), '--out', out, *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err, out


def _dataset_keys(root, ann='annotations.json', img='images/', classes=CLASSES):
    root = root.rstrip('/') + '/'
    return {'model.bbox_head.num_classes': len(classes),
            'train_dataloader.dataset.data_root': root,
            'train_dataloader.dataset.ann_file': ann,
            'train_dataloader.dataset.data_prefix.img': img,
            'val_dataloader.dataset.ann_file': ann,
            'test_dataloader.dataset.data_prefix.img': img,
            'train_dataloader.dataset.metainfo.classes': tuple(classes),
            'val_evaluator.ann_file': root + ann}


# ------------------------------------------------------------ four styles
def test_constants_at_the_top(tool, tmp_path, capsys, defaults):
    """Every seed constant as a plain assignment at the top of the script,
    with the dataset paths and class names."""
    status, out, err, config = _run(tool, tmp_path, capsys, '''
        import torch
        from transformers import Trainer, TrainingArguments

        TRAIN_BATCH = 3
        VAL_BATCH = 5
        GRAD_ACCUM = 4
        EPOCHS = 12
        LEARNING_RATE = 2e-4
        WEIGHT_DECAY = 0.01
        WARMUP_RATIO = 0.05
        USE_FP16 = False
        USE_BF16 = True
        IMAGE_SIZE = (320, 256)
        EVAL_RATE_EPOCHS = 2
        USE_FOCAL_LOSS = False
        FOCAL_GAMMA = 1.5
        FOCAL_ALPHA = 0.3
        LABEL_SMOOTHING_IN_MODEL = 0.1
        EOS_COEF = 0.5
        MATCHER_CLASS_COST = 1.0
        MATCHER_BBOX_COST = 3.0
        CLASS_LOSS_COEF = 1.5
        DATA_ROOT = '/data/pets'
        TRAIN_ANN = 'train.json'
        TRAIN_IMG_DIR = 'train/'
        VAL_ANN = 'val.json'
        VAL_IMG_DIR = 'val/'
        CLASSES = ['cat', 'dog', 'bird']
        OUTPUT_DIR = 'out'

        def main():
            args = TrainingArguments(OUTPUT_DIR, per_device_train_batch_size=TRAIN_BATCH)
        ''')
    assert status == 0, err
    expected = defaults(FT18)
    expected.update({
        'train_dataloader.batch_size': 3, 'val_dataloader.batch_size': 5,
        'test_dataloader.batch_size': 5, 'optim_wrapper.accumulative_counts': 4,
        'train_cfg.max_epochs': 12, 'optim_wrapper.optimizer.lr': 2e-4,
        'optim_wrapper.optimizer.weight_decay': 0.01, 'param_scheduler.0.warmup_ratio': 0.05,
        'optim_wrapper.type': 'RTDETRv2AmpOptimWrapper', 'optim_wrapper.dtype': 'bfloat16',
        'image_size': (320, 256), 'train_cfg.val_interval': 2,
        f'{HEAD}.loss_type': 'bce',  # USE_FOCAL_LOSS False: bce has no alpha/gamma
        f'{HEAD}.label_smoothing': 0.1, f'{HEAD}.eos_coef': 0.5,
        f'{COSTS}.0.weight': 1.0, f'{COSTS}.1.weight': 3.0, f'{HEAD}.loss_weight': 1.5})
    expected.update(_dataset_keys('/data/pets', 'train.json', 'train/', ('cat', 'dog', 'bird')))
    expected['val_dataloader.dataset.ann_file'] = 'val.json'
    expected['test_dataloader.dataset.data_prefix.img'] = 'val/'
    expected['val_evaluator.ann_file'] = '/data/pets/val.json'
    written = Config.fromfile(config)
    assert _values(written) == expected
    # every key names its constant in a comment
    text = open(config).read()
    assert "batch_size=3,  # TRAIN_BATCH = 3 (line 5)" in text
    assert "loss_type='bce',  # USE_FOCAL_LOSS = False (line 16) -> 'bce'" in text
    assert "USE_FOCAL_LOSS=False selects 'bce', which has no gamma: not written" in out
    assert 'Not in the script' not in out
    assert 'Not carried over (no config key): OUTPUT_DIR' in out


def test_a_dict_of_settings_and_the_r50_base(tool, tmp_path, capsys, defaults):
    """Constants inside a top-level dict(...) and {...}; --base r50; no
    dataset constants: the placeholders stay and the lines to edit are named."""
    status, out, err, config = _run(tool, tmp_path, capsys, '''
        SETTINGS = dict(TRAIN_BATCH=6, EPOCHS=20, LEARNING_RATE=5e-5, USE_BF16=False,
                        USE_FP16=False, IMAGE_SIZE=512)
        LOSS = {'EOS_COEF': 1.0, 'FOCAL_ALPHA': None, 'MATCHER_BBOX_COST': 5.0,
                'MATCHER_GIOU_COST': 1.0, 'BACKBONE_LR': 5e-6}

        if __name__ == '__main__':
            run(**SETTINGS)
        ''', '--base', 'r50')
    assert status == 0, err
    base = Config.fromfile(FT50)
    expected = defaults(FT50)
    groups = [dict(g, lr_mult=0.1) if g['regex'].startswith('^backbone') else dict(g)
              for g in base.optim_wrapper.paramwise_cfg.groups]
    expected.update({
        'train_dataloader.batch_size': 6, 'train_cfg.max_epochs': 20,
        'optim_wrapper.optimizer.lr': 5e-5, 'image_size': (512, 512),
        f'{HEAD}.eos_coef': 1.0, f'{HEAD}.alpha': None, f'{COSTS}.1.weight': 5.0,
        f'{COSTS}.2.weight': 1.0, 'optim_wrapper.paramwise_cfg.groups': groups})
    written = Config.fromfile(config)
    assert _values(written) == expected
    assert written.load_from == base.load_from  # the r50 chain
    assert f"_base_ = {osp.relpath(FT50, str(tmp_path))!r}" in open(config).read() or \
        f"_base_ = {FT50!r}" in open(config).read()
    # the dataset block: base placeholders, every line named
    assert 'Edit lines 7, 8, 9, 10, 11, 12 of' in out
    lines = open(config).read().splitlines()
    assert [lines[n - 1].split(' = ')[0] for n in range(7, 13)] == [
        'data_root', 'train_ann_file', 'train_img_dir', 'val_ann_file', 'val_img_dir', 'classes']
    assert all('EDIT' in lines[n - 1] for n in range(7, 13))
    assert 'Not in the script (the config default is kept):' in out
    assert '  VAL_BATCH -> val_dataloader.batch_size = 8, test_dataloader.batch_size = 8' in out


def test_arithmetic_and_names(tool, tmp_path, capsys, defaults, data):
    """Arithmetic, names defined earlier, tuple unpacking, f-strings and
    os.path.join; the script is never run (its last line would raise)."""
    status, out, err, config = _run(tool, tmp_path, capsys, f'''
        import os
        BASE_LR = 1e-4
        LEARNING_RATE = BASE_LR * 2
        BACKBONE_LR = LEARNING_RATE / 20
        TRAIN_BATCH, VAL_BATCH = 2, 2 * 2
        GRAD_ACCUM = 8 // TRAIN_BATCH
        EPOCHS = 3 * 4.0
        IMAGE_SIZE = 32 * 10
        EVAL_RATE_EPOCHS = 1 / 4
        MATCHER_BBOX_COST = 2 ** 2 + 1.5
        WEIGHT_DECAY = -(-1e-3)
        ROOT = {data['data_root']!r}
        DATA_ROOT = f'{{ROOT}}/'
        TRAIN_ANN = os.path.join('.', 'annotations.json')[2:]
        VAL_ANN = TRAIN_ANN
        TRAIN_IMG_DIR = VAL_IMG_DIR = 'images/'
        ID2LABEL = {{0: 'square', 1: 'disk'}}
        raise SystemExit('this script must not be run by the tool')
        ''')
    assert status == 0, err
    expected = defaults(FT18)
    groups = [dict(g, lr_mult=0.05) if g['regex'].startswith('^backbone') else dict(g)
              for g in Config.fromfile(FT18).optim_wrapper.paramwise_cfg.groups]
    expected.update({
        'optim_wrapper.optimizer.lr': 2e-4, 'optim_wrapper.paramwise_cfg.groups': groups,
        'train_dataloader.batch_size': 2, 'val_dataloader.batch_size': 4,
        'test_dataloader.batch_size': 4, 'optim_wrapper.accumulative_counts': 4,
        'train_cfg.max_epochs': 12, 'image_size': (320, 320), 'train_cfg.val_interval': 0.25,
        f'{COSTS}.1.weight': 5.5, 'optim_wrapper.optimizer.weight_decay': 1e-3})
    expected.update(_dataset_keys(data['data_root']))
    assert _values(Config.fromfile(config)) == expected
    assert isinstance(Config.fromfile(config).train_cfg.max_epochs, int)  # 12.0 -> 12
    assert '12.0 written as the integer 12' in out


def test_missing_and_misspelled_constants(tool, tmp_path, capsys, defaults):
    """Misspelled names get a "did you mean", a constant the reader cannot
    evaluate and the absent ones keep the config default, and are listed."""
    status, out, err, config = _run(tool, tmp_path, capsys, '''
        import os
        LEARNIG_RATE = 1e-3
        eos_coef = 1e-5
        TRAIN_BATCH = int(os.environ.get('BATCH', 4))
        EPOCHS = 10
        MODEL_NAME = 'PekingU/rtdetr_v2_r18vd'
        ''')
    assert status == 0, err
    expected = defaults(FT18)
    expected['train_cfg.max_epochs'] = 10
    assert _values(Config.fromfile(config)) == expected  # only EPOCHS moved
    assert 'Unknown constant LEARNIG_RATE (line 3): did you mean LEARNING_RATE?' in out
    assert 'Unknown constant eos_coef (line 4): did you mean EOS_COEF?' in out
    assert 'Not evaluated without running the script' in out and '  TRAIN_BATCH (line 5)' in out
    assert 'Not carried over (no config key): MODEL_NAME' in out
    missing = out.split('Not in the script (the config default is kept):\n')[1]
    missing = missing.split('Not evaluated')[0]
    for line in ('  LEARNING_RATE -> optim_wrapper.optimizer.lr = 0.0001',
                 f'  EOS_COEF -> {HEAD}.eos_coef = 1.0',
                 '  WARMUP_RATIO -> param_scheduler.0.warmup_ratio = None',
                 f'  MATCHER_CLASS_COST -> {COSTS}.0.weight = 2.0'):
        assert line in missing
    assert '  EPOCHS' not in missing and '  TRAIN_BATCH' not in missing


# ------------------------------------------------------------- refusals
def test_image_size_255_refused_then_fixed(tool, tmp_path, capsys):
    script = 'IMAGE_SIZE = 255\nTRAIN_BATCH = 2\n'
    status, out, err, config = _run(tool, tmp_path, capsys, script)
    assert status == 1
    assert 'train_model_finetuned.py:1: IMAGE_SIZE=255: every side must be a positive ' \
        'multiple of 32' in err
    assert 'nearest valid: 255 -> 224 or 256' in err and '--fix-image-size' in err
    assert not osp.exists(config)
    status, out, err, config = _run(tool, tmp_path, capsys, script, '--fix-image-size')
    assert status == 0, err
    assert Config.fromfile(config).image_size == (256, 256)
    assert 'written as the nearest valid size (256, 256)' in out


@pytest.mark.parametrize('script,message', [
    ('USE_FP16 = True\nUSE_BF16 = True\n',
     ':2: USE_FP16=True and USE_BF16=True: choose one precision'),
    ('GRAD_ACCUM = 0\n',
     ':1: GRAD_ACCUM=0 -> optim_wrapper.accumulative_counts=0: must be an integer >= 1'),
    ("USE_FOCAL_LOSS = 'yes'\n", ":1: USE_FOCAL_LOSS='yes': must be True or False"),
    ('FOCAL_ALPHA = 1.5\n', ':1: FOCAL_ALPHA=1.5 -> model.bbox_head.loss_cls.alpha=1.5: '
                            'must be a number in [0, 1] or None'),
], ids=['fp16+bf16', 'grad_accum_0', 'focal_not_bool', 'alpha_above_1'])
def test_refused_values_write_nothing(tool, tmp_path, capsys, script, message):
    status, out, err, config = _run(tool, tmp_path, capsys, script)
    assert status == 1
    assert message in err
    assert f'error: nothing written to {config}' in err
    assert not osp.exists(config)


def test_eos_coef_warning_and_reference_script_dry_run(tool, tmp_path, capsys):
    """The shipped reference script (the README's seed values): EOS_COEF
    1e-5 is carried over with the warning; --dry-run prints, writes nothing."""
    out_file = str(tmp_path / 'ref.py')
    assert tool.main([REFERENCE, '--out', out_file, '--dry-run', '--fix-image-size']) == 0
    out = capsys.readouterr().out
    assert not osp.exists(out_file)
    assert 'EOS_COEF = 1e-05 (line 45) -> model.bbox_head.loss_cls.eos_coef = 1e-05' in out
    assert 'in the transformers script this had no effect (its model never read it); ' \
        'here it acts' in out
    assert 'WARNING: EOS_COEF=1e-05 scales the "no-object" terms' in out
    assert 'the model scores background highly' in out
    assert 'eos_coef=1e-05,  # EOS_COEF = 1e-05 (line 45)' in out  # the printed config
    constants = read_constants(REFERENCE)
    assert {k: constants[k] for k in ('TRAIN_BATCH', 'GRAD_ACCUM', 'EPOCHS', 'IMAGE_SIZE',
                                      'EOS_COEF', 'BACKBONE_LR')} == dict(
        TRAIN_BATCH=2, GRAD_ACCUM=2, EPOCHS=60, IMAGE_SIZE=255, EOS_COEF=1e-5,
        BACKBONE_LR=1e-5 / 10)


# ------------------------------------------- the written config trains
@HOOKS.register_module(force=True)
class SeedRecordHook(Hook):
    """Records what the runner built and what each iteration ran."""
    priority = 'LOWEST'
    record = {}

    def before_train(self, runner):
        rec = type(self).record = dict(iters=[], vals=[], autocast=[])
        model = runner.model
        names = {id(p): n for n, p in model.named_parameters()}
        rec['lr'], rec['wd'] = {}, {}
        for group in runner.optim_wrapper.optimizer.param_groups:
            for p in group['params']:
                rec['lr'][names[id(p)]] = group['initial_lr']
                rec['wd'][names[id(p)]] = group['weight_decay']
        rec['weight'] = model.bbox_head.enc_score_head.weight.detach().clone()
        rec['scheduler'] = runner.param_schedulers[0]
        loss = model.bbox_head.loss_cls
        rec['loss'] = (loss.loss_type, loss.gamma, loss.alpha, loss.label_smoothing,
                       loss.eos_coef, loss.loss_weight)
        rec['costs'] = [cost.weight for cost in model.bbox_head.assigner.match_costs]
        rec['num_classes'] = model.bbox_head.num_classes
        rec['val_resize'] = [t.scale for t in runner.val_dataloader.dataset.pipeline.transforms
                             if type(t).__name__ == 'Resize']

        def autocast_state(module, args):
            if module.training:
                rec['autocast'].append((torch.is_autocast_enabled('cpu'),
                                        torch.get_autocast_dtype('cpu')))
        self._handle = model.bbox_head.register_forward_pre_hook(autocast_state)

    def after_train(self, runner):
        self._handle.remove()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        type(self).record['iters'].append(dict(
            shapes=[tuple(x.shape) for x in data_batch['inputs']],
            weight=runner.model.bbox_head.enc_score_head.weight.detach().clone()))

    def after_val_epoch(self, runner, metrics=None):
        type(self).record['vals'].append(runner.iter)


SHRINK = ['model.neck.hidden_dim=64', 'model.neck.dim_feedforward=128', 'model.neck.num_heads=2',
          'model.bbox_head.in_channels=[64,64,64]', 'model.bbox_head.hidden_dim=64',
          'model.bbox_head.num_heads=2', 'model.bbox_head.dim_feedforward=128',
          'model.bbox_head.num_layers=1', 'model.bbox_head.num_queries=20',
          'model.bbox_head.dn_cfg.num_denoising=10', 'load_from=None']
LOADERS = [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
           for key in ('num_workers=0', 'persistent_workers=False')]


def test_written_config_checks_and_trains_with_every_value(tool, tmp_path, capsys, data):
    """The config written from a seed script passes check_dataset.py and
    trains 2 iterations through tools/train.py; every carried value acts."""
    status, out, err, config = _run(tool, tmp_path, capsys, f'''
        TRAIN_BATCH = 2
        VAL_BATCH = 3
        GRAD_ACCUM = 2
        EPOCHS = 1
        LEARNING_RATE = 3e-4
        BACKBONE_LR = 1.5e-5
        WEIGHT_DECAY = 0.02
        WARMUP_RATIO = 0.5
        USE_FP16 = False
        USE_BF16 = True
        IMAGE_SIZE = 64
        EVAL_RATE_EPOCHS = 0.5
        USE_FOCAL_LOSS = True
        FOCAL_GAMMA = 1.0
        FOCAL_ALPHA = 0.25
        LABEL_SMOOTHING_IN_MODEL = 0.02
        EOS_COEF = 1e-5
        MATCHER_CLASS_COST = 2.5
        MATCHER_BBOX_COST = 4.0
        CLASS_LOSS_COEF = 2.0
        DATA_ROOT = {data['data_root']!r}
        TRAIN_ANN = VAL_ANN = 'annotations.json'
        TRAIN_IMG_DIR = VAL_IMG_DIR = 'images/'
        CLASSES = {CLASSES!r}
        ''')
    assert status == 0, err
    assert load_tool('misc/check_dataset').main([config]) == 0, capsys.readouterr()
    capsys.readouterr()
    train = load_tool('train')
    work = str(tmp_path / 'work')
    assert train.main([config, '--work-dir', work, '--cfg-options', *SHRINK, *LOADERS,
                       'default_hooks.seed_record.type=SeedRecordHook']) == 0, \
        capsys.readouterr().err
    rec = SeedRecordHook.record
    # batch sizes, epochs, evaluation rate: 4 images / 2 = 2 iterations, 1 epoch,
    # validation after iterations 1 (mid-epoch) and 2
    assert [it['shapes'] for it in rec['iters']] == [[(3, 64, 64)] * 2] * 2  # + IMAGE_SIZE
    assert rec['vals'] == [1, 2]
    cfg = Config.fromfile(config)
    assert cfg.val_dataloader.batch_size == cfg.test_dataloader.batch_size == 3
    # GRAD_ACCUM: the weights change at the 2nd iteration only
    weights = [rec['weight']] + [it['weight'] for it in rec['iters']]
    assert [not torch.equal(a, b) for a, b in zip(weights, weights[1:])] == [False, True]
    # WARMUP_RATIO: 0.5 of 1 optimizer step -> 1 step (the base config: 300), 2 iterations
    assert (rec['scheduler'].warmup_steps, rec['scheduler'].warmup_iters) == (1, 2)
    # LEARNING_RATE (head), BACKBONE_LR, WEIGHT_DECAY (norms 0)
    for name, lr in rec['lr'].items():
        assert lr == pytest.approx(1.5e-5 if name.startswith('backbone.') else 3e-4), name
    assert rec['lr']['bbox_head.enc_score_head.weight'] == pytest.approx(3e-4)
    assert rec['wd']['bbox_head.enc_score_head.weight'] == pytest.approx(0.02)
    # USE_BF16: the head ran under bf16 autocast in both training iterations
    assert rec['autocast'] == [(True, torch.bfloat16)] * 2
    # the loss, the matcher and the val pipeline as built
    assert rec['loss'] == ('vfl', 1.0, 0.25, 0.02, 1e-5, 2.0)
    assert rec['costs'] == [2.5, 4.0, 2.0]  # the GIoU cost keeps the base weight
    assert rec['num_classes'] == 2 and rec['val_resize'] == [(64, 64)]
