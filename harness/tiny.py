"""Tiny randomly initialised Qwen models for the smoke profile (offline, CPU).

Same architecture classes as the real checkpoints (``Qwen2_5_VLForConditionalGeneration``,
``Qwen3ForCausalLM``, ``Qwen3VLForConditionalGeneration``) with small configs: hidden 128,
2 layers, 2 heads / 1 KV head (head_dim 64, which vLLM's CPU backend accepts), a two-block vision
tower, and the shared offline tokenizer of ``harness.tokenizer`` (so any tiny model can score any
other's tokens). Each is written with ``save_pretrained`` (weights, tokenizer, image processor) and
loaded back through ``harness.models.load_model`` exactly like a hub checkpoint.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

TinyKind = Literal["qwen2_5_vl", "qwen3", "qwen3_vl"]
TINY_KINDS: tuple[str, ...] = ("qwen2_5_vl", "qwen3", "qwen3_vl")
SMOKE_VERSION = "v1"  # bump when the builders change so stale caches are not reused

# Image sizes kept small so smoke rollouts are fast: 2x2..4x4 merged tokens per image.
_PATCH = {"qwen2_5_vl": 14, "qwen3_vl": 16}
_MERGE = 2


def _text_sizes(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int) -> dict:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": intermediate,
        "max_position_embeddings": 4096,
    }


def _mrope_section(head_dim: int, interleaved: bool) -> list[int]:
    """Split head_dim/2 rotary frequencies over (t, h, w) in the real models' proportions."""
    half = head_dim // 2
    if interleaved:  # Qwen3-VL: [24, 20, 20] of 64
        h = w = (half * 20) // 64
    else:  # Qwen2.5-VL: [16, 24, 24] of 64
        h = w = (half * 24) // 64
    return [half - h - w, h, w]


def tiny_config(kind: str, vocab_size: int, special_ids: dict[str, int], *, hidden: int = 128,
                layers: int = 2, heads: int = 2, kv_heads: int = 1, intermediate: int = 256,
                vision_hidden: int = 64, vision_depth: int = 2):
    """The transformers config of a tiny model of ``kind``."""
    from transformers import Qwen2_5_VLConfig, Qwen3Config, Qwen3VLConfig

    head_dim = hidden // heads
    tokens = {
        "bos_token_id": special_ids["<|endoftext|>"],
        "eos_token_id": special_ids["<|im_end|>"],
        "pad_token_id": special_ids["<|endoftext|>"],
    }
    vision_ids = {
        "image_token_id": special_ids["<|image_pad|>"],
        "video_token_id": special_ids["<|video_pad|>"],
        "vision_start_token_id": special_ids["<|vision_start|>"],
        "vision_end_token_id": special_ids["<|vision_end|>"],
    }
    text = dict(_text_sizes(hidden, layers, heads, kv_heads, intermediate), vocab_size=vocab_size, **tokens)
    if kind == "qwen3":
        return Qwen3Config(**text, head_dim=head_dim, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0})
    if kind == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0,
                                   "mrope_section": _mrope_section(head_dim, False)}
        vision = {
            "depth": vision_depth, "hidden_size": vision_hidden, "intermediate_size": 2 * vision_hidden,
            "num_heads": 2, "out_hidden_size": hidden, "patch_size": _PATCH[kind],
            "spatial_merge_size": _MERGE, "temporal_patch_size": 2, "window_size": 56,
            "fullatt_block_indexes": [vision_depth - 1],
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                                **vision_ids, **tokens)
    if kind == "qwen3_vl":
        text["head_dim"] = head_dim
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 5_000_000.0,
                                   "mrope_section": _mrope_section(head_dim, True),
                                   "mrope_interleaved": True}
        vision = {
            "depth": vision_depth, "hidden_size": vision_hidden, "intermediate_size": 2 * vision_hidden,
            "num_heads": 2, "out_hidden_size": hidden, "patch_size": _PATCH[kind],
            "spatial_merge_size": _MERGE, "temporal_patch_size": 2, "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                             **vision_ids, **tokens)
    raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(TINY_KINDS)}")


def tiny_image_processor(kind: str):
    """The PIL (torchvision-free) Qwen2-VL image processor with small pixel bounds."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    factor = _PATCH[kind] * _MERGE
    return Qwen2VLImageProcessorPil(
        patch_size=_PATCH[kind], merge_size=_MERGE, temporal_patch_size=2,
        size={"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2},
    )


def build_tiny_model(kind: str, out_dir: str | Path, *, seed: int = 0, **sizes) -> Path:
    """Build a tiny random ``kind`` model deterministically and ``save_pretrained`` it to ``out_dir``.

    ``sizes`` override the config sizes of ``tiny_config`` (hidden, layers, heads, kv_heads, ...).
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    from harness.tokenizer import SPECIAL_TOKENS, build_tokenizer

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(TINY_KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = tiny_config(kind, len(tokenizer), special, **sizes)
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if kind == "qwen3" else AutoModelForImageTextToText
    model = auto.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=special["<|endoftext|>"], pad_token_id=special["<|endoftext|>"],
        eos_token_id=[special["<|im_end|>"], special["<|endoftext|>"]],
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if kind != "qwen3":
        tiny_image_processor(kind).save_pretrained(out)
    return out


def smoke_cache_root() -> Path:
    """``$VLMREPRO_CACHE`` or ``~/.cache/vlmrepro/smoke``."""
    env = os.environ.get("VLMREPRO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vlmrepro" / "smoke"


def smoke_model_path(kind: str) -> Path:
    """Path of the cached tiny ``kind`` model, built on first use.

    Safe under concurrent builders: each builds into its own temporary directory and renames it
    into place atomically; a loser of the race discards its copy and uses the winner's.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown smoke model kind {kind!r}; known: {', '.join(TINY_KINDS)}")
    root = smoke_cache_root()
    final = root / f"{kind}-{SMOKE_VERSION}"
    if (final / "config.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{SMOKE_VERSION}-", dir=root))
    try:
        build_tiny_model(kind, tmp, seed=TINY_KINDS.index(kind))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, final)  # atomic on one file system; fails if ``final`` exists
        except OSError:
            if not (final / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
