"""Hugging Face (transformers 5.x ``RTDetrV2ForObjectDetection``) state-dict
keys -> rtdetr_mm keys (official RT-DETRv2 naming under backbone/neck/bbox_head).

Both spellings are accepted: the Hub / ``save_pretrained`` files
(``model.encoder.encoder.*``, ``fc1``, ``out_proj``) and transformers 5's
in-memory names (``model.encoder.aifi.*``, ``mlp.fc1``, ``o_proj``).

Rules are ordered regexes applied to each key, one rule per key; q/k/v
projections are then concatenated into ``nn.MultiheadAttention``'s
``in_proj_weight``/``in_proj_bias`` (order q, k, v).
"""
import re
from typing import Dict, List, Tuple

import torch

_STAGE = r'model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)'
_BRANCH = {'0': 'a', '1': 'b', '2': 'c'}


def _layer_rules(layer: str, ours: str, final_norm: str) -> List[Tuple[str, str]]:
    """The rules of one HF transformer layer: its self-attention (q/k/v are
    merged after renaming), the attention's norm, the feed-forward and the
    last norm, which the encoder and the decoder name alike.

    Args:
        layer (str): Regex of the HF layer prefix (its groups numbered).
        ours (str): Our layer prefix, a replacement using those groups.
        final_norm (str): Our name of the layer's last norm (``norm2`` in
            the encoder, ``norm3`` in the decoder, after cross-attention).
    """
    rest = r'\.(?P<rest>.+)$'
    return [
        (layer + r'\.self_attn\.(?P<qkv>[qkv])_proj\.(?P<kind>weight|bias)$',
         ours + r'.self_attn.\g<qkv>_proj.\g<kind>'),
        (layer + r'\.self_attn\.(?:o_proj|out_proj)' + rest, ours + r'.self_attn.out_proj.\g<rest>'),
        (layer + r'\.self_attn_layer_norm' + rest, ours + r'.norm1.\g<rest>'),
        (layer + r'\.(?:mlp\.)?fc1' + rest, ours + r'.linear1.\g<rest>'),
        (layer + r'\.(?:mlp\.)?fc2' + rest, ours + r'.linear2.\g<rest>'),
        (layer + r'\.final_layer_norm' + rest, ours + f'.{final_norm}.\\g<rest>'),
    ]


