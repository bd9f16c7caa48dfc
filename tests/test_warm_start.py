"""The format-only warm start of the smoke models (harness.warm_start)."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings, strategies as st

from harness.data.packaged import EASY_VQA_COLORS, EASY_VQA_SHAPES, easy_vqa
from harness.warm_start import random_answer_targets, sampled_softmax_nll


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), vocab=st.integers(8, 60), hidden=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_sampled_softmax_with_the_whole_rest_is_the_full_cross_entropy(n, vocab, hidden, seed):
    """Drawing every other id once (negatives = rest, correction log 1 = 0) reproduces the exact
    cross-entropy whatever order the draw takes; the estimate is of the full-softmax loss."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(1, n, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g)
    targets = torch.randint(vocab, (1, n), generator=g)
    mask = torch.ones(1, n, dtype=torch.long)
    rest = vocab - len(torch.unique(targets))
    full = torch.nn.functional.cross_entropy(h[0] @ w.T, targets[0])
    # sampling `rest` ids with replacement does not cover the rest exactly; patch randint to a permutation
    perm = torch.randperm(rest, generator=g)
    orig = torch.randint
    try:
        torch.randint = lambda high, size, generator=None: perm[: size[0]]  # type: ignore[assignment]
        est = sampled_softmax_nll(h, w, targets, mask, rest, g) if rest > 0 else full
    finally:
        torch.randint = orig
    assert torch.allclose(est, full, atol=1e-5)


def test_sampled_softmax_estimate_is_close_to_the_full_loss_on_average():
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(1, 16, 8, generator=g), torch.randn(5000, 8, generator=g) * 0.3
    targets, mask = torch.randint(5000, (1, 16), generator=g), torch.ones(1, 16, dtype=torch.long)
    full = torch.nn.functional.cross_entropy(h[0] @ w.T, targets[0]).item()
    est = sum(sampled_softmax_nll(h, w, targets, mask, 500, g).item() for _ in range(200)) / 200
    assert abs(est - full) < 0.05 * full


def test_random_answer_targets_come_from_the_answer_set_and_ignore_the_image():
    rows = easy_vqa(600, "train", seed=0, form="mixed")
    targets = random_answer_targets(rows, seed=0)
    assert [t.id for t in targets] == [r.id for r in rows]
    for r, t in zip(rows, targets):
        inner = t.response[len("\\boxed{"):-1]
        pool = list(r.choices) if r.choices else (EASY_VQA_COLORS if r.meta["kind"] == "color" else EASY_VQA_SHAPES)
        assert t.response.startswith("\\boxed{") and inner in pool
    # independent of the truth: the drawn answer is right about as often as chance (1/3 .. 1/8)
    right = sum(t.response == r.response for r, t in zip(rows, targets)) / len(rows)
    assert 0.1 < right < 0.35
    shape_free = Counter(t.response for r, t in zip(rows, targets) if r.meta["kind"] == "shape" and not r.choices)
    assert len(shape_free) == 3 and min(shape_free.values()) > 0.2 * sum(shape_free.values())
    assert random_answer_targets(rows, seed=0) == targets and random_answer_targets(rows, seed=1) != targets


@pytest.mark.slow
def test_real_vocabulary_smoke_model_is_warm_started(real_vocab, tmp_path, monkeypatch):
    """A cold build of smoke:qwen2_5_vl: real vocabulary, tied, warm-started (loss fell), and greedy
    answers to easy-vqa validation questions are well formed."""
    import json

    from harness.models import load_model
    from harness.rollout.hf import HFRolloutEngine
    from harness.tiny import smoke_model_path
    from harness.tokenizer import REAL_VOCAB_SIZE
    from harness.types import SamplingParams

    monkeypatch.setenv("VLMREPRO_CACHE", str(tmp_path))
    path = smoke_model_path("qwen2_5_vl")
    info = json.loads((path / "warm_start.json").read_text())
    assert info["loss_last"] < 0.2 * info["loss_first"]
    bundle = load_model(path)
    assert bundle.model.get_input_embeddings().weight.shape[0] == REAL_VOCAB_SIZE
    rows = easy_vqa(24, "validation", seed=1)
    texts = HFRolloutEngine(bundle, progress=False).generate(rows, SamplingParams(n=1, temperature=0.0,
                                                                                 max_new_tokens=8)).texts
    assert sum(t.startswith("\\boxed{") and t.endswith("}") for t in texts) >= 20, texts


def test_gold_warm_start_trains_on_the_correct_answers_and_reports_each_step(monkeypatch):
    """``targets="gold"`` keeps each question's own answer (what ``bench/smoke_warm_start.py``
    measures); ``random`` replaces it; an unknown value is a one-line error."""
    import harness.warm_start as ws
    from harness.models import load_model
    from harness.tiny import smoke_model_path

    seen = []
    real_encode = ws.encode_pairs
    monkeypatch.setattr(ws, "encode_pairs", lambda bundle, rows: (seen.append(rows), real_encode(bundle, rows))[1])
    bundle = load_model(smoke_model_path("qwen2_5_vl_raw"), dtype="float32", device="cpu")
    steps = []
    ws.warm_start(bundle, ws.WarmStart(steps=2, batch_size=4, rows=8, negatives=16, targets="gold", crop=True),
                  on_step=lambda step, loss: steps.append(step))
    assert steps == [1, 2]
    gold = {s.id: s.response for s in easy_vqa(8, "train", seed=0, form="mixed", crop=True)}
    assert all(r.response == gold[r.id] for batch in seen for r in batch)
    seen.clear()
    ws.warm_start(bundle, ws.WarmStart(steps=1, batch_size=8, rows=8, negatives=16, targets="random"))
    assert any(r.response != gold[r.id] for r in seen[0])
    with pytest.raises(ValueError, match="targets"):
        ws.warm_start(bundle, ws.WarmStart(steps=1, targets="labels"))
