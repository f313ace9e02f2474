"""Regex parameter groups, as the official RT-DETRv2 optimizer configs."""
import logging
import re
from typing import List, Optional

import torch.nn as nn
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.logging import print_log


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RTDETRv2OptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Build parameter groups from ordered regex rules; the first rule that
    matches a parameter name wins, unmatched parameters use the base lr/wd.

    ``paramwise_cfg=dict(groups=[dict(regex=r'^backbone\\.(?!.*norm)', lr_mult=0.1),
    dict(regex=r'^(neck|bbox_head)\\..*norm', decay_mult=0.0)])`` reproduces
    the official L recipe (backbone non-norm lr 1e-5, encoder/decoder norms
    without weight decay). Multipliers are relative to
    ``optim_wrapper.optimizer.lr`` / ``weight_decay``, so changing the base
    values keeps the groups' ratios.

    NOTE: mmengine's ``custom_keys`` (substring match, longest key first,
    norm/bias rules skipped for matched keys) cannot express "backbone norms:
    lr x 0.5 and no decay" of the official r34 recipe, hence regex rules.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.group_rules = []
        for rule in self.paramwise_cfg.get('groups', []):
            unknown = set(rule) - {'regex', 'lr_mult', 'decay_mult'}
            if 'regex' not in rule or unknown:
                raise ValueError('optim_wrapper.paramwise_cfg.groups entries take regex, '
                                 f'lr_mult and decay_mult; got {dict(rule)}')
            self.group_rules.append(dict(rule, pattern=re.compile(rule['regex'])))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """mmengine's construction, with the optimizer's parameter groups as
        plain dicts.

        NOTE: mmengine hands the group list to the optimizer through a
        ``ConfigDict``, which turns every group into a ``ConfigDict``;
        ``torch.compile`` cannot trace an optimizer step over such groups
        (mmengine's ``compile=True`` then fails in dynamo), so the groups are
        turned back into dicts (same keys, same parameter objects).
        """
        optim_wrapper = super().__call__(model)
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        """Append one parameter group per rule plus one default group."""
        groups = [{'params': []} for _ in range(len(self.group_rules) + 1)]
        for i, rule in enumerate(self.group_rules):
            groups[i]['lr'] = self.base_lr * rule.get('lr_mult', 1.0)
            if self.base_wd is not None:
                groups[i]['weight_decay'] = self.base_wd * rule.get('decay_mult', 1.0)
        named_anything = [False] * len(self.group_rules)
        for name, param in module.named_parameters():
            index = next((i for i, rule in enumerate(self.group_rules)
                          if rule['pattern'].search(name)), len(self.group_rules))
            if index < len(self.group_rules):
                named_anything[index] = True
            if param.requires_grad:
                groups[index]['params'].append(param)
        summary = ', '.join(f"{rule['regex']!r}: {len(g['params'])}"
                            for rule, g in zip(self.group_rules, groups))
        print_log(f'RTDETRv2 parameter groups: {summary}, default: {len(groups[-1]["params"])}',
                  logger='current')
        # a rule whose parameters are all frozen is fine; one that names no
        # parameter at all is most likely a typo
        for rule, hit in zip(self.group_rules, named_anything):
            if not hit:
                print_log(f"optim_wrapper.paramwise_cfg.groups: regex {rule['regex']!r} matches "
                          'no parameter name of the model (before an earlier rule takes it); '
                          'its parameters, if any, train with the base lr / weight decay',
                          logger='current', level=logging.WARNING)
        params.extend(g for g in groups if g['params'])
