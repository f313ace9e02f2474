"""``RTDETRv2OptimWrapperConstructor``: every parameter lands in the group
its config's regex rules say, with that group's lr and weight decay.

Two independent references:

1. the config's own rules, evaluated here with ``re.search`` in order, first
   match wins, unmatched parameters in a default group at the base lr/wd
   (the constructor's documented semantics), over the model's trainable
   parameters;
2. the official per-size recipe (docs: ``rtdetrv2.md`` "Per-model
   overrides"), typed in as plain string predicates, so that a config whose
   regex silently misses a family of parameters fails too.

Plus, on a small hand-made module: first match wins on overlapping rules,
frozen parameters stay out, every parameter is in exactly one group, a rule
that names no parameter is reported (the info line with the per-rule
counts shows 0, and a warning names the regex; a rule whose parameters are
all frozen gets no warning), makes no empty group and is no error; malformed
rules are refused.
"""
import glob
import logging
import os.path as osp
import re
import uuid
from collections import Counter

import pytest
import torch.nn as nn
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.config import Config
from mmengine.logging import MMLogger

import rtdetr_mm  # noqa: F401  (registers the constructor)

from rtdetr_mm.testing import ROOT
CONSTRUCTOR = 'RTDETRv2OptimWrapperConstructor'
# (configs/rtdetrv2_finetune/reference_seed_script.py is a transformers
# script that seed_to_config.py reads, not a config)
CONFIGS = sorted(c for c in glob.glob(osp.join(ROOT, 'configs', 'rtdetrv2*', '*.py'))
                 if not osp.basename(c).startswith('reference_'))

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------ the official recipes
def _norm(name):
    return 'norm' in name or 'bn' in name


def _enc_dec(name):
    return name.startswith(('neck.', 'bbox_head.'))


def _backbone(name):
    return name.startswith('backbone.')


def _s(name):  # S: rules replaced by "norm|bn -> wd 0"; backbone at the base lr
    return 1.0, 0.0 if _norm(name) else 1.0


def _m_star(name):  # M* (r34): backbone lr x0.5 (its norms wd 0); enc/dec norm|bn|bias wd 0
    if _backbone(name):
        return 0.5, 0.0 if _norm(name) else 1.0
    return 1.0, 0.0 if _enc_dec(name) and (_norm(name) or 'bias' in name) else 1.0


def _backbone_non_norm(mult):  # M, L (x0.1), X (x0.01): backbone non-norm lr; enc/dec norms wd 0
    def rule(name):
        if _backbone(name) and 'norm' not in name:
            return mult, 1.0
        return 1.0, 0.0 if _enc_dec(name) and _norm(name) else 1.0
    return rule


def _finetune(name):  # fine-tuning configs: whole backbone x0.1, every norm wd 0
    return (0.1 if _backbone(name) else 1.0), (0.0 if _norm(name) else 1.0)


RECIPES = {
    'rtdetrv2_r18vd_4xb4-120e_coco.py': _s,
    'rtdetrv2_r18vd-demo_1xb4-12e_shapes.py': _s,
    'rtdetrv2_r34vd_4xb4-120e_coco.py': _m_star,
    'rtdetrv2_r50vd-m_4xb4-84e_coco.py': _backbone_non_norm(0.1),
    'rtdetrv2_r50vd_4xb4-72e_coco.py': _backbone_non_norm(0.1),
    'rtdetrv2_r101vd_4xb4-72e_coco.py': _backbone_non_norm(0.01),
    'rtdetrv2_r18vd_1xb8-36e_custom.py': _finetune,
    'rtdetrv2_r50vd_1xb8-36e_custom.py': _finetune,
}


# ------------------------------------------------------------- helpers
_MODELS = {}


def _model(cfg):
    """One model per architecture (names do not depend on num_classes)."""
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    model_cfg['bbox_head'] = dict(model_cfg['bbox_head'])
    model_cfg['bbox_head'].pop('num_classes', None)
    key = repr(sorted(model_cfg.items(), key=lambda kv: kv[0]))
    if key not in _MODELS:
        _MODELS[key] = MODELS.build(cfg.model)
    return _MODELS[key]


def _build(optim_wrapper_cfg, model):
    cfg = dict(optim_wrapper_cfg)
    cfg.pop('constructor', None)
    paramwise_cfg = cfg.pop('paramwise_cfg', None)
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=CONSTRUCTOR, optim_wrapper_cfg=cfg, paramwise_cfg=paramwise_cfg))
    return constructor(model)


def _groups_by_name(optimizer, model):
    """name -> list of (group index, lr, weight_decay), one entry per group
    that holds the parameter."""
    names = {id(p): n for n, p in model.named_parameters()}
    where = {}
    for index, group in enumerate(optimizer.param_groups):
        for p in group['params']:
            where.setdefault(names[id(p)], []).append(
                (index, group['lr'], group.get('weight_decay')))
    return where


