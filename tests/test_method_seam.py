"""The method seam: one policy forward per view gives the scorer's log-probs (values and
gradients); VOLD's loss and gradients are unchanged by moving its full-vocabulary KL onto the
update's forward; named objectives with a custom combine; the step index reaches the hooks and
survives a resume; reward-free methods; the sequence-level ratio; GKD's JSD(beta)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import losses
from harness.distributed import Strategy
from harness.forward import policy_forward
from harness.models import load_model, smoke_model_path
from harness.scoring import response_hidden_states, token_logprobs
from harness.trainer import OnlineMethod, online_step_builder
from harness.update import Normalizers, accumulate_update
from trainer_helpers import fixed_batch, forward_of, tiny_lm, visual_rollouts


@pytest.fixture(scope="module")
def student():
    return load_model(smoke_model_path("qwen2_5_vl"))


@pytest.fixture(scope="module")
def rollouts(student):
    return visual_rollouts(student, seed=3, sample_seed=1, max_new_tokens=6, rewards=[0.0, 1.0, 0.0, 0.0])


def param_grads(model: torch.nn.Module, value: torch.Tensor) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(value, list(params.values()), allow_unused=True, retain_graph=True)
    return {n: g for n, g in zip(params, grads) if g is not None}


def assert_grads_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert torch.allclose(a[n], b[n], atol=atol), f"{n}: {float((a[n] - b[n]).abs().max())}"


@pytest.mark.parametrize("view", ["full", "text_only"])
def test_the_per_view_forward_gives_the_scorers_log_probs_and_gradients(student, rollouts, view):
    fwd = policy_forward(student, rollouts, ("full", "text_only"))
    assert set(fwd) == {"full", "text_only"}
    ref = token_logprobs(student, rollouts, view, grad=True)
    got = fwd[view].logp
    assert got.dtype == torch.float32 and torch.allclose(got, ref, atol=1e-6)
    assert torch.all(got[rollouts.response_mask == 0] == 0)
    w = torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    assert_grads_close(param_grads(student.model, (got * w).sum()), param_grads(student.model, (ref * w).sum()), 1e-6)
    # the views differ (the image matters), so the test could tell them apart
    assert not torch.allclose(fwd["full"].logp, fwd["text_only"].logp, atol=1e-4)
    # entropy from the same hidden states, within [0, log V] on valid tokens
    h = fwd[view].entropy()
    v = student.model.get_output_embeddings().weight.shape[0]
    valid = rollouts.response_mask.bool()
    assert torch.all(h[valid] >= 0) and torch.all(h[valid] <= torch.log(torch.tensor(float(v))) + 1e-5)
    assert not h.requires_grad


@pytest.mark.parametrize("estimator", ["k2", "full_reverse", "full_forward"])
def test_vold_loss_and_gradients_unchanged_by_the_single_forward(student, rollouts, estimator):
    """The pre-seam VOLD computed logp with the scorer and, for full-vocabulary KL, a second
    student forward inside the loss; the seam computes both from one forward."""
    from methods.vold import load_stage_config
    from methods.vold.loss import FULL_ESTIMATORS, vold_loss
    from methods.vold.trainer import VOLD

    cfg = load_stage_config("rl", "smoke", {"teacher": str(smoke_model_path("qwen3")), "val_every": 0,
                                             "kl_estimator": estimator, "beta": 0.5})
    method = VOLD(cfg)
    ctx = SimpleNamespace(policy=student, strategy=Strategy("cpu"), cfg=cfg)
    method.setup(ctx)
    method.prepare(rollouts, ctx, 0)
    norm = Normalizers(global_tokens=float(rollouts.response_mask.sum()), global_seqs=float(len(rollouts)))
    new, _ = method.loss(policy_forward(student, rollouts, method.views), rollouts, norm, 0)

    logp = token_logprobs(student, rollouts, "full", grad=True)
    kw = {}
    if estimator in FULL_ESTIMATORS:
        hidden, weight = response_hidden_states(student, rollouts, "full", grad=True)
        kw["kl_tokens"] = losses.full_kl(losses.HiddenHead(hidden, weight),
                                         losses.HiddenHead(rollouts.extras["teacher_hidden"], method.teacher_weight),
                                         rollouts.response_mask, FULL_ESTIMATORS[estimator])
    else:
        kw["teacher_logp"] = rollouts.extras["teacher_logp"]
    old, _ = vold_loss(logp, rollouts.old_logp, rollouts.extras["advantages"], rollouts.rewards,
                       rollouts.response_mask, beta=0.5, estimator=estimator, global_tokens=norm.global_tokens,
                       global_seqs=norm.global_seqs, **kw)
    assert float(new) != 0.0
    assert abs(float(new) - float(old)) < 1e-6
    assert_grads_close(param_grads(student.model, new), param_grads(student.model, old), 1e-6)


def test_named_objectives_reach_combine_as_full_batch_gradients():
    """A combine that steps on 2x the gradient of objective ``a`` alone: the update must equal
    SGD on 2 * grad(a) over the whole batch, whatever the micro-batch size."""
    from harness.update import normalizers

    def loss_fn(fwd, mb, norm):
        lp = fwd["full"].logp
        a = losses.agg_loss(-lp * mb.extras["advantages"][:, None], mb.response_mask, global_tokens=norm.global_tokens)
        b = losses.agg_loss(lp.square(), mb.response_mask, global_tokens=norm.global_tokens)
        return {"a": a, "b": b}, {}

    seen = {}

    def combine(grads):
        seen.update({k: [g.clone() for g in v] for k, v in grads.items()})
        return [2 * g for g in grads["a"]], {"combine_calls": 1.0}

    batch = fixed_batch()
    ref_model = tiny_lm()
    norm = normalizers(batch, Strategy("cpu"))
    obj, _ = loss_fn(forward_of(ref_model)(batch), batch, norm)
    ref_a = torch.autograd.grad(obj["a"], list(ref_model.parameters()), retain_graph=True)
    ref_b = torch.autograd.grad(obj["b"], list(ref_model.parameters()))
    for micro in (8, 3):
        model = tiny_lm()
        before = [p.detach().clone() for p in model.parameters()]
        out = accumulate_update(model, torch.optim.SGD(model.parameters(), lr=1.0), Strategy("cpu"), batch,
                                forward_of(model), loss_fn, micro, None, combine=combine)
        for p0, p, g, ga, gb in zip(before, model.parameters(), ref_a, seen["a"], seen["b"]):
            assert torch.allclose(p0 - p.detach(), 2 * g, atol=1e-6)
        for g, ga in zip(ref_a, seen["a"]):
            assert torch.allclose(g, ga, atol=1e-6)
        for g, gb in zip(ref_b, seen["b"]):
            assert torch.allclose(g, gb, atol=1e-6)
        assert abs(out["obj_a"] - float(obj["a"])) < 1e-6 and abs(out["obj_b"] - float(obj["b"])) < 1e-6
        assert abs(out["loss"] - float(obj["a"] + obj["b"])) < 1e-6 and out["combine_calls"] == 1.0


class _Recorder:
    """GRPO that records the step index its hooks receive."""

    def __new__(cls, cfg, log):
        from methods.grpo.trainer import GRPO

        class Recording(GRPO):
            def prepare(self, traj, ctx, step):
                log.append(("prepare", step))
                return super().prepare(traj, ctx, step)

            def loss(self, fwd, mb, norm, step):
                log.append(("loss", step))
                return super().loss(fwd, mb, norm, step)

        return Recording(cfg)


def test_the_step_index_reaches_prepare_and_loss_and_is_restored_on_resume(tmp_path):
    from methods.grpo.config import PROFILES, GRPOConfig
    from methods.grpo.trainer import train
    from methods.registry import load_method_config

    cfg = load_method_config(GRPOConfig, PROFILES, "smoke", overrides={"steps": 4, "save_every": 1})
    first: list = []
    assert train(cfg, tmp_path / "run", method=_Recorder(cfg, first), stop_after=2) is None
    second: list = []
    assert train(cfg, tmp_path / "run", method=_Recorder(cfg, second)) is not None
    assert sorted({s for h, s in first if h == "prepare"}) == [0, 1]
    assert sorted({s for h, s in second if h == "prepare"}) == [2, 3]
    assert {s for h, s in second if h == "loss"} == {2, 3}


def test_a_method_that_needs_a_reward_refuses_to_run_without_one():
    from methods.grpo.config import GRPOConfig
    from methods.grpo.trainer import GRPO

    with pytest.raises(ValueError, match="needs a verifiable reward"):
        online_step_builder(GRPO(GRPOConfig(model="x", data="x")), None)

    class RewardFree(OnlineMethod):
        needs_reward = False

    online_step_builder(RewardFree(GRPOConfig(model="x", data="x")), None)  # accepted


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.floats(-3, 3), st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.integers(0, 2**16))
def test_sequence_level_ratio_equals_token_level_for_one_token_responses(b, adv_scale, lo, hi, seed):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(b, 1, generator=g) * 3).requires_grad_(True)
    old = logp.detach() + 0.5 * torch.randn(b, 1, generator=g)
    adv = adv_scale * torch.randn(b, generator=g)
    mask = torch.ones(b, 1)
    out = {}
    for level in losses.RATIO_LEVELS:
        value, _ = losses.policy_loss(logp, old, adv, mask, clip_low=lo, clip_high=hi, ratio_level=level)
        (grad,) = torch.autograd.grad(value, logp)
        out[level] = (value.detach(), grad)
    for level in ("sequence", "sequence-sum"):
        assert torch.allclose(out[level][0], out["token"][0], atol=1e-6)
        assert torch.allclose(out[level][1], out["token"][1], atol=1e-6)


def test_sequence_level_ratio_is_gspos_length_normalised_ratio():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    old = torch.tensor([[-1.1, -1.8, -0.7], [-0.2, -0.9, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    s = torch.stack([torch.exp(((logp[0] - old[0]).sum()) / 3), torch.exp((logp[1, :2] - old[1, :2]).sum() / 2)])
    clipped = torch.stack([torch.minimum(s * adv, s.clamp(0.8, 1.2) * adv)])[0]
    expect = -clipped.mean()
    value, _ = losses.policy_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.2, agg="seq-mean-token-mean",
                                  ratio_level="sequence")
    assert torch.allclose(value, expect, atol=1e-6)
    (g1,) = torch.autograd.grad(value, logp)
    (g2,) = torch.autograd.grad(expect, logp)
    assert torch.allclose(g1, g2, atol=1e-6)
    whole, _ = losses.policy_loss(logp, old, adv, mask, agg="seq-mean-token-mean", ratio_level="sequence-sum")
    assert not torch.allclose(whole, value)  # the whole-sequence ratio (VOLD Eq. 2 as written) differs


def _naive_gjsd(zs: torch.Tensor, zt: torch.Tensor, beta: float) -> torch.Tensor:
    p, q = zs.softmax(-1), zt.softmax(-1)
    m = beta * q + (1 - beta) * p
    return beta * (q * (q.log() - m.log())).sum(-1) + (1 - beta) * (p * (p.log() - m.log())).sum(-1)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.95), st.integers(0, 2**16), st.sampled_from([None, 1, 3]))
def test_generalised_jsd_matches_its_definition_in_value_and_gradient(beta, seed, chunk):
    g = torch.Generator().manual_seed(seed)
    zs = (2 * torch.randn(2, 3, 11, generator=g, dtype=torch.float64)).requires_grad_(True)
    zt = 2 * torch.randn(2, 3, 11, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    got = losses.jsd(zs, zt, mask, chunk, beta=beta)
    ref = _naive_gjsd(zs, zt, beta) * mask
    assert torch.allclose(got, ref, atol=1e-10)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((got * w).sum(), zs)
    (gb,) = torch.autograd.grad((ref * w).sum(), zs)
    assert torch.allclose(ga, gb, atol=1e-9)


def test_jsd_beta_end_points_and_midpoint():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(1, 4, 9, generator=g), torch.randn(1, 4, 9, generator=g)
    mask = torch.ones(1, 4)
    assert torch.allclose(losses.jsd(zs, zt, mask, beta=0.0), losses.full_kl(zs, zt, mask, "forward"))
    assert torch.allclose(losses.jsd(zs, zt, mask, beta=1.0), losses.full_kl(zs, zt, mask, "reverse"))
    assert torch.allclose(losses.jsd(zs, zt, mask), _naive_gjsd(zs, zt, 0.5), atol=1e-6)
    assert torch.allclose(losses._per_token(losses._generalized_jsd_kernel(0.5), zs, zt, mask, None),
                          losses.jsd(zs, zt, mask), atol=1e-6)