# (pattern, replacement) – replacement may be a callable on the match.
RULES: List[Tuple[str, object]] = [
    # ---- backbone (PResNet)
    (r'^model\.backbone\.model\.embedder\.embedder\.(\d)\.convolution\.(.+)$',
     lambda m: f'backbone.conv1.conv1_{int(m[1]) + 1}.conv.{m[2]}'),
    (r'^model\.backbone\.model\.embedder\.embedder\.(\d)\.normalization\.(.+)$',
     lambda m: f'backbone.conv1.conv1_{int(m[1]) + 1}.norm.{m[2]}'),
    (_STAGE + r'\.layer\.(\d)\.convolution\.(.+)$',
     lambda m: f'backbone.res_layers.{m[1]}.blocks.{m[2]}.branch2{_BRANCH[m[3]]}.conv.{m[4]}'),
    (_STAGE + r'\.layer\.(\d)\.normalization\.(.+)$',
     lambda m: f'backbone.res_layers.{m[1]}.blocks.{m[2]}.branch2{_BRANCH[m[3]]}.norm.{m[4]}'),
    (_STAGE + r'\.shortcut\.1\.convolution\.(.+)$',
     r'backbone.res_layers.\1.blocks.\2.short.conv.conv.\3'),
    (_STAGE + r'\.shortcut\.1\.normalization\.(.+)$',
     r'backbone.res_layers.\1.blocks.\2.short.conv.norm.\3'),
    (_STAGE + r'\.shortcut\.convolution\.(.+)$', r'backbone.res_layers.\1.blocks.\2.short.conv.\3'),
    (_STAGE + r'\.shortcut\.normalization\.(.+)$', r'backbone.res_layers.\1.blocks.\2.short.norm.\3'),
    # ---- hybrid encoder (neck)
    (r'^model\.encoder_input_proj\.(\d+)\.0\.(.+)$', r'neck.input_proj.\1.conv.\2'),
    (r'^model\.encoder_input_proj\.(\d+)\.1\.(.+)$', r'neck.input_proj.\1.norm.\2'),
    *_layer_rules(r'^model\.encoder\.(?:aifi|encoder)\.(\d+)\.layers\.(\d+)',
                  r'neck.encoder.\1.layers.\2', final_norm='norm2'),
    (r'^model\.encoder\.((?:lateral_convs|fpn_blocks|downsample_convs|pan_blocks)\..+)$',
     r'neck.\1'),
    # ---- decoder (head)
    (r'^model\.decoder_input_proj\.(\d+)\.0\.(.+)$', r'bbox_head.input_proj.\1.conv.\2'),
    (r'^model\.decoder_input_proj\.(\d+)\.1\.(.+)$', r'bbox_head.input_proj.\1.norm.\2'),
    *_layer_rules(r'^model\.decoder\.layers\.(\d+)', r'bbox_head.decoder.layers.\1',
                  final_norm='norm3'),
    (r'^model\.decoder\.layers\.(\d+)\.encoder_attn\.n_points_scale$',
     r'bbox_head.decoder.layers.\1.cross_attn.num_points_scale'),
    (r'^model\.decoder\.layers\.(\d+)\.encoder_attn\.'
     r'(sampling_offsets|attention_weights|value_proj|output_proj)\.(.+)$',
     r'bbox_head.decoder.layers.\1.cross_attn.\2.\3'),
    (r'^model\.decoder\.layers\.(\d+)\.encoder_attn_layer_norm\.(.+)$',
     r'bbox_head.decoder.layers.\1.norm2.\2'),
    (r'^model\.decoder\.query_pos_head\.(.+)$', r'bbox_head.query_pos_head.\1'),
    (r'^(?:model\.decoder\.)?class_embed\.(\d+)\.(.+)$', r'bbox_head.dec_score_head.\1.\2'),
    (r'^(?:model\.decoder\.)?bbox_embed\.(\d+)\.(.+)$', r'bbox_head.dec_bbox_head.\1.\2'),
    (r'^model\.denoising_class_embed\.(.+)$', r'bbox_head.denoising_class_embed.\1'),
    (r'^model\.enc_output\.0\.(.+)$', r'bbox_head.enc_output.proj.\1'),
    (r'^model\.enc_output\.1\.(.+)$', r'bbox_head.enc_output.norm.\1'),
    (r'^model\.enc_score_head\.(.+)$', r'bbox_head.enc_score_head.\1'),
    (r'^model\.enc_bbox_head\.(.+)$', r'bbox_head.enc_bbox_head.\1'),
]
_COMPILED = [(re.compile(p), r) for p, r in RULES]
# Buffers HF stores that our model regenerates for any input size.
IGNORED = [re.compile(p) for p in (r'^model\.anchors$', r'^model\.valid_mask$')]
_QKV = re.compile(r'^(.*\.self_attn)\.([qkv])_proj\.(weight|bias)$')


def map_key(key: str):
    """Our name for one HF key, or None if no rule applies."""
    for pattern, replacement in _COMPILED:
        m = pattern.match(key)
        if m:
            return replacement(m) if callable(replacement) else m.expand(replacement)
    return None


def convert_hf_state_dict(hf_sd: Dict[str, torch.Tensor]
                          ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a transformers RT-DETRv2 state dict to rtdetr_mm's names.

    Returns:
        tuple: (converted state dict, HF keys no rule knows). Aliased heads
        (``class_embed.i`` and ``model.decoder.class_embed.i``) must agree.
    """
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    qkv: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    for key, value in hf_sd.items():
        if any(p.match(key) for p in IGNORED):
            continue
        new = map_key(key)
        if new is None:
            unmapped.append(key)
            continue
        m = _QKV.match(new)
        if m:
            qkv.setdefault((m[1], m[3]), {})[m[2]] = value
            continue
        if new in out and not torch.equal(out[new], value):
            raise ValueError(f'{key} and another alias of {new} hold different tensors')
        out[new] = value
    for (prefix, kind), parts in qkv.items():
        if set(parts) != {'q', 'k', 'v'}:
            unmapped.extend(f'{prefix}.{p}_proj.{kind}' for p in parts)
            continue
        out[f'{prefix}.in_proj_{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']], 0)
    return out, unmapped