def _first_match(rules, name):
    for i, rule in enumerate(rules):
        if re.search(rule['regex'], name):
            return i
    return None


def _config_ids():
    return [osp.basename(c) for c in CONFIGS]


# --------------------------------------------------- shipped configs
def test_every_shipped_config_has_a_recipe_here():
    """New configs get an official-recipe entry above (or the test below
    would not look at them)."""
    with_constructor = [osp.basename(c) for c in CONFIGS
                        if Config.fromfile(c).optim_wrapper.get('constructor') == CONSTRUCTOR]
    assert set(with_constructor) <= set(RECIPES), set(with_constructor) - set(RECIPES)
    # the size and fine-tuning configs use the regex constructor
    assert {'rtdetrv2_r18vd_4xb4-120e_coco.py', 'rtdetrv2_r50vd_4xb4-72e_coco.py',
            'rtdetrv2_r18vd_1xb8-36e_custom.py', 'rtdetrv2_r50vd_1xb8-36e_custom.py'} \
        <= set(with_constructor)


@pytest.mark.parametrize('config', CONFIGS, ids=_config_ids())
def test_config_groups_follow_its_rules_and_the_official_recipe(config):
    cfg = Config.fromfile(config)
    ow = cfg.optim_wrapper
    if ow.get('constructor') != CONSTRUCTOR:
        pytest.skip(f'{osp.basename(config)} does not use {CONSTRUCTOR}')
    rules = list(ow.paramwise_cfg['groups'])
    base_lr, base_wd = ow.optimizer.lr, ow.optimizer.weight_decay
    model = _model(cfg)
    optimizer = _build(ow, model).optimizer
    where = _groups_by_name(optimizer, model)

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # every trainable parameter in exactly one group, no frozen one anywhere
    assert set(where) == set(trainable), (set(where) ^ set(trainable))
    assert all(len(v) == 1 for v in where.values()), \
        {n: v for n, v in where.items() if len(v) != 1}
    assert not set(frozen) & set(where)

    # (1) the config's rules: same partition, lr/wd per rule
    expected_members = {}
    for name in trainable:
        expected_members.setdefault(_first_match(rules, name), set()).add(name)
    got_members = {}
    for name, [(index, lr, wd)] in where.items():
        got_members.setdefault(index, set()).add(name)
        rule = _first_match(rules, name)
        lr_mult = 1.0 if rule is None else rules[rule].get('lr_mult', 1.0)
        decay_mult = 1.0 if rule is None else rules[rule].get('decay_mult', 1.0)
        assert lr == pytest.approx(base_lr * lr_mult), (name, rule)
        assert wd == pytest.approx(base_wd * decay_mult), (name, rule)
    assert sorted(map(sorted, got_members.values())) == \
        sorted(map(sorted, expected_members.values()))
    # empty rules make no group; the non-empty ones come in rule order, default last
    order = [i for i in list(range(len(rules))) + [None] if i in expected_members]
    assert [expected_members[i] for i in order] == \
        [got_members[k] for k in sorted(got_members)]

    # (2) the official recipe for this size
    recipe = RECIPES[osp.basename(config)]
    for name, [(_, lr, wd)] in where.items():
        lr_mult, decay_mult = recipe(name)
        assert (lr, wd) == (pytest.approx(base_lr * lr_mult), pytest.approx(base_wd * decay_mult)), \
            (name, lr, wd)
    # the recipe is not vacuous on this model: several distinct (lr, wd) pairs
    assert len({(lr, wd) for [(_, lr, wd)] in where.values()}) >= 2


