"""Model loading, tiny builders, offline tokenizer, vision freezing, vocabulary checks."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.models import (PolicyBundle, VocabularyMismatchError, build_tiny_model, check_same_vocabulary,
                            load_model, load_teacher, save_bundle, smoke_model_path)
from harness.scoring import collate, render_prompt
from harness.tiny import SMOKE_VERSION, TINY_KINDS
from harness.tokenizer import REAL_VOCAB_SIZE, SPECIAL_TOKENS, THINK_TOKENS, build_qwen_tokenizer, build_tokenizer
from harness.types import Sample


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {k: str(build_tiny_model(k, root / k, seed=i)) for i, k in enumerate(TINY_KINDS)}


@pytest.fixture(scope="module")
def bundles(tiny_dirs) -> dict[str, PolicyBundle]:
    return {k: load_model(p) for k, p in tiny_dirs.items()}


def _sample(with_image: bool) -> Sample:
    images = [Image.new("RGB", (70, 50), (10, 200, 40))] if with_image else []
    return Sample(id="s", prompt="How many sides does the shape have? Put the answer in \\boxed{}.", images=images)


def _logits(bundle: PolicyBundle, sample: Sample) -> torch.Tensor:
    batch, _ = collate(bundle, [render_prompt(bundle, sample)])
    with torch.no_grad():
        return bundle.model(**batch).logits


def test_tokenizer_is_deterministic_and_qwen_like():
    a, b = build_tokenizer(), build_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert 1000 <= len(a) <= 2048
    ids = a.convert_tokens_to_ids(SPECIAL_TOKENS + THINK_TOKENS)
    assert len(set(ids)) == len(ids) and a.unk_token_id not in ids
    text = "<think>\nSo 3\\frac{1}{2} = x</think>\nAnswer: \\boxed{12}"
    enc = a(text, add_special_tokens=False)["input_ids"]
    assert a.decode(enc) == text  # byte-level BPE: lossless
    assert enc[0] == a.convert_tokens_to_ids("<think>")  # added token, kept whole
    chat = a.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                 tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in chat
    assert chat.endswith("<|im_start|>assistant\n")


def test_load_picks_architecture_from_config(bundles):
    assert type(bundles["qwen2_5_vl"].model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(bundles["qwen3_vl"].model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(bundles["qwen3"].model).__name__ == "Qwen3ForCausalLM"
    assert [bundles[k].is_vlm for k in TINY_KINDS] == [True, False, True, False]
    assert type(bundles["qwen2"].model).__name__ == "Qwen2ForCausalLM"
    assert bundles["qwen3"].processor is None
    assert type(bundles["qwen2_5_vl"].processor).__name__ == "Qwen2VLImageProcessorPil"
    for b in bundles.values():
        cfg = b.model.config.get_text_config()
        assert cfg.hidden_size // cfg.num_attention_heads == 64 or getattr(cfg, "head_dim", None) == 64
        assert sum(p.numel() for p in b.model.parameters()) < 2_000_000


@pytest.mark.parametrize("kind", TINY_KINDS)
def test_save_load_round_trip_gives_identical_logits(bundles, kind, tmp_path):
    bundle = bundles[kind]
    sample = _sample(bundle.is_vlm)
    saved = load_model(save_bundle(bundle, tmp_path / "copy"))
    before, after = _logits(bundle, sample), _logits(saved, sample)
    assert torch.equal(before, after)
    assert before.abs().max() > 0 and torch.isfinite(before).all()


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_vl"])
def test_vision_tower_is_frozen_language_model_trainable(bundles, kind):
    model = bundles[kind].model
    visual = {n: p for n, p in model.named_parameters() if "visual" in n.split(".")}
    other = {n: p for n, p in model.named_parameters() if n not in visual}
    assert any("merger" in n for n in visual) and len(visual) > 10
    assert not any(p.requires_grad for p in visual.values())
    assert other and all(p.requires_grad for p in other.values())
    assert model.get_output_embeddings().weight.requires_grad


def test_freeze_options(tiny_dirs):
    unfrozen = load_model(tiny_dirs["qwen2_5_vl"], freeze_vision=False)
    assert all(p.requires_grad for p in unfrozen.model.parameters())
    frozen = load_model(tiny_dirs["qwen2_5_vl"], trainable=False)
    assert not any(p.requires_grad for p in frozen.model.parameters())


def test_bfloat16_load(tiny_dirs):
    bundle = load_model(tiny_dirs["qwen3"], dtype="bfloat16")
    assert next(bundle.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(tiny_dirs["qwen3"], dtype="float8")


def test_teacher_with_same_vocabulary_is_accepted_and_frozen(bundles, tiny_dirs):
    teacher = load_teacher(tiny_dirs["qwen3"], bundles["qwen2_5_vl"])
    assert not teacher.is_vlm and not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_with_other_token_map_is_refused(bundles, tiny_dirs, tmp_path):
    other = tmp_path / "other_tok"
    build_tiny_model("qwen3", other)
    # a tokenizer trained on other text: same special tokens, different ids for ordinary tokens
    tok = build_tokenizer(seed=7)
    tok.save_pretrained(other)
    with pytest.raises(VocabularyMismatchError, match=r"shared token ids map to different tokens \(id \d+: student"):
        load_teacher(other, bundles["qwen2_5_vl"])


def test_teacher_with_other_embedding_size_is_refused(bundles, tmp_path):
    bigger = load_model(smoke_dir := build_tiny_model("qwen3", tmp_path / "t"))
    bigger.model.resize_token_embeddings(len(bigger.tokenizer) + 64)
    save_bundle(bigger, smoke_dir)
    with pytest.raises(VocabularyMismatchError, match="embedding vocab size") as err:
        load_teacher(smoke_dir, bundles["qwen2_5_vl"])
    n = len(bundles["qwen2_5_vl"].tokenizer)
    assert f"({n}, {n})" in str(err.value) and f"({n + 64}, {n + 64})" in str(err.value)
    check_same_vocabulary(bundles["qwen2_5_vl"], bundles["qwen3_vl"])  # the other pair is fine


def test_smoke_model_path_builds_once_even_concurrently(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMREPRO_CACHE", str(tmp_path))
    results, errors = [], []
    barrier = threading.Barrier(2)

    def build():
        try:
            barrier.wait()
            results.append(smoke_model_path("qwen3"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(results) == 2 and results[0] == results[1]
    path = results[0]
    assert path.parent == tmp_path and path.name.startswith("qwen3-") and path.name.endswith(f"-{SMOKE_VERSION}")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary dirs left behind
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert smoke_model_path("qwen3") == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert load_model(path).model.config.model_type == "qwen3"
    with pytest.raises(ValueError, match="qwen2_5_vl"):
        smoke_model_path("llama")


_RANK_WORKER = r"""
import os, sys, json
import torch.distributed as dist
dist.init_process_group("gloo", rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
from harness.tiny import build_tiny_model, smoke_entry_complete, smoke_model_path
own = build_tiny_model("qwen3", sys.argv[1] + f"/own-{dist.get_rank()}")  # every rank writes every file
path = smoke_model_path("qwen3")
from harness.models import load_model
ok = load_model(path).model.config.model_type == "qwen3" and smoke_entry_complete(path, "qwen3")
dist.barrier()
print(json.dumps({"path": str(path), "ok": ok, "own": sorted(os.listdir(own))}))
dist.destroy_process_group()
"""


def test_smoke_cache_is_complete_when_two_ranks_build_it_at_once(tmp_path):
    """Two ranks of a gloo process group, a cold cache: one complete, loadable entry for both
    (transformers writes config and weights on rank 0 only; the cache must not depend on it)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cache = tmp_path / "cache"
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "VLMREPRO_CACHE": str(cache), "PYTHONPATH": os.getcwd()}
        procs.append(subprocess.Popen([sys.executable, "-c", _RANK_WORKER, str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0]["path"] == results[1]["path"] and all(r["ok"] for r in results)
    assert all({"config.json", "model.safetensors"} <= set(r["own"]) for r in results)
    entries = [p.name for p in cache.iterdir()]
    assert entries == [Path(results[0]["path"]).name]  # no temporary or half-built copies left


@pytest.mark.parametrize("damage", ["weights", "marker", "rank1-copy", "truncated"])
def test_incomplete_cache_entry_is_rebuilt_not_used(tmp_path, monkeypatch, damage):
    from harness.tiny import COMPLETE_MARKER, smoke_entry_complete

    monkeypatch.setenv("VLMREPRO_CACHE", str(tmp_path))
    path = smoke_model_path("qwen3")
    weights = (path / "model.safetensors").read_bytes()
    if damage == "weights":
        (path / "model.safetensors").unlink()
    elif damage == "marker":
        (path / COMPLETE_MARKER).unlink()
    elif damage == "truncated":
        (path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    else:  # what a rank != 0 used to leave: tokenizer files, no config, no weights, no marker
        for name in ("config.json", "generation_config.json", "model.safetensors", COMPLETE_MARKER):
            (path / name).unlink()
    assert not smoke_entry_complete(path, "qwen3")
    assert smoke_model_path("qwen3") == path and smoke_entry_complete(path, "qwen3")
    assert (path / "model.safetensors").read_bytes() == weights  # the same deterministic model
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_model(path).model.config.model_type == "qwen3"


def test_smoke_models_share_one_vocabulary(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMREPRO_CACHE", str(tmp_path))
    a = load_model(smoke_model_path("qwen2_5_vl"))
    b = load_model(smoke_model_path("qwen3"))
    check_same_vocabulary(a, b)
    # differently seeded weights: the teacher is not a copy of the student
    assert not torch.equal(a.model.get_input_embeddings().weight, b.model.get_input_embeddings().weight)


def test_chat_template_from_processor_file(tiny_dirs, tmp_path):
    """Checkpoints that keep the template only in the processor's chat_template.json still render."""
    import json
    import shutil

    target = tmp_path / "vl"
    shutil.copytree(tiny_dirs["qwen2_5_vl"], target)
    template = (target / "chat_template.jinja").read_text()
    (target / "chat_template.jinja").unlink()
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (target / "tokenizer_config.json").write_text(json.dumps(cfg))
    (target / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    bundle = load_model(target)
    assert bundle.tokenizer.chat_template == template
    ids = render_prompt(bundle, _sample(True))["input_ids"]
    assert ids.numel() > 10


# ------------------------------------------------------------------ the real Qwen vocabulary
def test_qwen_tokenizer_is_the_real_vocabulary():
    a = build_qwen_tokenizer()
    assert len(a) == 151669 and len(a) <= REAL_VOCAB_SIZE == 151936
    assert a.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                    "<|image_pad|>", "<tool_call>", "<think>", "</think>"]) == \
        [151643, 151644, 151645, 151652, 151655, 151657, 151667, 151668]  # the hub tokenizers' ids
    assert a.encode("Hello world!", add_special_tokens=False) == [9707, 1879, 0]  # as Qwen2.5 / Qwen3
    assert (a.eos_token, a.pad_token) == ("<|im_end|>", "<|endoftext|>")
    text = "<think>\nSo 3\\frac{1}{2} = x</think>\nAnswer: \\boxed{12} 你好"
    enc = a(text, add_special_tokens=False)["input_ids"]
    assert a.decode(enc) == text and enc[0] == 151667  # lossless; <think> kept whole
    assert a.decode(a.encode("<tool_call>x</tool_call><|im_end|>"), skip_special_tokens=True) == "<tool_call>x</tool_call>"
    chat = a.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
                                 tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>" in chat


def test_real_vocabulary_tiny_model_scores_like_a_hub_checkpoint(tmp_path):
    """A tiny Qwen2.5-VL on the real vocabulary: 151,936 rows, lm_head tied to the embedding,
    the image placeholder at its real id in rendered prompts, and the scorer's log-probs are the
    model's own next-token log-probs at that width."""
    from harness.scoring import render_prompt, token_logprobs
    from harness.types import Sample, SamplingParams
    from harness.rollout.hf import HFRolloutEngine
    from PIL import Image

    bundle = load_model(build_tiny_model("qwen2_5_vl", tmp_path / "m", vocab="qwen"))
    head, embed = bundle.model.get_output_embeddings().weight, bundle.model.get_input_embeddings().weight
    assert head.shape == (REAL_VOCAB_SIZE, 128) and head.data_ptr() == embed.data_ptr()
    sample = Sample(id="s", prompt="What colour is the shape?", images=[Image.new("RGB", (64, 64), "teal")])
    ids = render_prompt(bundle, sample)["input_ids"].tolist()
    assert 151655 in ids and ids[:3] == [151644, 8948, 198]  # <|im_start|> system \n, as Qwen2.5-VL renders
    traj = HFRolloutEngine(bundle, progress=False).generate([sample], SamplingParams(n=2, max_new_tokens=5, seed=0))
    assert torch.allclose(token_logprobs(bundle, traj), traj.old_logp, atol=1e-5)
    assert float(traj.old_logp[traj.response_mask.bool()].mean()) < -10  # ~ -ln(151936) for random weights
