"""PTD-PO on the shared loop (methods/ptdpo): the information barrier, routing of the teacher
forward, DAPO's dynamic sampling, a smoke run that moves the weights, and the paper profile
against Table 3."""
from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from harness.types import Sample, SamplingParams, Trajectories


def _cfg(profile: str = "smoke", **kw):
    from methods.ptdpo.config import PROFILES, PTDPOConfig
    from methods.registry import load_method_config

    return load_method_config(PTDPOConfig, PROFILES, profile, overrides=kw)


# ---------------------------------------------------------------- the information barrier

def test_teacher_sees_the_hint_and_the_student_does_not():
    """Student ids do not depend on the hint; the teacher's ids are the student's with one
    contiguous block (the hint) inserted; both score the same response ids (harness.scoring)."""
    from harness.data import load_training_set
    from harness.models import load_model, smoke_model_path
    from harness.scoring import render_prompt
    from methods.ptdpo.context import teacher_view

    bundle = load_model(smoke_model_path("qwen3_vl"))
    s = load_training_set("champ", "train", limit=1, instruction="think_boxed")[0]
    assert s.hint and s.answer
    student = render_prompt(bundle, s)["input_ids"].tolist()
    assert student == render_prompt(bundle, dataclasses.replace(s, hint=None))["input_ids"].tolist()
    for position in ("after", "before"):
        teacher = render_prompt(bundle, s, teacher_view("hint", position))["input_ids"].tolist()
        assert len(teacher) > len(student)
        pre = next(i for i, (a, b) in enumerate(zip(student + [None], teacher)) if a != b)
        post = next(i for i, (a, b) in enumerate(zip(student[::-1] + [None], teacher[::-1])) if a != b)
        assert pre + post >= len(student)  # the student's ids are a prefix + suffix of the teacher's
        inserted = bundle.tokenizer.decode(teacher[pre:len(teacher) - post])
        assert s.hint.split("\n")[0][:20] in inserted
    no_hint = dataclasses.replace(s, hint=None)
    assert render_prompt(bundle, no_hint, teacher_view())["input_ids"].tolist() == student


def _traj(bundle, samples, n=3):
    from harness.rollout.hf import HFRolloutEngine

    return HFRolloutEngine(bundle, progress=False).generate(samples, SamplingParams(n=n, max_new_tokens=4, seed=0))


def _method(monkeypatch, accuracy, **kw):
    """A PTD-PO method on the smoke models whose accuracy function returns ``accuracy`` and whose
    teacher forward records the rows it scored."""
    from harness.distributed import Strategy
    from harness.models import load_model, smoke_model_path
    from methods.ptdpo import trainer as tr

    bundle = load_model(smoke_model_path("qwen3_vl"))
    method = tr.PTDPO(_cfg(**kw))
    method.accuracy_fn = lambda traj: torch.tensor(accuracy, dtype=torch.float32)
    calls: list[list[str]] = []
    real = tr.response_hidden_states

    def spy(model, traj, view, **k):
        calls.append([traj.sample_of(i).id for i in range(len(traj))])
        return real(model, traj, view, **k)

    monkeypatch.setattr(tr, "response_hidden_states", spy)
    ctx = SimpleNamespace(policy=bundle, strategy=Strategy("cpu"), cfg=method.cfg)
    method.setup(ctx)
    return method, bundle, ctx, calls


def test_teacher_forward_runs_only_on_routed_rows_with_a_hint(monkeypatch):
    from harness.data import load_training_set

    samples = [s for s in load_training_set("champ", "train", limit=4, instruction="think_boxed") if s.hint][:3]
    samples[2] = dataclasses.replace(samples[2], hint=None)
    # group 0: one success (informative), group 1: all fail, group 2: all fail but no hint
    acc = [1, 0, 0, 0, 0, 0, 0, 0, 0]
    method, bundle, ctx, calls = _method(monkeypatch, acc, tau_ptd=0.5)
    traj = _traj(bundle, samples)
    traj.rewards = 0.9 * torch.tensor(acc, dtype=torch.float32)
    metrics = method.prepare(traj, ctx, 0)
    alpha = traj.extras["alpha"]
    # tau 0.5: group 0 (rbar 1/3) routes its two failures, group 1 all three, group 2 none (no hint)
    assert alpha.tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0]
    assert calls == [[samples[0].id] * 2 + [samples[1].id] * 3]
    hidden = traj.extras["teacher_hidden"]
    assert hidden.shape[:2] == traj.response_ids.shape and hidden.shape[2] < 1000  # (B, T, H), not (B, T, V)
    assert torch.all(hidden[alpha == 0] == 0) and torch.any(hidden[alpha == 1] != 0)
    assert metrics["routed_frac"] == pytest.approx(5 / 9) and metrics["hinted_frac"] == pytest.approx(6 / 9)