# ------------------------------------------------------ a hand-made module
class _Toy(nn.Module):
    """backbone: conv + norm; neck: linear + bn; bbox_head: linear, embedding."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(3, 4, 1)
        self.backbone.norm = nn.BatchNorm2d(4)
        self.backbone.stem = nn.Linear(2, 2)
        self.neck = nn.Module()
        self.neck.proj = nn.Linear(4, 4)
        self.neck.bn = nn.BatchNorm1d(4)
        self.bbox_head = nn.Module()
        self.bbox_head.fc = nn.Linear(4, 2)
        self.bbox_head.embed = nn.Embedding(3, 4)
        self.backbone.stem.requires_grad_(False)  # frozen


OPTIM = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05))


def _memberships(groups, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [sorted(names[id(p)] for p in g['params']) for g in groups]


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def current_log():
    """A fresh current MMLogger at INFO, whatever earlier tests left current."""
    logger = MMLogger.get_instance(f'param_groups_{uuid.uuid4().hex}', log_level='INFO')
    handler = _Capture()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_first_matching_rule_wins_and_frozen_parameters_stay_out():
    model = _Toy()
    rules = [dict(regex=r'^backbone\..*norm', lr_mult=0.5, decay_mult=0.0),
             dict(regex=r'^backbone\.', lr_mult=0.1),          # also matches the norm
             dict(regex=r'(norm|bn)', decay_mult=0.0),          # also matches backbone.norm
             dict(regex=r'fc\.bias$', lr_mult=3.0, decay_mult=0.5)]
    optimizer = _build(dict(OPTIM, paramwise_cfg=dict(groups=rules)), model).optimizer
    groups = optimizer.param_groups
    assert _memberships(groups, model) == [
        ['backbone.norm.bias', 'backbone.norm.weight'],
        ['backbone.conv.bias', 'backbone.conv.weight'],
        ['neck.bn.bias', 'neck.bn.weight'],
        ['bbox_head.fc.bias'],
        ['bbox_head.embed.weight', 'bbox_head.fc.weight', 'neck.proj.bias', 'neck.proj.weight'],
    ]
    # lr / weight decay typed in: base 2e-3 / 0.05
    assert [g['lr'] for g in groups] == pytest.approx([1e-3, 2e-4, 2e-3, 6e-3, 2e-3])
    assert [g['weight_decay'] for g in groups] == pytest.approx([0.0, 0.05, 0.0, 0.025, 0.05])
    # each trainable parameter once, the frozen stem nowhere
    counts = Counter(n for members in _memberships(groups, model) for n in members)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(counts) == trainable and set(counts.values()) == {1}
    assert not any(n.startswith('backbone.stem') for n in counts)


def test_optimizer_groups_are_plain_dicts_that_torch_compile_traces():
    """mmengine would leave them ConfigDicts, on which dynamo fails to trace
    AdamW.step (compile=True)."""
    rules = [dict(regex=r'(norm|bn)', decay_mult=0.0)]
    optimizer = _build(dict(OPTIM, paramwise_cfg=dict(groups=rules)), _Toy()).optimizer
    assert [type(g) for g in optimizer.param_groups] == [dict, dict]
    assert optimizer.param_groups[0]['weight_decay'] == 0.0


def test_search_not_match_semantics():
    """A rule without ``^`` matches anywhere in the name (``re.search``)."""
    model = _Toy()
    optimizer = _build(dict(OPTIM, paramwise_cfg=dict(groups=[dict(regex=r'proj', lr_mult=0.0)])),
                       model).optimizer
    assert _memberships(optimizer.param_groups, model)[0] == ['neck.proj.bias', 'neck.proj.weight']
    assert optimizer.param_groups[0]['lr'] == 0.0


def test_rule_matching_nothing_is_reported_and_makes_no_group(current_log):
    model = _Toy()
    rules = [dict(regex=r'^no_such_module\.', lr_mult=0.1),
             dict(regex=r'(norm|bn)', decay_mult=0.0),
             dict(regex=r'^backbone\.stem', lr_mult=0.5)]  # frozen parameters only
    optimizer = _build(dict(OPTIM, paramwise_cfg=dict(groups=rules)), model).optimizer
    # no empty group: the norms' group and the default group only
    assert _memberships(optimizer.param_groups, model) == [
        ['backbone.norm.bias', 'backbone.norm.weight', 'neck.bn.bias', 'neck.bn.weight'],
        ['backbone.conv.bias', 'backbone.conv.weight', 'bbox_head.embed.weight',
         'bbox_head.fc.bias', 'bbox_head.fc.weight', 'neck.proj.bias', 'neck.proj.weight']]
    # reported: one line with every rule's count (0 for the dead rule) and the default's
    lines = [r.getMessage() for r in current_log.records if r.levelno == logging.INFO]
    summary = [line for line in lines if 'no_such_module' in line]
    assert len(summary) == 1, lines
    assert f"{rules[0]['regex']!r}: 0" in summary[0]
    assert f"{rules[1]['regex']!r}: 4" in summary[0]
    assert f"{rules[2]['regex']!r}: 0" in summary[0]
    assert 'default: 7' in summary[0]
    # a regex that names no parameter (a typo?) is a warning; one whose
    # parameters are all frozen is not
    warnings = [r.getMessage() for r in current_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"regex {rules[0]['regex']!r} matches no parameter name" in warnings[0]


def test_all_rules_empty_leaves_one_default_group():
    model = _Toy()
    optimizer = _build(dict(OPTIM, paramwise_cfg=dict(groups=[dict(regex='^nothing$')])),
                       model).optimizer
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]['lr'] == pytest.approx(2e-3)
    assert optimizer.param_groups[0]['weight_decay'] == pytest.approx(0.05)
    assert len(optimizer.param_groups[0]['params']) == 11  # 13 parameters, 2 frozen


@pytest.mark.parametrize('rule', [dict(lr_mult=0.1),                       # no regex
                                  dict(regex='backbone', lr=1e-5),         # unknown key
                                  dict(regex='backbone', weight_decay=0.0)])
def test_malformed_rules_are_refused(rule):
    with pytest.raises(ValueError, match='regex'):
        _build(dict(OPTIM, paramwise_cfg=dict(groups=[rule])), _Toy())
