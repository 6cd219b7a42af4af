"""Meta's ``sam3.pt`` -> the Hugging Face layout that ``load_sam3`` reads, converted once and cached.

Meta publishes SAM3 as one PyTorch checkpoint (``sam3.pt``, 3.45 GB, float32): the state dict of
``Sam3VideoInferenceWithInstanceInteractivity`` with keys ``detector.*`` (image model) and
``tracker.*`` (SAM2-style tracker). transformers' ``Sam3VideoModel`` holds the same weights under
other names and a few other shapes. ``RULES`` below says, per Meta key prefix, where the tensor
goes and how it changes:

* renames (``blocks.N`` -> ``layers.N``, ``sam2_convs`` -> ``tracker_neck``, ``transformer.encoder``
  -> ``detr_encoder`` or ``memory_attention``, ...);
* fused attention projections (ViT ``qkv``, ``nn.MultiheadAttention``'s ``in_proj_*``) split into
  ``q_proj`` / ``k_proj`` / ``v_proj``;
* the ViT position embedding loses its CLS slot (577 -> 576 positions), CLIP's
  ``text_projection`` is stored transposed, the four SAM point embeddings become one matrix and
  the random-Fourier matrix of the prompt encoder is shared by two modules;
* dropped: precomputed RoPE tables (``freqs_cis``; transformers computes them) and the
  geometry encoder's point projections (transformers' detector takes boxes only).

The rules are written as prefix pairs, so they run both ways: ``meta_to_hf`` converts, and
``hf_to_meta`` (used by the tests to write the tiny model in Meta's layout) inverts.

Conversion streams: the source is memory-mapped (``torch.load(mmap=True)``) and the output is
written in safetensors shards of ``shard_bytes``, so memory holds one shard, not two copies of
the model. Everything is written to a temporary directory and renamed into place at the end; a
lock serialises concurrent workers converting the same file. Cached conversions live in
``<cache_root>/<sha256 of the source>.v<FORMAT_VERSION>/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger

if TYPE_CHECKING:
    import torch
    from transformers import Sam3VideoConfig

FORMAT_VERSION = 1  # bump when the conversion's output changes: old caches are then rebuilt
MANIFEST_FILE = "conversion.json"
CONFIG_KEY = "sam3_video_config"  # optional entry of a Meta-layout file: the transformers config it needs
DEFAULT_SHARD_BYTES = 1 << 30
_HASH_CACHE_FILE = "sha256-cache.json"
_HASH_CHUNK = 8 << 20

Op = Literal["rename", "split3", "transpose", "drop_cls", "drop", "part", "copy"]


class CheckpointError(ValueError):
    """The file is not a checkpoint we can convert; the message says what was found."""


# --------------------------------------------------------------------------- the key table


@dataclass(frozen=True)
class Rule:
    """Meta prefix -> transformers prefix(es); ``{n}`` stands for a layer index.

    A prefix ending in ``.`` or ``_`` matches any key that starts with it and keeps the rest of
    the key; any other prefix is a whole key. ``op`` says what happens to the tensor:
    ``split3`` -> three targets (q, k, v rows), ``copy`` -> the same tensor under every target,
    ``part`` -> row ``{n}`` of one target, ``drop`` -> no target (recomputed or unused).
    """

    meta: str
    hf: tuple[str, ...] = ()
    op: Op = "rename"
    invertible: bool = True  # False: another rule names the same target and is the inverse's choice


def _r(meta: str, hf: str, op: Op = "rename") -> Rule:
    return Rule(meta, (hf,), op)


def _fused(meta: str, hf: str) -> Rule:
    return Rule(meta, (f"{hf}q_proj.", f"{hf}k_proj.", f"{hf}v_proj."), "split3")


def _mha(meta: str, hf: str, out: str = "o_proj.") -> list[Rule]:
    """``nn.MultiheadAttention``: fused ``in_proj_weight/bias`` + ``out_proj``."""
    return [_fused(f"{meta}in_proj_", hf), _r(f"{meta}out_proj.", f"{hf}{out}")]


def _sam_attention(meta: str, hf: str) -> list[Rule]:
    """SAM-style attention: separate q/k/v projections already; only ``out_proj`` is renamed."""
    return [_r(meta, hf), _r(f"{meta}out_proj.", f"{hf}o_proj.")]


def _mlp3(meta: str, hf: str) -> list[Rule]:
    """Meta's 3-layer ``MLP.layers.{0,1,2}`` -> SAM2-style ``proj_in``, ``layers.0``, ``proj_out``."""
    return [_r(f"{meta}layers.0.", f"{hf}proj_in."), _r(f"{meta}layers.1.", f"{hf}layers.0."),
            _r(f"{meta}layers.2.", f"{hf}proj_out.")]


