"""Plain on-policy distillation (methods.opd): the sampled-token losses have, in expectation, the
reverse-KL gradient (Monte Carlo on a small categorical, tolerance from the standard error); the
GKD losses are the full-vocabulary divergences; the method runs reward-free on the tiny models,
logs rewards when a reward is named, and its distance to the teacher falls."""
from __future__ import annotations

import json

import pytest
import torch

from harness import losses
from harness.distributed import Strategy
from harness.trainer import online_step_builder
from methods.opd import loss as opd

V, N = 6, 40_000


def _categorical(seed: int):
    g = torch.Generator().manual_seed(seed)
    z = (1.5 * torch.randn(V, generator=g, dtype=torch.float64)).requires_grad_(True)
    zt = 1.5 * torch.randn(V, generator=g, dtype=torch.float64)
    y = torch.multinomial(z.detach().softmax(-1), N, replacement=True, generator=g)
    return z, zt, y


def _exact_rkl_grad(z: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
    p, lp, lq = z.softmax(-1), z.log_softmax(-1), zt.log_softmax(-1)
    kl = (p * (lp - lq)).sum()
    (g,) = torch.autograd.grad(kl, z)
    return g


def _mc_grad(name: str, z: torch.Tensor, zt: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss's gradient w.r.t. the student's logits on N single-token samples, and the standard
    error of each component (the per-sample gradients' std / sqrt(N))."""
    lp_all = z.log_softmax(-1)
    logp = lp_all[y][:, None]
    old = logp.detach()
    teacher = zt.log_softmax(-1)[y][:, None]
    mask = torch.ones(N, 1)
    if name == "k1-reward":
        loss, _ = opd.k1_reward_loss(logp, old, teacher, mask)
    else:
        loss, _ = opd.rkl_sampled_loss(logp, old, teacher, mask)
    (g,) = torch.autograd.grad(loss, z)
    # per-sample gradient: -R_n (e_y - p) (+ (e_y - p) for the gradient through R), each / N
    p = z.detach().softmax(-1)
    r = (teacher - old).squeeze(1)
    score = torch.nn.functional.one_hot(y, V).double() - p
    coef = -r if name == "k1-reward" else (1 - r)
    per = coef[:, None] * score
    return g, per.std(0) / N ** 0.5


@pytest.mark.parametrize("name", ["k1-reward", "rkl-sampled"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_losses_have_the_reverse_kl_gradient_in_expectation(name, seed):
    z, zt, y = _categorical(seed)
    g, se = _mc_grad(name, z, zt, y)
    exact = _exact_rkl_grad(z, zt)
    assert torch.all((g - exact).abs() <= 5 * se + 1e-9), (g, exact, se)
    # the test can fail: the wrong sign is far outside the band
    assert not torch.all((-g - exact).abs() <= 5 * se + 1e-9)


def test_k1_reward_is_the_surrogate_with_the_detached_token_reward_as_advantage():
    g = torch.Generator().manual_seed(0)
    logp = (-torch.rand(3, 4, generator=g) * 2).requires_grad_(True)
    teacher = -torch.rand(3, 4, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    loss, _ = opd.k1_reward_loss(logp, logp.detach(), teacher, mask)
    (grad,) = torch.autograd.grad(loss, logp)
    expect = -(teacher - logp.detach()) * mask / mask.sum()
    assert torch.allclose(grad, expect, atol=1e-6)
    # the reward is detached: moving the teacher changes the gradient only through A
    assert torch.allclose(loss, -((teacher - logp.detach()) * mask).sum() / mask.sum(), atol=1e-6)


@pytest.mark.parametrize("divergence,direction", [("full-rkl", "reverse"), ("full-fkl", "forward")])
def test_gkd_losses_are_the_full_vocabulary_divergences(divergence, direction):
    g = torch.Generator().manual_seed(1)
    zs = torch.randn(2, 3, 7, generator=g, requires_grad=True)
    zt = torch.randn(2, 3, 7, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss, per_token = opd.gkd_loss(zs, zt, mask, divergence)
    ref = losses.full_kl(zs, zt, mask, direction)
    assert torch.allclose(per_token, ref) and torch.allclose(loss, ref.sum() / mask.sum())
    jloss, jtok = opd.gkd_loss(zs, zt, mask, "jsd", beta=0.3)
    assert torch.allclose(jtok, losses.jsd(zs, zt, mask, beta=0.3))
    with pytest.raises(ValueError, match="unknown GKD divergence"):
        opd.gkd_loss(zs, zt, mask, "tv")


def test_the_opd_losses_are_registered_by_name():
    for name in ("opd/k1-reward", "opd/rkl-sampled", "opd/gkd"):
        assert callable(losses.get_loss(name))


def _cfg(**kw):
    from methods.opd.config import PROFILES, OPDConfig
    from methods.registry import load_method_config

    return load_method_config(OPDConfig, PROFILES, "smoke", overrides=kw)


def test_opd_is_reward_free_and_needs_a_teacher():
    from harness.config import ConfigError
    from methods.opd.trainer import OPD

    online_step_builder(OPD(_cfg()), None)  # no reward function needed
    with pytest.raises((ConfigError, ValueError), match="teacher"):
        _cfg(teacher="")


@pytest.mark.parametrize("loss", ["k1-reward", "rkl-sampled", "full-rkl", "jsd"])
def test_opd_trains_on_the_tiny_models_and_logs_the_distance(loss, tmp_path):
    from methods.opd.trainer import train

    cfg = _cfg(loss=loss, steps=2, prompts_per_step=2, num_generations=2, max_new_tokens=4, save_every=2,
               reward=None if loss == "jsd" else "smoke-contains-answer")
    assert train(cfg, tmp_path / "run") is not None
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert r["rkl_full"] > 0 and "rkl_k1" in r and "token_reward" in r
        assert ("reward_mean" in r) == (loss != "jsd")
        if loss in ("full-rkl", "jsd"):
            assert r["divergence"] > 0


def test_smoke_teacher_is_a_real_distance_away():
    """The smoke teacher's per-token reverse KL from the smoke student is well above zero, so a
    falling distance in the smoke run means something."""
    from harness.data.synthetic import learnable
    from harness.models import load_model, load_teacher, smoke_model_path
    from harness.rollout.hf import HFRolloutEngine
    from harness.scoring import response_hidden_states
    from harness.types import SamplingParams

    student = load_model(smoke_model_path("qwen2_5_vl"))
    teacher = load_teacher(smoke_model_path("qwen3_teacher"), student)
    traj = HFRolloutEngine(student, progress=False).generate(learnable(4), SamplingParams(n=2, max_new_tokens=6, seed=0))
    hs, ws = response_hidden_states(student, traj)
    ht, wt = response_hidden_states(teacher, traj)
    kl = losses.full_kl(losses.HiddenHead(hs, ws), losses.HiddenHead(ht, wt), traj.response_mask)
    assert float(kl[traj.response_mask.bool()].mean()) > 0.5
    assert Strategy("cpu").world_size == 1


@pytest.mark.slow
def test_opd_smoke_run_resumes_bit_exactly(tmp_path):
    """``python -m methods.opd --profile smoke`` shortened: 4 steps straight, and 2 + resume + 2,
    give identical weights and metrics."""
    import safetensors.torch
    from harness.jsonl import read_jsonl
    from methods.opd.trainer import train

    cfg = _cfg(steps=4, save_every=2)
    straight = train(cfg, tmp_path / "straight")
    assert train(cfg, tmp_path / "resumed", stop_after=2) is None
    resumed = train(cfg, tmp_path / "resumed")
    wa = safetensors.torch.load_file(str(straight / "model.safetensors"))
    wb = safetensors.torch.load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda recs: [{k: v for k, v in r.items() if not k.startswith("time")} for r in recs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "straight" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "resumed" / "metrics.jsonl"))


def test_opd_trains_on_multi_turn_tool_rollouts(tmp_path):
    """With ``tools`` the loop samples through harness.rollout.multiturn; the step runs, and a
    config naming an unknown tool fails on load, naming the known ones."""
    from methods.opd.trainer import train

    cfg = _cfg(steps=1, prompts_per_step=2, num_generations=2, max_new_tokens=6, save_every=1,
               tools=["calculate", "crop_image"], max_tool_rounds=1)
    assert train(cfg, tmp_path / "run") is not None
    with pytest.raises(Exception, match="unknown tool 'zoom'; known: .*calculate"):
        _cfg(tools=["zoom"])
