"""No redundant work: one chunking rule for full-vocabulary log-probs (harness.chunking), and the
old-log-prob forward skipped when the rollout engine's log-probs are the trainer's own."""
from __future__ import annotations

import pytest
import torch

from harness.chunking import CHUNK_BYTES, tokens_per_chunk
from harness.rollout.hf import HFRolloutEngine
from harness.scoring import logprobs_from_hidden


def test_tokens_per_chunk_fits_the_byte_budget():
    assert tokens_per_chunk(151_936) == (1 << 25) // 151_936 == 220     # 128 MiB of fp32 logits
    for vocab in (7, 1_500, 151_936, 10**9):
        c = tokens_per_chunk(vocab)
        assert c >= 1 and (c * vocab * 4 <= CHUNK_BYTES or c == 1)
        assert (c + 1) * vocab * 4 > CHUNK_BYTES
    assert tokens_per_chunk(1000, bytes_budget=8000, itemsize=2) == 4
    with pytest.raises(ValueError):
        tokens_per_chunk(0)


def test_logprobs_from_hidden_chunks_by_the_budget_and_matches_one_chunk(monkeypatch):
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300, bias=False)
    hidden, ids = torch.randn(3, 5, 16), torch.randint(0, 300, (3, 5))
    full = torch.log_softmax(head(hidden), -1).gather(-1, ids[..., None]).squeeze(-1)
    calls = []
    counted = lambda h: (calls.append(h.shape[0]), head(h))[1]  # noqa: E731
    counted.weight = head.weight
    monkeypatch.setattr("harness.scoring.tokens_per_chunk", lambda v: tokens_per_chunk(v, bytes_budget=4 * 300 * 4))
    got = logprobs_from_hidden(hidden, counted, ids)
    assert calls == [4, 4, 4, 3]                     # 4 tokens a chunk: the budget, given V = 300
    assert torch.allclose(got, full, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_tokens"):
        logprobs_from_hidden(hidden, lambda h: head(h), ids)   # a bare function: no V to size by
    assert torch.allclose(logprobs_from_hidden(hidden, lambda h: head(h), ids, chunk_tokens=15), full, atol=1e-6)


# ------------------------------------------------------------------ old log-probs


def _policy_ctx(view: str = "full", mode: object = "auto"):
    """A Context-like namespace over the smoke policy (what engine_logp_exact reads)."""
    from types import SimpleNamespace

    from harness.models import load_model, smoke_model_path

    policy = load_model(smoke_model_path("qwen2_5_vl"), trainable=False)
    cfg = SimpleNamespace(view=view, recompute_old_logp=mode)
    return SimpleNamespace(cfg=cfg, policy=policy, strategy=SimpleNamespace(is_main=True))


def test_exactness_of_the_engine_log_probs_is_decided_from_the_engine():
    import copy
    import dataclasses

    from harness.rollout.multiturn import MultiTurnEngine
    from harness.rollout.vllm import VLLMRolloutEngine
    from harness.trainer import engine_logp_exact, recompute_old_logp

    ctx = _policy_ctx()
    own = HFRolloutEngine(ctx.policy)
    assert engine_logp_exact(own, ctx)[0] and not recompute_old_logp(own, ctx)
    bf16 = dataclasses.replace(ctx.policy, model=copy.deepcopy(ctx.policy.model).to(torch.bfloat16))
    not_exact = {
        "vllm": object.__new__(VLLMRolloutEngine),                  # no vLLM needed to ask
        "bf16 copy": HFRolloutEngine(bf16),
        "multi-turn": MultiTurnEngine(own, ["crop_image"], 1),
        "other view": HFRolloutEngine(ctx.policy, view="text_only"),
    }
    for name, engine in not_exact.items():
        exact, why = engine_logp_exact(engine, ctx)
        assert not exact and why, name
        assert recompute_old_logp(engine, ctx), name
    for mode, expected in (("always", True), (True, True), ("never", False), (False, False)):
        ctx.cfg.recompute_old_logp = mode
        assert recompute_old_logp(own, ctx) is expected and recompute_old_logp(not_exact["vllm"], ctx) is expected


def test_recompute_old_logp_setting_is_validated():
    from tests.test_trainer_runs import grpo_cfg

    assert grpo_cfg().recompute_old_logp == "auto"
    with pytest.raises(ValueError, match="recompute_old_logp"):
        grpo_cfg(recompute_old_logp="sometimes")


def test_auto_skips_the_forward_for_the_hf_engine_and_trains_as_recomputing(tmp_path):
    """HF engine on the policy itself: ``auto`` uses the engine's log-probs (bit for bit the run
    with ``never``), and matches ``always`` up to the engine's fp32 rounding (KV-cache decoding
    sums in another order: ~5e-7 per log-prob), so the per-step losses agree to 1e-5 and the
    weights to Adam's amplification of that rounding. ``true`` is ``always``, bit for bit."""
    from tests.test_trainer_runs import grpo_cfg, metrics, weights, without_times
    from methods.grpo.trainer import train

    runs = {str(m): tmp_path / str(m) for m in ("auto", "never", "always", True)}
    for mode, out in runs.items():
        train(grpo_cfg(steps=3, recompute_old_logp=True if mode == "True" else mode), out)
    m = {k: metrics(v) for k, v in runs.items()}
    w = {k: weights(v / "final") for k, v in runs.items()}
    assert [r["old_logp_recomputed"] for r in m["auto"]] == [0.0] * 3
    assert [r["old_logp_recomputed"] for r in m["always"]] == [1.0] * 3

    def same(a: str, b: str) -> bool:
        return all(torch.equal(w[a][k], w[b][k]) for k in w[a])

    assert same("auto", "never") and without_times(m["auto"]) == without_times(m["never"])
    assert same("True", "always") and without_times(m["True"]) == without_times(m["always"])
    for a, b in zip(m["auto"], m["always"]):
        assert a["reward_mean"] == b["reward_mean"] and a["response_length"] == b["response_length"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    assert max(float((w["auto"][k] - w["always"][k]).abs().max()) for k in w["auto"]) < 1e-3


def test_auto_recomputes_for_an_engine_that_is_not_the_trainer(tmp_path):
    """An HF engine on a bf16 copy of the fp32 policy (weights synced every step): recomputed."""
    import copy
    import dataclasses

    from tests.test_trainer_runs import grpo_cfg, metrics
    from methods.grpo.trainer import train

    def bf16_engine(ctx):
        copy_ = dataclasses.replace(ctx.policy, model=copy.deepcopy(ctx.policy.model).to(torch.bfloat16))
        return HFRolloutEngine(copy_, batch_size=ctx.cfg.rollout_batch_size, progress=False)

    train(grpo_cfg(steps=2), tmp_path / "run", make_engine=bf16_engine)
    assert [r["old_logp_recomputed"] for r in metrics(tmp_path / "run")] == [1.0, 1.0]