def _numbered(meta: str, hf: str, count: int) -> list[Rule]:
    """Meta's ``MLP.layers.{i}`` -> DETR-style ``layer{i+1}``."""
    return [_r(f"{meta}layers.{i}.", f"{hf}layer{i + 1}.") for i in range(count)]


def _encoder_layer(meta: str, hf: str) -> list[Rule]:
    """Meta's ``TransformerEncoderLayer`` (geometry encoder, DETR encoder)."""
    return [
        *_mha(f"{meta}self_attn.", f"{hf}self_attn."),
        *_mha(f"{meta}cross_attn_image.", f"{hf}cross_attn."),
        _r(f"{meta}linear1.", f"{hf}mlp.fc1."), _r(f"{meta}linear2.", f"{hf}mlp.fc2."),
        _r(f"{meta}norm1.", f"{hf}layer_norm1."), _r(f"{meta}norm2.", f"{hf}layer_norm2."),
        _r(f"{meta}norm3.", f"{hf}layer_norm3."),
    ]


def _fpn(meta: str, hf: str) -> list[Rule]:
    # The 4x level upsamples with two transposed convs (dconv_2x2_0/_1), the 2x level with one
    # (dconv_2x2): both first ones are scale_layers.0; ``hf_to_meta`` tells them apart by the second.
    return [
        _r(f"{meta}dconv_2x2_0.", f"{hf}scale_layers.0."), _r(f"{meta}dconv_2x2_1.", f"{hf}scale_layers.2."),
        Rule(f"{meta}dconv_2x2.", (f"{hf}scale_layers.0.",), invertible=False),
        _r(f"{meta}conv_1x1.", f"{hf}proj1."), _r(f"{meta}conv_3x3.", f"{hf}proj2."),
    ]