def test_no_hint_means_no_teacher_forward_and_the_plain_optimiser(monkeypatch):
    from harness.data import load_training_set
    from harness.forward import policy_forward
    from harness.update import normalizers

    samples = [dataclasses.replace(s, hint=None) for s in load_training_set("champ", "train", limit=2)]
    method, bundle, ctx, calls = _method(monkeypatch, [0] * 6)
    traj = _traj(bundle, samples)
    traj.rewards = torch.zeros(6)
    method.prepare(traj, ctx, 0)
    assert calls == [] and not traj.extras["alpha"].any() and traj.extras["teacher_hidden"] is None
    fwd = policy_forward(bundle, traj, ("full",))
    loss, stats = method.loss(fwd, traj, normalizers(traj, ctx.strategy), 0)
    assert "ptd" not in stats and torch.isfinite(loss)


def test_a_sharded_reference_runs_as_many_teacher_forwards_on_every_rank(monkeypatch):
    """Under a sharded reference (shard_frozen; its forwards are collectives) a rank that routes
    fewer rows than another pads its teacher forward with repeats of one routed row (or row 0 when
    it routes none) up to the most any rank routes, and keeps only its own rows' hidden states."""
    from harness.data import load_training_set
    from methods.ptdpo import trainer as tr

    samples = [s for s in load_training_set("champ", "train", limit=4, instruction="think_boxed") if s.hint][:2]
    acc = [1, 0, 0, 1, 1, 1]  # group 0 routes its 2 failures, group 1 none
    method, bundle, ctx, calls = _method(monkeypatch, acc, tau_ptd=0.5)
    traj = _traj(bundle, samples)
    traj.rewards = 0.9 * torch.tensor(acc, dtype=torch.float32)
    method.prepare(traj, ctx, 0)
    plain = traj.extras["teacher_hidden"].clone()
    monkeypatch.setattr(tr, "is_sharded", lambda model: True)
    monkeypatch.setattr(tr, "reduce_floats", lambda strategy, values, op: [5.0] if op == "max" else values)
    calls.clear()
    method.prepare(traj, ctx, 0)
    assert calls == [[samples[0].id] * 5]  # 2 routed rows + 3 repeats: the other rank routes 5
    torch.testing.assert_close(traj.extras["teacher_hidden"], plain, atol=1e-5, rtol=1e-4)
    assert method._rows_to_score([], ctx) == [0] * 5


# ---------------------------------------------------------------- DAPO dynamic sampling

class _FakeEngine:
    """Rollouts whose text says whether they are correct: sample ``q<i>`` is solved by ``i % 3``
    of its 2 rollouts... capped at 2 (0: all fail, 1: informative, 2: all pass)."""

    def __init__(self):
        self.calls = 0

    def sync_weights(self, model):
        pass

    def generate(self, samples, sampling):
        self.calls += 1
        n, b = sampling.n, len(samples) * sampling.n
        texts = []
        for s in samples:
            solved = int(s.id[1:]) % 3
            texts += ["ok" if j < solved else "no" for j in range(n)]
        ids = torch.ones(b, 2, dtype=torch.long)
        return Trajectories(samples=list(samples), prompt_ids=ids, prompt_mask=ids, response_ids=ids,
                            response_mask=ids, old_logp=torch.zeros(b, 2),
                            group_ids=torch.arange(len(samples)).repeat_interleave(n), texts=texts)


def test_dynamic_sampling_keeps_informative_groups_and_refills():
    from methods.ptdpo.dynamic import DynamicSamplingEngine, informative_groups

    acc = lambda traj: torch.tensor([t == "ok" for t in traj.texts], dtype=torch.float32)  # noqa: E731
    pool = [Sample(id=f"q{i}", prompt="p", answer="a") for i in range(30)]
    inner = _FakeEngine()
    eng = DynamicSamplingEngine(inner, acc, pool, max_gen_batches=10)
    batch = [pool[0], pool[1], pool[3], pool[4]]  # two informative (q1, q4), two all-fail
    out = eng.generate(batch, SamplingParams(n=2, seed=7))
    assert len(out.samples) == 4 and out.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert informative_groups(acc(out), out.group_ids) == [0, 1, 2, 3]
    assert all(int(s.id[1:]) % 3 == 1 for s in out.samples) and inner.calls >= 2
    assert eng.last_stats["dapo_filled"] == 0
    # rounds run out: the batch is completed with filtered groups, and says so
    eng = DynamicSamplingEngine(_FakeEngine(), acc, [pool[0]], max_gen_batches=2)
    out = eng.generate([pool[0], pool[3]], SamplingParams(n=2, seed=7))
    assert len(out.samples) == 2 and eng.last_stats == {"dapo_gen_rounds": 2.0, "dapo_filled": 2.0}


# ---------------------------------------------------------------- runs

