"""Tiny Qwen models for the smoke profile (offline, CPU).

Same architecture classes as the real checkpoints (``Qwen2_5_VLForConditionalGeneration``,
``Qwen3ForCausalLM``, ``Qwen3VLForConditionalGeneration``) with small configs: hidden 128,
2 layers, 2 heads / 1 KV head (head_dim 64, which vLLM's CPU backend accepts), a two-block vision
tower, and the real Qwen vocabulary (``harness.tokenizer.build_qwen_tokenizer``: 151,936 ids, so
prompts tokenize as on the hub models and full-vocabulary losses run at the real width; any tiny
model can score any other's tokens). The smoke kinds get an early-stopped warm start
(``harness.warm_start``) after the random initialisation. Each is written with
``save_pretrained`` (weights, tokenizer, image processor) and loaded back through
``harness.models.load_model`` exactly like a hub checkpoint. ``build_tiny_model(vocab="smoke")``
still builds on the small offline BPE (fast; for controlled experiments such as bench/vold_toy.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from harness.durable import fsync_tree

TinyKind = Literal["qwen2_5_vl", "qwen3", "qwen3_vl", "qwen2"]
TINY_KINDS: tuple[str, ...] = ("qwen2_5_vl", "qwen3", "qwen3_vl", "qwen2")
TEXT_KINDS = ("qwen3", "qwen2")
"""Text-only kinds (AutoModelForCausalLM, no image processor); qwen2 is the DeepSeek-R1-Distill-Qwen architecture."""
SMOKE_KINDS: dict[str, tuple[str, dict]] = {
    # Every smoke model is on the real Qwen vocabulary (harness.tokenizer.build_qwen_tokenizer):
    # 151,936-wide embeddings tied to the lm_head (as Qwen2.5-VL-3B and Qwen3-VL-2B / 4B), special
    # tokens at their real ids, the real chat template; then an early-stopped warm start
    # (harness.warm_start: correct answers, stopped while the model answers at about chance).
    # A kind's seed is its index here: new kinds are appended, so the others keep their weights.
    **{k: (k, {"vocab": "qwen", "warm": True}) for k in ("qwen2_5_vl", "qwen3", "qwen3_vl")},
    # A second tiny Qwen3 (another seed, lm_head / embedding drawn 7.5x wider before the warm start):
    # sharper next-token distributions than the student's, so smoke distillation has a distance to close.
    "qwen3_teacher": ("qwen3", {"vocab": "qwen", "warm": True, "head_std": 0.15}),
    # The same without the warm start: random weights, for tests that need a model with no prior.
    **{f"{k}_raw": (k, {"vocab": "qwen"}) for k in ("qwen2_5_vl", "qwen3", "qwen3_vl")},
    # The DeepSeek-R1-Distill-Qwen architecture (REOPOLD's text students and teachers).
    "qwen2": ("qwen2", {"vocab": "qwen", "warm": True}),
}
"""Cached smoke model names (``smoke:<name>``) -> (tiny architecture kind, build options)."""
SMOKE_VOCAB_ENV = "VLMREPRO_SMOKE_VOCAB"
"""``qwen`` (default): the smoke kinds as above. ``bpe``: the same kinds on the small offline BPE,
random (no warm start), in their own cache entries: the test suite sets it (tests/conftest.py),
since what it tests (losses, resume, checkpoints, plumbing) does not depend on the vocabulary and
runs ~10x faster at ~1.5k ids; every user run uses ``qwen``."""
SMOKE_VERSION = "v4"  # bump when the builders or the cache layout change so stale caches are not reused
# (v2: entries carry COMPLETE_MARKER; v3: real vocabulary and the warm start; v4: the early-stopped
# gold-answer warm start on cropped images)
COMPLETE_MARKER = ".complete.json"  # written last into a cache entry: lists its files and sizes

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
                vision_hidden: int = 64, vision_depth: int = 2, tie: bool = False):
    """The transformers config of a tiny model of ``kind`` (``tie``: lm_head = input embedding)."""
    from transformers import Qwen2_5_VLConfig, Qwen2Config, Qwen3Config, Qwen3VLConfig

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
    if kind == "qwen2":
        return Qwen2Config(**text, tie_word_embeddings=tie,
                           rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})
    if kind == "qwen3":
        return Qwen3Config(**text, head_dim=head_dim, tie_word_embeddings=tie,
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
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie,
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
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=tie,
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


def build_tiny_model(kind: str, out_dir: str | Path, *, seed: int = 0, head_std: float | None = None,
                     vocab: Literal["smoke", "qwen"] = "smoke", **sizes) -> Path:
    """Build a tiny random ``kind`` model deterministically and ``save_pretrained`` it to ``out_dir``.

    ``sizes`` override the config sizes of ``tiny_config`` (hidden, layers, heads, kv_heads, ...);
    ``head_std`` re-draws the lm_head weight from N(0, head_std^2) (sharper distributions);
    ``vocab="qwen"`` uses the real Qwen vocabulary (151,936 rows, tied embeddings) instead of the
    small offline BPE.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

    from harness.tokenizer import REAL_VOCAB_SIZE, SPECIAL_TOKENS, build_qwen_tokenizer, build_tokenizer

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(TINY_KINDS)}")
    if vocab not in ("smoke", "qwen"):
        raise ValueError(f"vocab must be 'smoke' or 'qwen', got {vocab!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer() if vocab == "qwen" else build_tokenizer()
    special = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    width = REAL_VOCAB_SIZE if vocab == "qwen" else len(tokenizer)
    config = tiny_config(kind, width, special, tie=vocab == "qwen", **sizes)
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if kind in TEXT_KINDS else AutoModelForImageTextToText
    model = auto.from_config(config, dtype=torch.float32)
    if head_std is not None:
        with torch.no_grad():
            model.get_output_embeddings().weight.normal_(0.0, head_std)
    model.generation_config = GenerationConfig(
        bos_token_id=special["<|endoftext|>"], pad_token_id=special["<|endoftext|>"],
        eos_token_id=[special["<|im_end|>"], special["<|endoftext|>"]],
    )
    # transformers 5 writes config and weights on rank 0 only once torch.distributed is set up
    # (PreTrainedModel.should_save_on_this_rank); this private build writes them on every rank.
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if kind not in TEXT_KINDS:
        tiny_image_processor(kind).save_pretrained(out)
    return out


def warm_start_saved(path: Path, seed: int) -> list[float]:
    """Load the model saved at ``path``, run the early-stopped warm start (``harness.warm_start``)
    and save the weights back in place. Returns the per-step warm-start loss."""
    from harness.models import load_model
    from harness.warm_start import WarmStart, warm_start

    bundle = load_model(path)
    losses = warm_start(bundle, WarmStart(seed=seed))
    bundle.model.should_save_on_this_rank = lambda is_main_process: is_main_process
    bundle.model.save_pretrained(path)
    (Path(path) / "warm_start.json").write_text(json.dumps({"loss_first": losses[0], "loss_last": losses[-1],
                                                             "steps": len(losses)}))
    return losses


def smoke_vocab() -> str:
    """The smoke kinds' vocabulary: ``$VLMREPRO_SMOKE_VOCAB`` (see :data:`SMOKE_VOCAB_ENV`), default ``qwen``."""
    value = os.environ.get(SMOKE_VOCAB_ENV, "qwen")
    if value not in ("qwen", "bpe"):
        raise ValueError(f"${SMOKE_VOCAB_ENV} must be 'qwen' or 'bpe', got {value!r}")
    return value


def smoke_cache_root() -> Path:
    """``$VLMREPRO_CACHE`` or ``~/.cache/vlmrepro/smoke``."""
    env = os.environ.get("VLMREPRO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vlmrepro" / "smoke"


def _entry_files(kind: str) -> tuple[str, ...]:
    """Files a cache entry of ``kind`` must hold (config, weights, tokenizer, image processor)."""
    files = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return files if SMOKE_KINDS.get(kind, (kind,))[0] in TEXT_KINDS else (*files, "preprocessor_config.json")


def _write_marker(entry: Path, kind: str) -> None:
    """Record the entry's files and sizes, written last (after everything else is on disk)."""
    sizes = {}
    for name in _entry_files(kind):
        f = entry / name
        if not f.is_file() or f.stat().st_size == 0:
            raise RuntimeError(f"building the smoke model {kind!r} left no {name} in {entry}")
        sizes[name] = f.stat().st_size
    fsync_tree(entry)  # the files are on disk before the marker says so
    tmp = entry / f"{COMPLETE_MARKER}.tmp"
    tmp.write_text(json.dumps({"kind": kind, "version": SMOKE_VERSION, "files": sizes}, indent=1))
    os.replace(tmp, entry / COMPLETE_MARKER)


def smoke_entry_complete(entry: str | Path, kind: str) -> bool:
    """Whether ``entry`` is a finished cache entry of ``kind``: its completion marker exists, and
    every file the marker lists (config, weights, tokenizer, ...) is there with the recorded size."""
    entry = Path(entry)
    try:
        info = json.loads((entry / COMPLETE_MARKER).read_text())
        files = info["files"]
        return (info.get("kind") == kind and set(_entry_files(kind)) <= set(files)
                and all((entry / name).stat().st_size == size for name, size in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


@contextlib.contextmanager
def _cache_lock(root: Path):
    """An exclusive lock on the cache directory (flock; held per open file, so it also orders
    threads of one process). Without fcntl (not POSIX) it is a no-op: the rename below still
    keeps the cache consistent, builders may only duplicate work."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _discard(path: Path) -> None:
    """Move ``path`` out of the way in one step (so nobody sees it half deleted), then delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".trash-{path.name}-", dir=path.parent))
    try:
        os.rename(path, trash / path.name)
    except FileNotFoundError:
        pass
    shutil.rmtree(trash, ignore_errors=True)


def smoke_model_path(kind: str) -> Path:
    """Path of the cached tiny ``kind`` model, built on first use.

    An entry is used only when complete (``smoke_entry_complete``: a marker written last lists
    the config, weights and tokenizer files with their sizes); an incomplete one (a build that
    crashed, a copy written by a rank that saved nothing) is discarded and rebuilt. Builders hold
    a lock on the cache directory, build into a temporary directory and rename it into place, so
    concurrent callers (threads, processes, ranks of a distributed job) build once and every
    caller gets a complete entry. The build writes every file whatever the torch.distributed
    state (transformers' ``save_pretrained`` otherwise writes config and weights on rank 0 only).
    """
    if kind not in SMOKE_KINDS:
        raise ValueError(f"unknown smoke model kind {kind!r}; known: {', '.join(SMOKE_KINDS)}")
    root = smoke_cache_root()
    bpe = smoke_vocab() == "bpe"
    final = root / (f"{kind}-bpe-{SMOKE_VERSION}" if bpe else f"{kind}-{SMOKE_VERSION}")
    if smoke_entry_complete(final, kind):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _cache_lock(root):
        if smoke_entry_complete(final, kind):  # built by whoever held the lock before us
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{SMOKE_VERSION}-", dir=root))
        try:
            arch, options = SMOKE_KINDS[kind]
            options = dict(options)
            warm = options.pop("warm", False)
            if bpe:
                options["vocab"], warm = "smoke", False
            seed = list(SMOKE_KINDS).index(kind)
            build_tiny_model(arch, tmp, seed=seed, **options)
            if warm:
                warm_start_saved(tmp, seed)
            _write_marker(tmp, kind)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private
            if final.exists() and not smoke_entry_complete(final, kind):
                _discard(final)  # incomplete: never used, replaced
            try:
                os.rename(tmp, final)  # atomic on one file system; fails if ``final`` exists
            except OSError:
                if not smoke_entry_complete(final, kind):  # a lock-less builder won with a bad copy
                    raise
                # the loser discards its copy (below) and uses the winner's
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final