def _build_rules() -> list[Rule]:
    vit, hvit = "detector.backbone.vision_backbone.trunk.", "detector_model.vision_encoder.backbone."
    text, htext = "detector.backbone.language_backbone.encoder.", "detector_model.text_encoder."
    block, hblock = f"{text}transformer.resblocks.{{n}}.", f"{htext}text_model.encoder.layers.{{n}}."
    geo, hgeo = "detector.geometry_encoder.", "detector_model.geometry_encoder."
    dec, hdec = "detector.transformer.decoder.", "detector_model.detr_decoder."
    dlayer, hdlayer = f"{dec}layers.{{n}}.", f"{hdec}layers.{{n}}."
    seg, hseg = "detector.segmentation_head.", "detector_model.mask_decoder."
    dot, hdot = "detector.dot_prod_scoring.", "detector_model.dot_product_scoring."
    mem, hmem = "tracker.transformer.encoder.", "tracker_model.memory_attention."
    enc, henc = "tracker.maskmem_backbone.", "tracker_model.memory_encoder."
    fuser, hfuser = f"{enc}fuser.layers.{{n}}.", f"{henc}memory_fuser.layers.{{n}}."
    prompt, hprompt = "tracker.sam_prompt_encoder.", "tracker_model.prompt_encoder."
    sam, hsam = "tracker.sam_mask_decoder.", "tracker_model.mask_decoder."
    two, htwo = f"{sam}transformer.layers.{{n}}.", f"{hsam}transformer.layers.{{n}}."
    return [
        # --- detector: ViT backbone
        _r(f"{vit}pos_embed", f"{hvit}embeddings.position_embeddings", "drop_cls"),
        _r(f"{vit}patch_embed.proj.", f"{hvit}embeddings.patch_embeddings.projection."),
        _r(f"{vit}ln_pre.", f"{hvit}layer_norm."),
        _r(f"{vit}blocks.{{n}}.norm1.", f"{hvit}layers.{{n}}.layer_norm1."),
        _r(f"{vit}blocks.{{n}}.norm2.", f"{hvit}layers.{{n}}.layer_norm2."),
        _fused(f"{vit}blocks.{{n}}.attn.qkv.", f"{hvit}layers.{{n}}.attention."),
        _r(f"{vit}blocks.{{n}}.attn.proj.", f"{hvit}layers.{{n}}.attention.o_proj."),
        Rule(f"{vit}blocks.{{n}}.attn.freqs_cis", op="drop"),  # RoPE table, recomputed by transformers
        _r(f"{vit}blocks.{{n}}.mlp.", f"{hvit}layers.{{n}}.mlp."),
        # --- detector: FPN necks (the SAM2-style one feeds the tracker)
        *_fpn("detector.backbone.vision_backbone.convs.{n}.", "detector_model.vision_encoder.neck.fpn_layers.{n}."),
        *_fpn("detector.backbone.vision_backbone.sam2_convs.{n}.", "tracker_neck.fpn_layers.{n}."),
        # --- detector: CLIP text encoder
        _r(f"{text}token_embedding.", f"{htext}text_model.embeddings.token_embedding."),
        _r(f"{text}positional_embedding", f"{htext}text_model.embeddings.position_embedding.weight"),
        _r(f"{text}ln_final.", f"{htext}text_model.final_layer_norm."),
        _r(f"{text}text_projection", f"{htext}text_projection.weight", "transpose"),
        *_mha(f"{block}attn.", f"{hblock}self_attn.", out="out_proj."),
        _r(f"{block}ln_1.", f"{hblock}layer_norm1."), _r(f"{block}ln_2.", f"{hblock}layer_norm2."),
        _r(f"{block}mlp.c_fc.", f"{hblock}mlp.fc1."), _r(f"{block}mlp.c_proj.", f"{hblock}mlp.fc2."),
        _r("detector.backbone.language_backbone.resizer.", "detector_model.text_projection."),
        # --- detector: geometry (exemplar box) encoder
        _r(geo, hgeo),  # label_embed, cls_embed, boxes_*, final_proj
        *_encoder_layer(f"{geo}encode.{{n}}.", f"{hgeo}layers.{{n}}."),
        _r(f"{geo}img_pre_norm.", f"{hgeo}vision_layer_norm."),
        _r(f"{geo}norm.", f"{hgeo}prompt_layer_norm."),
        _r(f"{geo}encode_norm.", f"{hgeo}output_layer_norm."),
        *(Rule(f"{geo}points_{name}.", op="drop") for name in ("direct_project", "pool_project", "pos_enc_project")),
        # --- detector: DETR encoder and decoder
        *_encoder_layer("detector.transformer.encoder.layers.{n}.", "detector_model.detr_encoder.layers.{n}."),
        _r(dec, hdec),  # query_embed, reference_points, presence_token
        *_mha(f"{dlayer}self_attn.", f"{hdlayer}self_attn."),
        *_mha(f"{dlayer}ca_text.", f"{hdlayer}text_cross_attn."),
        *_mha(f"{dlayer}cross_attn.", f"{hdlayer}vision_cross_attn."),
        _r(f"{dlayer}linear1.", f"{hdlayer}mlp.fc1."), _r(f"{dlayer}linear2.", f"{hdlayer}mlp.fc2."),
        _r(f"{dlayer}norm1.", f"{hdlayer}vision_cross_attn_layer_norm."),
        _r(f"{dlayer}catext_norm.", f"{hdlayer}text_cross_attn_layer_norm."),
        _r(f"{dlayer}norm2.", f"{hdlayer}self_attn_layer_norm."),
        _r(f"{dlayer}norm3.", f"{hdlayer}mlp_layer_norm."),
        _r(f"{dec}norm.", f"{hdec}output_layer_norm."),
        _r(f"{dec}presence_token_out_norm.", f"{hdec}presence_layer_norm."),
        *_numbered(f"{dec}bbox_embed.", f"{hdec}box_head.", 3),
        *_numbered(f"{dec}presence_token_head.", f"{hdec}presence_head.", 3),
        *_numbered(f"{dec}ref_point_head.", f"{hdec}ref_point_head.", 2),
        *_numbered(f"{dec}boxRPB_embed_x.", f"{hdec}box_rpb_embed_x.", 2),
        *_numbered(f"{dec}boxRPB_embed_y.", f"{hdec}box_rpb_embed_y.", 2),
        # --- detector: mask decoder and scoring
        _r(f"{seg}pixel_decoder.", f"{hseg}pixel_decoder."),
        _r(f"{seg}mask_predictor.mask_embed.", f"{hseg}mask_embedder."),
        _r(f"{seg}instance_seg_head.", f"{hseg}instance_projection."),
        _r(f"{seg}semantic_seg_head.", f"{hseg}semantic_projection."),
        *_mha(f"{seg}cross_attend_prompt.", f"{hseg}prompt_cross_attn."),
        _r(f"{seg}cross_attn_norm.", f"{hseg}prompt_cross_attn_norm."),
        *_numbered(f"{dot}prompt_mlp.", f"{hdot}text_mlp.", 2),
        _r(f"{dot}prompt_mlp.out_norm.", f"{hdot}text_mlp_out_norm."),
        _r(f"{dot}prompt_proj.", f"{hdot}text_proj."),
        _r(f"{dot}hs_proj.", f"{hdot}query_proj."),
        # --- tracker: memory bank parameters
        _r("tracker.maskmem_tpos_enc", "tracker_model.memory_temporal_positional_encoding"),
        _r("tracker.no_mem_embed", "tracker_model.no_memory_embedding"),
        _r("tracker.no_mem_pos_enc", "tracker_model.no_memory_positional_encoding"),
        _r("tracker.no_obj_ptr", "tracker_model.no_object_pointer"),
        _r("tracker.no_obj_embed_spatial", "tracker_model.occlusion_spatial_embedding_parameter"),
        _r("tracker.mask_downsample.", "tracker_model.mask_downsample."),
        _r("tracker.obj_ptr_tpos_proj.", "tracker_model.temporal_positional_encoding_projection_layer."),
        *_mlp3("tracker.obj_ptr_proj.", "tracker_model.object_pointer_proj."),
        # --- tracker: memory attention
        *_sam_attention(f"{mem}layers.{{n}}.self_attn.", f"{hmem}layers.{{n}}.self_attn."),
        *_sam_attention(f"{mem}layers.{{n}}.cross_attn_image.", f"{hmem}layers.{{n}}.cross_attn_image."),
        _r(f"{mem}layers.{{n}}.linear1.", f"{hmem}layers.{{n}}.linear1."),
        _r(f"{mem}layers.{{n}}.linear2.", f"{hmem}layers.{{n}}.linear2."),
        *(_r(f"{mem}layers.{{n}}.norm{i}.", f"{hmem}layers.{{n}}.layer_norm{i}.") for i in (1, 2, 3)),
        _r(f"{mem}norm.", f"{hmem}layer_norm."),
        # --- tracker: memory encoder (mask downsampler: conv, norm, act per stage, then a 1x1 conv)
        *(_r(f"{enc}mask_downsampler.encoder.{3 * i}.", f"{henc}mask_downsampler.layers.{i}.conv.") for i in range(4)),
        *(_r(f"{enc}mask_downsampler.encoder.{3 * i + 1}.", f"{henc}mask_downsampler.layers.{i}.layer_norm.")
          for i in range(4)),
        _r(f"{enc}mask_downsampler.encoder.12.", f"{henc}mask_downsampler.final_conv."),
        _r(f"{enc}pix_feat_proj.", f"{henc}feature_projection."),
        _r(f"{fuser}gamma", f"{hfuser}scale"),
        _r(f"{fuser}dwconv.", f"{hfuser}depthwise_conv."),
        _r(f"{fuser}norm.", f"{hfuser}layer_norm."),
        _r(f"{fuser}pwconv1.", f"{hfuser}pointwise_conv1."),
        _r(f"{fuser}pwconv2.", f"{hfuser}pointwise_conv2."),
        _r(f"{enc}out_proj.", f"{henc}projection."),
        # --- tracker: SAM prompt encoder
        Rule(f"{prompt}pe_layer.positional_encoding_gaussian_matrix",
             (f"{hprompt}shared_embedding.positional_embedding", "tracker_model.shared_image_embedding.positional_embedding"),
             "copy"),
        _r(f"{prompt}point_embeddings.{{n}}.", f"{hprompt}point_embed.", "part"),
        _r(f"{prompt}not_a_point_embed.", f"{hprompt}not_a_point_embed."),
        _r(f"{prompt}no_mask_embed.", f"{hprompt}no_mask_embed."),
        *(_r(f"{prompt}mask_downscaling.{i}.", f"{hprompt}mask_embed.{name}.")
          for i, name in ((0, "conv1"), (1, "layer_norm1"), (3, "conv2"), (4, "layer_norm2"), (6, "conv3"))),
        # --- tracker: SAM mask decoder
        _r(sam, hsam),  # iou_token, mask_tokens, obj_score_token, conv_s0, conv_s1
        *(rule for name in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token")
          for rule in _sam_attention(f"{two}{name}.", f"{htwo}{name}.")),
        *(_r(f"{two}norm{i}.", f"{htwo}layer_norm{i}.") for i in (1, 2, 3, 4)),
        _r(f"{two}mlp.lin1.", f"{htwo}mlp.proj_in."), _r(f"{two}mlp.lin2.", f"{htwo}mlp.proj_out."),
        *_sam_attention(f"{sam}transformer.final_attn_token_to_image.", f"{hsam}transformer.final_attn_token_to_image."),
        _r(f"{sam}transformer.norm_final_attn.", f"{hsam}transformer.layer_norm_final_attn."),
        *(_r(f"{sam}output_upscaling.{i}.", f"{hsam}{name}.")
          for i, name in ((0, "upscale_conv1"), (1, "upscale_layer_norm"), (3, "upscale_conv2"))),
        *_mlp3(f"{sam}output_hypernetworks_mlps.{{n}}.", f"{hsam}output_hypernetworks_mlps.{{n}}."),
        *_mlp3(f"{sam}iou_prediction_head.", f"{hsam}iou_prediction_head."),
        *_mlp3(f"{sam}pred_obj_score_head.", f"{hsam}pred_obj_score_head."),
    ]