def test_smoke_run_moves_the_weights_through_the_ptd_term(tmp_path):
    """A smoke PTD-PO run (a random model fails every champ problem: zero advantages) changes the
    weights; with lambda_PTD = 0 the same run changes only through the reference KL, which is 0
    at the start, so the first step (no weight decay) leaves the weights as they were."""
    import safetensors.torch
    from harness.jsonl import read_jsonl
    from harness.models import smoke_model_path
    from methods.ptdpo.trainer import train

    init = safetensors.torch.load_file(str(smoke_model_path("qwen3_vl") / "model.safetensors"))
    final = train(_cfg(steps=2, save_every=2, weight_decay=0.0), tmp_path / "ptd")
    moved = safetensors.torch.load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(init[k], moved[k]) for k in init)
    recs = read_jsonl(tmp_path / "ptd" / "metrics.jsonl")
    assert all(r["routed_frac"] == 1.0 and r["ptd"] > 0 and r["reward_mean"] == 0 for r in recs)
    plain = train(_cfg(steps=1, save_every=1, lambda_ptd=0.0, weight_decay=0.0), tmp_path / "plain")
    still = safetensors.torch.load_file(str(plain / "model.safetensors"))
    assert all(torch.equal(init[k], still[k]) for k in init)


@pytest.mark.parametrize("optimizer", ["dapo", "gspo"])
def test_other_optimisers_run_on_the_visual_smoke_task(optimizer, tmp_path):
    """Table 4's optimisers on the synthetic visual task, whose hints are the generator's solution path."""
    from harness.jsonl import read_jsonl
    from methods.ptdpo.trainer import train

    cfg = _cfg(optimizer=optimizer, data="smoke-visual", steps=1, save_every=1, reward="smoke-even-majority",
               accuracy_reward="smoke-even-majority", max_gen_batches=2, freeze_vision=False)
    assert cfg.ratio_level == ("sequence" if optimizer == "gspo" else "token")
    assert train(cfg, tmp_path / optimizer) is not None
    (rec,) = read_jsonl(tmp_path / optimizer / "metrics.jsonl")
    assert rec["hinted_frac"] == 1.0 and ("dapo_gen_rounds" in rec) == (optimizer == "dapo")


# ---------------------------------------------------------------- configs and Table 3

def test_paper_profile_holds_every_table3_value():
    cfg = _cfg("paper")
    assert cfg.model == "Qwen/Qwen3-VL-4B-Thinking" and cfg.data == "virl39k"
    assert math.ceil(2 * 38_870 / cfg.prompts_per_step) == cfg.steps  # 2 epochs
    assert (cfg.lr, cfg.weight_decay, cfg.lr_schedule, cfg.warmup_steps) == (1e-6, 1e-2, "constant", 0)
    assert cfg.autocast == "bfloat16" and cfg.freeze_vision is False
    assert cfg.prompts_per_step == 384 and cfg.prompts_per_step // cfg.mini_batches_per_step == 128
    assert (cfg.top_p, cfg.num_generations, cfg.max_new_tokens) == (0.99, 8, 4096)
    assert cfg.kl_coef == 1e-2 and cfg.lambda_ptd in (5e-2, 5e-1) and cfg.tau_ptd == 1.0
    assert (cfg.trajectory_selection, cfg.divergence, cfg.top_k) == ("failed", "topk_jsd", 100)
    assert cfg.privileged == "hint" and cfg.optimizer == "grpo"
    from harness.reward_registry import make_reward_fn

    fn = make_reward_fn(cfg.reward)
    texts = ["<think>r</think> \\boxed{7}", "<think>r</think> \\boxed{8}", "\\boxed{7}", "none"]
    traj = SimpleNamespace(texts=texts, sample_of=lambda i: Sample("x", "q", answer="7"))
    assert fn(traj).tolist() == pytest.approx([1.0, 0.1, 0.9, 0.0], rel=1e-6)  # 0.1 format + 0.9 binary accuracy


def test_optimiser_presets_and_explicit_values():
    assert (_cfg(optimizer="dapo").clip_high, _cfg(optimizer="dapo").dynamic_sampling) == (0.28, True)
    g = _cfg(optimizer="gspo")
    assert (g.ratio_level, g.loss_agg, g.clip_low, g.clip_high) == ("sequence", "seq-mean-token-mean", 3e-4, 4e-4)
    assert _cfg(clip_high=0.5).clip_high == 0.5 and _cfg().clip_ratio_c == 3.0
    from harness.config import ConfigError

    for bad in ({"top_k": 0}, {"lambda_ptd": -1.0}, {"accuracy_reward": "nope"}, {"clip_ratio_c": 0.5}):
        with pytest.raises((ConfigError, ValueError)):
            _cfg(**bad)


@pytest.mark.slow
def test_smoke_run_resumes_bit_exactly_with_dynamic_sampling(tmp_path):
    """4 steps straight, and 2 + resume + 2, give identical weights and metrics (DAPO's extra
    questions are drawn from the step's seed, so a resumed run draws the same ones)."""
    import safetensors.torch
    from harness.jsonl import read_jsonl
    from methods.ptdpo.trainer import train

    cfg = _cfg(steps=4, save_every=2, optimizer="dapo", max_gen_batches=2)
    straight = train(cfg, tmp_path / "straight")
    assert train(cfg, tmp_path / "resumed", stop_after=2) is None
    resumed = train(cfg, tmp_path / "resumed")
    wa = safetensors.torch.load_file(str(straight / "model.safetensors"))
    wb = safetensors.torch.load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda recs: [{k: v for k, v in r.items() if not k.startswith("time")} for r in recs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))