RULES = _build_rules()


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template).replace(re.escape("{n}"), r"(?P<n>\d+)")
    return re.compile(body if template.endswith((".", "_")) else body + "$")


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    meta: re.Pattern[str]
    hf: tuple[re.Pattern[str], ...]


_COMPILED = [_Compiled(rule, _pattern(rule.meta), tuple(_pattern(h) for h in rule.hf)) for rule in RULES]
_INVERTIBLE = [compiled for compiled in _COMPILED if compiled.rule.invertible]


@dataclass(frozen=True)
class Target:
    """Where one Meta tensor goes: ``keys`` (one, or q/k/v for split3, or all copies) and ``op``."""

    keys: tuple[str, ...]
    op: Op
    index: int | None = None  # the row, for ``part``


def meta_to_hf(key: str) -> Target | None:
    """The transformers key(s) for Meta key ``key``; None when no rule knows it."""
    best: tuple[int, _Compiled, re.Match[str]] | None = None
    for compiled in _COMPILED:
        match = compiled.meta.match(key)
        if match and (best is None or len(compiled.rule.meta) > best[0]):
            best = (len(compiled.rule.meta), compiled, match)
    if best is None:
        return None
    _, compiled, match = best
    n = match.groupdict().get("n")
    rest = key[match.end():]
    keys = tuple(h.replace("{n}", n or "") + rest for h in compiled.rule.hf)
    # For ``part`` the index picks the row of the one target (whose name has no {n}).
    index = int(n) if compiled.rule.op == "part" and n is not None else None
    return Target(keys, compiled.rule.op, index)


def hf_to_meta(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse: a transformers ``Sam3VideoModel`` state dict in Meta's layout.

    Dropped tensors are absent (Meta's files have them; the converter ignores them). Renamed
    tensors are the same objects as in ``state`` (``torch.save`` keeps shared storage). Used to
    write test and benchmark checkpoints in Meta's layout.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        best: tuple[int, _Compiled, int, re.Match[str]] | None = None
        for compiled in _INVERTIBLE:
            for position, pattern in enumerate(compiled.hf):
                match = pattern.match(key)
                if match and (best is None or len(compiled.rule.hf[position]) > best[0]):
                    best = (len(compiled.rule.hf[position]), compiled, position, match)
        if best is None:
            raise KeyError(f"no rule produces {key}")
        _, compiled, position, match = best
        rule, rest = compiled.rule, key[match.end():]
        meta_key = rule.meta.replace("{n}", match.groupdict().get("n") or "") + rest
        if rule.op == "rename":
            out[meta_key] = tensor
        elif rule.op == "transpose":
            out[meta_key] = tensor.T.contiguous()
        elif rule.op == "drop_cls":  # Meta keeps an (unused) CLS slot first
            out[meta_key] = torch.cat([torch.zeros_like(tensor[:, :1]), tensor], dim=1)
        elif rule.op == "copy":
            if position == 0:
                out[meta_key] = tensor
        elif rule.op == "split3":
            if position == 0:
                parts = [state[_sibling(key, match, h)] for h in rule.hf]
                out[meta_key] = torch.cat(parts, dim=0)
        elif rule.op == "part":
            for row in range(tensor.shape[0]):
                out[rule.meta.replace("{n}", str(row)) + rest] = tensor[row : row + 1]
    for key in [k for k in out if ".dconv_2x2_0." in k]:  # a level with one transposed conv: Meta's dconv_2x2
        if not any(k.startswith(key.split(".dconv_2x2_0.")[0] + ".dconv_2x2_1.") for k in out):
            out[key.replace(".dconv_2x2_0.", ".dconv_2x2.")] = out.pop(key)
    return out


def _sibling(key: str, match: re.Match[str], template: str) -> str:
    """``key`` with the part ``match`` covered replaced by ``template`` (same layer index)."""
    return template.replace("{n}", match.groupdict().get("n") or "") + key[match.end():]


# --------------------------------------------------------------------------- reading a checkpoint


def sniff(path: Path) -> str:
    """'torch' for a PyTorch checkpoint (zip or legacy pickle), 'safetensors', else 'unknown'."""
    with path.open("rb") as file:
        head = file.read(16)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def load_meta_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(state dict, embedded transformers config or None), memory-mapped where possible."""
    import pickle

    import torch

    try:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be mapped
            if "mmap" not in str(exc):
                raise
            logger.warning("{} is not in the zip format: loading it whole (no memory map)", path)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {str(exc).strip().splitlines()[0][:200]}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict")
    config = raw.get(CONFIG_KEY) if isinstance(raw.get(CONFIG_KEY), dict) else None
    state = raw["model"] if isinstance(raw.get("model"), dict) else raw
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors (top-level entries: {', '.join(sorted(map(str, raw))[:8])})")
    return tensors, config


def identify(path: Path, keys: list[str]) -> None:
    """Raise ``CheckpointError`` unless ``keys`` look like Meta's SAM 3 release (sam3.pt)."""
    supported = (
        "supported: Meta's SAM 3 checkpoint (sam3.pt of the facebook/sam3 release, keys detector.* and tracker.*)"
        " or a Hugging Face-layout directory (config.json + model.safetensors)"
    )
    if any(k.startswith("tracker.model.") or "multiplex" in k for k in keys):
        raise CheckpointError(
            f"{path} is a SAM 3.1 multiplex checkpoint ({len(keys)} tensors, tracker keys under tracker.model.*):"
            f" transformers has no SAM 3.1 model yet, so this server cannot run it; {supported}"
        )
    prefixes = sorted({k.split(".", 1)[0] for k in keys})
    if not ({"detector", "tracker"} <= set(prefixes)):
        raise CheckpointError(
            f"{path} is not a SAM 3 checkpoint: its {len(keys)} tensors are under {', '.join(prefixes[:6])}"
            f" (e.g. {keys[0]}); {supported}"
        )


# --------------------------------------------------------------------------- planning the output


@dataclass
class _Output:
    """One tensor to write: made from ``sources`` by ``op`` only when its shard is written."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    op: Op
    sources: tuple[torch.Tensor, ...]
    chunk: int = 0  # split3: which third of the fused rows

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * self.dtype.itemsize

    def build(self) -> torch.Tensor:
        import torch

        source = self.sources[0]
        if self.op == "split3":  # clones: safetensors refuses tensors that share storage
            rows = source.shape[0] // 3
            return source[self.chunk * rows : (self.chunk + 1) * rows].clone()
        if self.op == "copy":
            return source.clone()
        if self.op == "transpose":
            return source.T.contiguous()
        if self.op == "drop_cls" and self.shape != tuple(source.shape):
            return source[:, 1:].contiguous()
        if self.op == "part":
            return torch.cat(self.sources, dim=0)
        return source


@dataclass
class Plan:
    outputs: list[_Output]
    dropped: list[str]
    unknown: list[str]


def _drop_cls_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Meta's ViT position embedding has a CLS slot before the square grid; transformers' has not."""
    side = int((shape[1] - 1) ** 0.5)
    return (shape[0], shape[1] - 1, *shape[2:]) if side * side + 1 == shape[1] else shape


def plan_conversion(state: Mapping[str, torch.Tensor]) -> Plan:
    """What to write, without reading any tensor data (shapes come from the file's metadata)."""
    plan = Plan([], [], [])
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state.items():
        target = meta_to_hf(key)
        shape = tuple(tensor.shape)
        if target is None:
            plan.unknown.append(key)
        elif target.op == "drop":
            plan.dropped.append(key)
        elif target.op == "part":
            parts.setdefault(target.keys[0], {})[target.index or 0] = tensor
        elif target.op == "split3":
            plan.outputs.extend(
                _Output(name, (shape[0] // 3, *shape[1:]), tensor.dtype, "split3", (tensor,), chunk)
                for chunk, name in enumerate(target.keys)
            )
        else:
            shape = shape[::-1] if target.op == "transpose" else _drop_cls_shape(shape) if target.op == "drop_cls" else shape
            plan.outputs.extend(_Output(name, shape, tensor.dtype, target.op, (tensor,)) for name in target.keys)
    for name, by_row in parts.items():
        ordered = tuple(by_row[i] for i in sorted(by_row))
        shape = (sum(t.shape[0] for t in ordered), *ordered[0].shape[1:])
        plan.outputs.append(_Output(name, shape, ordered[0].dtype, "part", ordered))
    return plan


def expected_state_shapes(config: Sam3VideoConfig) -> dict[str, tuple[int, ...]]:
    """Every key ``Sam3VideoModel(config).state_dict()`` has, with its shape (built on the meta device)."""
    import torch
    from transformers import Sam3VideoModel

    with torch.device("meta"):
        model = Sam3VideoModel(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_plan(plan: Plan, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Strict: every Meta key understood, every model key filled, every shape equal."""
    produced = {o.name: o.shape for o in plan.outputs}
    problems = []
    if plan.unknown:
        problems.append(_listing("unknown keys in the checkpoint", plan.unknown))
    missing = sorted(set(expected) - set(produced))
    if missing:
        problems.append(_listing("model keys the checkpoint does not fill", missing))
    unexpected = sorted(set(produced) - set(expected))
    if unexpected:
        problems.append(_listing("converted keys the model does not have", unexpected))
    mismatched = sorted(f"{k} {produced[k]} vs {expected[k]}" for k in set(produced) & set(expected) if produced[k] != expected[k])
    if mismatched:
        problems.append(_listing("shape mismatches (checkpoint vs model)", mismatched))
    if problems:
        for problem in problems:
            logger.error("Checkpoint conversion: {}", problem)
        raise CheckpointError("; ".join(p if len(p) < 600 else p[:600] + " ..." for p in problems))


def _listing(what: str, keys: list[str]) -> str:
    return f"{len(keys)} {what}: {', '.join(keys)}"


# --------------------------------------------------------------------------- writing


def published_config() -> Sam3VideoConfig:
    """transformers' defaults are the published facebook/sam3 architecture (1008 px, ViT-L/14 x 32)."""
    from transformers import Sam3VideoConfig

    config = Sam3VideoConfig()
    config.architectures = ["Sam3VideoModel"]
    return config


def _config_from(raw: dict[str, Any] | None) -> Sam3VideoConfig:
    from transformers import Sam3VideoConfig

    if raw is None:
        return published_config()
    try:
        return Sam3VideoConfig.from_dict(raw)
    except Exception as exc:  # transformers validates configs with several exception types
        raise CheckpointError(f"the checkpoint's embedded {CONFIG_KEY} is not a valid Sam3VideoConfig: {exc}") from exc


def _write_processor_files(directory: Path, image_size: int) -> None:
    """SAM3's preprocessing (the contract: square resize, mean = std = 0.5, masks at 288 px)."""
    from transformers import Sam3ImageProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    Sam3ImageProcessor(size=size).save_pretrained(directory)
    Sam2VideoVideoProcessor(size=size, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(directory)


def _write_shards(outputs: list[_Output], directory: Path, shard_bytes: int, label: str) -> None:
    from safetensors.torch import save_file

    shards: list[list[_Output]] = [[]]
    size = 0
    for output in outputs:
        if shards[-1] and size + output.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(output)
        size += output.nbytes
    total = sum(o.nbytes for o in outputs)
    names = (
        ["model.safetensors"] if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    written = 0
    weight_map: dict[str, str] = {}
    for shard, name in zip(shards, names, strict=True):
        tensors = {o.name: o.build() for o in shard}
        save_file(tensors, str(directory / name), metadata={"format": "pt"})
        del tensors
        written += sum(o.nbytes for o in shard)
        weight_map.update({o.name: name for o in shard})
        logger.info("Converting {}: wrote {} ({:.0f}%, {:.2f} of {:.2f} GB)", label, name, 100 * written / total,
                    written / 1e9, total / 1e9)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


@dataclass
class ConversionResult:
    directory: Path
    sha256: str
    tensors: int
    dropped: list[str] = field(default_factory=list)


def convert_meta_checkpoint(
    source: Path, destination: Path, *, sha256: str | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES
) -> ConversionResult:
    """Convert Meta's ``source`` into a new Hugging Face-layout directory ``destination``.

    Written next to ``destination`` under a temporary name and renamed at the end, so
    ``destination`` either does not exist or is complete. Raises ``CheckpointError``.
    """
    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise CheckpointError(f"{destination} already exists")
    if sniff(source) != "torch":
        raise CheckpointError(f"{source} is not a PyTorch checkpoint (nor Meta's sam3.pt)")
    started = time.perf_counter()
    digest = sha256 or file_sha256(source)
    state, raw_config = load_meta_state(source)
    identify(source, list(state))
    config = _config_from(raw_config)
    plan = plan_conversion(state)
    check_plan(plan, expected_state_shapes(config))
    destination.parent.mkdir(parents=True, exist_ok=True)
    _require_space(destination.parent, sum(o.nbytes for o in plan.outputs))
    partial = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.partial-"))
    try:
        logger.info("Converting {} ({} tensors, sha256 {}) into {}", source, len(state), digest[:12], destination)
        _write_shards(plan.outputs, partial, shard_bytes, source.name)
        config.save_pretrained(partial)
        _write_processor_files(partial, int(config.image_size))
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": str(source),
            "source_name": source.name,
            "source_bytes": source.stat().st_size,
            "sha256": digest,
            "tensors_in": len(state),
            "tensors_out": len(plan.outputs),
            "dropped": plan.dropped,
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (partial / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        os.rename(partial, destination)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    logger.info("Converted {} in {:.1f}s: {} tensors -> {} ({} dropped: recomputed or unused)", source.name,
                time.perf_counter() - started, len(state), len(plan.outputs), len(plan.dropped))
    return ConversionResult(destination, digest, len(plan.outputs), plan.dropped)


def _require_space(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed * 1.05:
        raise CheckpointError(f"not enough disk space in {directory} to convert: {needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free")


# --------------------------------------------------------------------------- the cache


def conversion_cache_dir(data_dir: Path) -> Path:
    """Where the server keeps conversions and file hashes: ``DATA_DIR/checkpoints``."""
    return Path(data_dir) / "checkpoints"


def file_sha256(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of ``path``, streamed; remembered under ``cache_root`` by (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    entry_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = cache_root / _HASH_CACHE_FILE if cache_root else None
    known: dict[str, str] = {}
    if cache_file and cache_file.is_file():
        try:
            known = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            known = {}
        if isinstance(known, dict) and isinstance(known.get(entry_key), str):
            return known[entry_key]
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    if stat.st_size > 64 << 20:
        logger.info("sha256 of {} ({:.2f} GB) in {:.1f}s: {}", path, stat.st_size / 1e9, time.perf_counter() - started, value)
    if cache_file:
        known = {k: v for k, v in known.items() if not k.startswith(f"{path}|")} if isinstance(known, dict) else {}
        known[entry_key] = value
        try:
            _atomic_write(cache_file, json.dumps(known, indent=1) + "\n")
        except OSError as exc:  # e.g. a read-only DATA_DIR: the hash is still right, only not remembered
            logger.warning("Cannot remember the sha256 of {} in {}: {}", path, cache_file, exc)
    return value


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(text)
    os.replace(temporary, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_conversion(source: Path, cache_root: Path) -> tuple[Path, str]:
    """(Hugging Face-layout directory, sha256) for Meta's ``source``: converted once, then reused."""
    cache_root = Path(cache_root)
    digest = file_sha256(source, cache_root)
    destination = cache_root / f"{digest}.v{FORMAT_VERSION}"
    if (destination / MANIFEST_FILE).is_file():
        logger.info("Using the cached conversion of {} (sha256 {}): {}", source.name, digest[:12], destination)
        return destination, digest
    with _locked(cache_root / f"{digest}.lock"):
        if (destination / MANIFEST_FILE).is_file():  # another worker converted it while we waited
            return destination, digest
        for stale in cache_root.glob(f".{destination.name}.partial-*"):  # left by a killed conversion
            shutil.rmtree(stale, ignore_errors=True)
        if destination.exists():
            shutil.rmtree(destination)
        convert_meta_checkpoint(source, destination, sha256=digest)
    return destination, digest


def read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
