"""Property tests of REOPOLD's objective (methods/reopold/loss.py; arXiv 2603.11137 Eqs. 3-10,
Remark 3.1, App. A.2; docs/methods/reopold.md §7, one test per listed property)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import losses
from methods.opd import loss as opd
from methods.reopold import loss as rl

SETTINGS = settings(max_examples=30, deadline=None)
V = 5


def batch(seed: int, B: int = 5, T: int = 6, spread: float = 2.0):
    """Random (logp leaf, old_logp, teacher_logp, response mask) in float64."""
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    old = logp.detach() + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    teacher = logp.detach() + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return logp, old, teacher, mask


def value_and_grad(logp: torch.Tensor, *args, **kw):
    loss, _ = rl.reopold_loss(logp, *args, **kw)
    (grad,) = torch.autograd.grad(loss, logp, allow_unused=True)
    return loss.detach(), torch.zeros_like(logp) if grad is None else grad


# ---- 1. Remark 3.1: the stop-gradient changes no expected gradient (exact enumeration) ----------

def _expected_grad(z: torch.Tensor, z_old: torch.Tensor, zt: torch.Tensor, stop_grad: bool) -> torch.Tensor:
    """sum_y pi_old(y) grad_z loss(y) of a one-token response, y enumerated over the vocabulary."""
    p_old = z_old.softmax(-1)
    total = torch.zeros_like(z)
    for y in range(V):
        logp = z.log_softmax(-1)[y].reshape(1, 1)
        old = z_old.log_softmax(-1)[y].reshape(1, 1)
        teacher = zt.log_softmax(-1)[y].reshape(1, 1)
        loss, _ = rl.reopold_loss(logp, old, teacher, torch.ones(1, 1), stop_grad=stop_grad, reward_clip=False,
                                  ppo_clip=False)
        (g,) = torch.autograd.grad(loss, z)
        total += p_old[y] * g
    return total


@SETTINGS
@given(seed=st.integers(0, 10_000), shift=st.floats(0.0, 1.0))
def test_stop_gradient_keeps_the_expected_gradient_remark_3_1(seed, shift):
    g = torch.Generator().manual_seed(seed)
    z_old = 1.5 * torch.randn(V, generator=g, dtype=torch.float64)
    zt = 1.5 * torch.randn(V, generator=g, dtype=torch.float64)
    z = (z_old + shift * torch.randn(V, generator=g, dtype=torch.float64)).requires_grad_(True)
    with_r = _expected_grad(z, z_old, zt, stop_grad=False)
    sg = _expected_grad(z, z_old, zt, stop_grad=True)
    assert torch.allclose(with_r, sg, atol=1e-12)
    if shift == 0.0:  # at z = z_old both are the gradient of KL(pi_theta || pi_T)
        zz = z.detach().clone().requires_grad_(True)
        kl = (zz.softmax(-1) * (zz.log_softmax(-1) - zt.log_softmax(-1))).sum()
        (exact,) = torch.autograd.grad(kl, zz)
        assert torch.allclose(sg, exact, atol=1e-12)
    # the identity is about expectations: per sample the two gradients differ
    y = int(z_old.argmax())
    lp, old, t = z.log_softmax(-1)[y].reshape(1, 1), z_old.log_softmax(-1)[y].reshape(1, 1), zt.log_softmax(-1)[y].reshape(1, 1)
    a = torch.autograd.grad(rl.reopold_loss(lp, old, t, torch.ones(1, 1), stop_grad=False, reward_clip=False,
                                            ppo_clip=False)[0], z, retain_graph=True)[0]
    b = torch.autograd.grad(rl.reopold_loss(lp, old, t, torch.ones(1, 1), reward_clip=False, ppo_clip=False)[0], z)[0]
    assert not torch.allclose(a, b)


# ---- 2. E_{y~pi_theta}[R] = -KL(pi_theta || pi_T) <= 0 ------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), same=st.booleans())
def test_expected_token_reward_is_minus_the_reverse_kl(seed, same):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(V, generator=g, dtype=torch.float64)
    zt = z.clone() if same else z + torch.randn(V, generator=g, dtype=torch.float64)
    lp, lt = z.log_softmax(-1), zt.log_softmax(-1)
    reward = opd.token_reward(lt[None], lp[None], torch.ones(1, V))[0]
    expected = (lp.exp() * reward).sum()
    kl = (lp.exp() * (lp - lt)).sum()
    assert torch.allclose(expected, -kl, atol=1e-12)
    assert expected <= 1e-12
    assert (abs(float(expected)) < 1e-12) == same


# ---- 3. Jensen bound of App. A.2 Eqs. 20-21 ---------------------------------------------------

@SETTINGS
@given(r=st.floats(-30.0, 10.0), lam=st.floats(0.01, 0.99))
def test_mixture_bound_is_above_the_reward_and_equal_only_at_zero(r, lam):
    reward = torch.tensor([r, r + 0.5], dtype=torch.float64)
    bound = rl.mixture_bound(reward, lam)
    assert float(bound[0]) >= r - 1e-12
    if abs(r) > 1e-3:
        assert float(bound[0]) > r
    assert float(bound[1]) > float(bound[0])  # strictly increasing in R
    # the printed form: log(((1-lam) pi_T + lam pi_S) / pi_S) / (1-lam), with pi_S = 0.3, pi_T = pi_S e^R
    pi_s = 0.3
    pi_t = pi_s * math.exp(r)
    printed = math.log(((1 - lam) * pi_t + lam * pi_s) / pi_s) / (1 - lam)
    assert math.isclose(float(bound[0]), printed, rel_tol=1e-9, abs_tol=1e-12)


def test_mixture_bound_tends_to_the_floor():
    for lam in (0.1, 0.3, 0.7):
        assert math.isclose(float(rl.mixture_bound(torch.tensor([-80.0], dtype=torch.float64), lam)),
                            rl.clip_floor(lam), rel_tol=1e-12)
    assert float(rl.mixture_bound(torch.tensor([0.0], dtype=torch.float64), 0.3)) == pytest.approx(0.0, abs=1e-15)


# ---- 4. The floor c_lambda ----------------------------------------------------------------------

@SETTINGS
@given(a=st.floats(1e-6, 0.999), b=st.floats(1e-6, 0.999))
def test_floor_is_below_minus_one_and_increasing(a, b):
    assert rl.clip_floor(a) < -1
    if a < b:
        assert rl.clip_floor(a) < rl.clip_floor(b)


def test_floor_limits_and_paper_value():
    assert rl.clip_floor(0.0) == -math.inf
    assert rl.clip_floor(1e-12) < -27
    assert rl.clip_floor(1 - 1e-9) == pytest.approx(-1.0, abs=1e-6)
    assert round(rl.clip_floor(0.3), 5) == -1.71996
    with pytest.raises(ValueError, match="lambda"):
        rl.clip_floor(1.0)


# ---- 5. The clipped reward and the per-token gradient -----------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), lam=st.floats(0.05, 0.95))
def test_clipped_reward_floor_identity_monotone_detached(seed, lam):
    g = torch.Generator().manual_seed(seed)
    r = (3 * torch.randn(40, generator=g, dtype=torch.float64)).requires_grad_(True)
    c = rl.clip_floor(lam)
    rhat = rl.clipped_reward(r, c)
    assert not rhat.requires_grad
    assert torch.all(rhat >= c)
    keep = r.detach() >= c
    assert torch.equal(rhat[keep], r.detach()[keep])
    order = r.detach().argsort()
    assert torch.all(rhat[order].diff() >= 0)


@SETTINGS
@given(seed=st.integers(0, 10_000), lam=st.floats(0.05, 0.95))
def test_gradient_per_token_is_minus_m_rho_rhat_over_sum_m(seed, lam):
    logp, old, teacher, mask = batch(seed, spread=3.0)
    g = torch.Generator().manual_seed(seed + 1)
    select = mask * torch.randint(0, 2, mask.shape, generator=g)
    _, grad = value_and_grad(logp, old, teacher, select, lam=lam, ppo_clip=False)
    rho = torch.exp(logp.detach() - old)
    rhat = (teacher - logp.detach()).clamp_min(rl.clip_floor(lam))
    expect = -select * rho * rhat / max(int(select.sum()), 1)
    assert torch.allclose(grad, expect, atol=1e-12)
    # a clipped token keeps the weight c_lambda (not 0)
    clipped = (select != 0) & ((teacher - logp.detach()) < rl.clip_floor(lam))
    if clipped.any():
        assert torch.allclose(grad[clipped], (-rho * rl.clip_floor(lam) / select.sum())[clipped])


# ---- 6. The normaliser -------------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), stop_grad=st.booleans(), ppo_clip=st.booleans())
def test_unselected_tokens_change_neither_loss_nor_gradient(seed, stop_grad, ppo_clip):
    logp, old, teacher, mask = batch(seed)
    g = torch.Generator().manual_seed(seed + 7)
    select = mask * torch.randint(0, 2, mask.shape, generator=g)
    kw = dict(stop_grad=stop_grad, ppo_clip=ppo_clip)
    v1, g1 = value_and_grad(logp, old, teacher, select, **kw)
    # append columns and a row of unselected tokens holding garbage (including inf / nan)
    extra = torch.full((logp.shape[0], 3), float("nan"), dtype=torch.float64)
    wide = torch.cat([logp, extra], 1)
    wide = torch.cat([wide, torch.full((1, wide.shape[1]), float("inf"), dtype=torch.float64)], 0)
    old_w = torch.nn.functional.pad(old, (0, 3), value=-1e9)
    old_w = torch.cat([old_w, torch.zeros(1, old_w.shape[1], dtype=torch.float64)], 0)
    t_w = torch.nn.functional.pad(teacher, (0, 3), value=float("-inf"))
    t_w = torch.cat([t_w, torch.zeros(1, t_w.shape[1], dtype=torch.float64)], 0)
    s_w = torch.cat([torch.nn.functional.pad(select, (0, 3)), torch.zeros(1, select.shape[1] + 3, dtype=select.dtype)], 0)
    wide = wide.detach().requires_grad_(True)
    v2, g2 = value_and_grad(wide, old_w, t_w, s_w, **kw)
    assert torch.allclose(v1, v2, atol=1e-12)
    assert torch.allclose(g1, g2[:-1, :-3], atol=1e-12)
    assert torch.all(g2[-1] == 0) and torch.all(g2[:, -3:] == 0)


@pytest.mark.parametrize("stop_grad", [True, False])
@pytest.mark.parametrize("global_selected", [None, 0])
def test_nothing_selected_is_zero_loss_and_zero_gradient(stop_grad, global_selected):
    logp, old, teacher, mask = batch(3)
    v, g = value_and_grad(logp, old, teacher, torch.zeros_like(mask), stop_grad=stop_grad,
                          global_selected=global_selected)
    assert v == 0 and torch.all(g == 0) and not torch.isnan(g).any()


def test_micro_batch_pieces_add_up_to_the_mini_batch_loss():
    logp, old, teacher, mask = batch(11, B=6)
    select = mask * (teacher > logp.detach() - 1).long()
    full, g_full = value_and_grad(logp, old, teacher, select)
    n = select.sum()
    pieces = [rl.reopold_loss(logp[i:i + 2], old[i:i + 2], teacher[i:i + 2], select[i:i + 2], global_selected=n)[0]
              for i in range(0, 6, 2)]
    total = sum(pieces)
    (g_sum,) = torch.autograd.grad(total, logp)
    assert torch.allclose(total.detach(), full, atol=1e-12) and torch.allclose(g_sum, g_full, atol=1e-12)


# ---- 7. Exploration: clipping is the identity on the selected tokens ---------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), lam=st.floats(0.05, 0.95), from_old=st.booleans())
def test_reward_clip_changes_nothing_in_exploration(seed, lam, from_old):
    logp, old, teacher, mask = batch(seed, spread=3.0)
    if not from_old:  # first update of a step: current policy = sampler
        old = logp.detach().clone()
    reward = teacher - old
    select = rl.selection_mask(0, reward=reward, entropy=None, mask=mask, lam=lam, beta=0.2, t_switch=5)
    kw = dict(lam=lam, reward_logp=old if from_old else None)
    on = value_and_grad(logp, old, teacher, select, reward_clip=True, **kw)
    off = value_and_grad(logp, old, teacher, select, reward_clip=False, **kw)
    assert torch.equal(on[0], off[0]) and torch.equal(on[1], off[1])
    assert torch.equal(select.bool(), (reward >= rl.clip_floor(lam)) & (mask != 0))


# ---- 8. The entropy mask ----------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), beta=st.floats(0.01, 1.0))
def test_entropy_mask_keeps_ceil_beta_n_and_is_rank_based(seed, beta):
    logp, old, teacher, mask = batch(seed, B=7, T=9)
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(mask.shape, generator=g, dtype=torch.float64) * 4  # distinct almost surely
    m = rl.entropy_mask(h, mask, beta)
    n = int(mask.sum())
    assert int(m.sum()) == math.ceil(beta * n - 1e-6)
    assert torch.all(m[mask == 0] == 0)
    kept, dropped = h[m.bool()], h[(m == 0) & (mask != 0)]
    if dropped.numel():
        assert kept.min() > dropped.max()
    for f in (torch.exp, lambda x: 3 * x + 1, torch.atan, torch.sqrt):
        assert torch.equal(rl.entropy_mask(f(h), mask, beta), m)
    # independent of the reward and of the teacher: the refinement mask ignores them
    a = rl.selection_mask(9, reward=teacher - old, entropy=h, mask=mask, lam=0.3, beta=beta, t_switch=3)
    b = rl.selection_mask(9, reward=-100 * torch.ones_like(old), entropy=h, mask=mask, lam=0.3, beta=beta, t_switch=3)
    assert torch.equal(a, m) and torch.equal(b, m)
    # masked-out tokens get no gradient
    _, grad = value_and_grad(logp, old, teacher, m)
    assert torch.all(grad[m == 0] == 0)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), beta=st.floats(0.01, 1.0), parts=st.integers(1, 4))
def test_bisection_threshold_over_ranks_equals_the_one_rank_threshold(seed, beta, parts):
    g = torch.Generator().manual_seed(seed)
    h = torch.rand(1, 40, generator=g) * 5
    h[0, :5] = h[0, 5]  # ties
    mask = torch.ones_like(h, dtype=torch.long)
    tau = float(rl.entropy_threshold(h, mask, beta))
    shards = list(h.flatten().tensor_split(parts))
    k = rl.top_count(h.numel(), beta)

    assert _bisect(shards, k) == tau


def _bisect(shards: list[torch.Tensor], k: int) -> float:
    """Run threshold_by_bisection in lock-step over simulated ranks (each reduce sums / mins /
    maxes the value every rank passes at that call)."""
    import threading

    n = len(shards)
    barrier = threading.Barrier(n)
    slots: list[float] = [0.0] * n
    results: list[float] = [0.0] * n

    def reducer(rank: int, op):
        def f(x: float) -> float:
            slots[rank] = x
            barrier.wait()
            out = op(slots)
            barrier.wait()
            return out
        return f

    def worker(rank: int) -> None:
        results[rank] = rl.threshold_by_bisection(shards[rank], k, reducer(rank, sum), reducer(rank, min),
                                                  reducer(rank, max))

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    return results[0]


# ---- 9. Reductions ----------------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_all_flags_off_is_j_rkl_and_stop_grad_only_is_j_rkl_sg(seed):
    logp, old, teacher, mask = batch(seed, spread=3.0)
    every = mask.to(torch.float64)
    v, g = value_and_grad(logp, old, teacher, every, stop_grad=False, reward_clip=False)
    ref = opd.rkl_sampled_loss(logp, old, teacher, mask)[0]
    (g_ref,) = torch.autograd.grad(ref, logp)
    assert torch.allclose(v, ref.detach(), atol=1e-12) and torch.allclose(g, g_ref, atol=1e-12)
    v, g = value_and_grad(logp, old, teacher, every, stop_grad=True, reward_clip=False)
    ref = opd.k1_reward_loss(logp, old, teacher, mask)[0]
    (g_ref,) = torch.autograd.grad(ref, logp)
    assert torch.allclose(v, ref.detach(), atol=1e-12) and torch.allclose(g, g_ref, atol=1e-12)
    # lambda = 0 (no floor), beta = 1, no schedule: the selection is every token and it is J_RKL^sg again
    h = torch.rand(mask.shape, dtype=torch.float64)
    sel = rl.selection_mask(0, reward=teacher - old, entropy=h, mask=mask, lam=0.0, beta=1.0, t_switch=10,
                            multistage=False)
    v0, g0 = value_and_grad(logp, old, teacher, sel, lam=0.0)
    assert torch.allclose(v0, ref.detach(), atol=1e-12) and torch.allclose(g0, g_ref, atol=1e-12)


@pytest.mark.parametrize("t_switch,steps,phases", [
    (0, 4, "RRRR"), (4, 4, "EEEE"), (10, 4, "EEEE"), (2, 4, "EERR"),
])
def test_schedule_phases(t_switch, steps, phases):
    got = "".join("E" if rl.in_exploration(k, t_switch, True) else "R" for k in range(steps))
    assert got == phases
    assert not any(rl.in_exploration(k, t_switch, False) for k in range(steps))


def test_selection_switches_at_t_switch_exactly():
    logp, old, teacher, mask = batch(5, spread=4.0)
    h = torch.rand(mask.shape, dtype=torch.float64)
    kw = dict(reward=teacher - old, entropy=h, mask=mask, lam=0.3, beta=0.2, t_switch=3)
    assert torch.equal(rl.selection_mask(2, **kw), rl.exploration_mask(teacher - old, mask, rl.clip_floor(0.3)))
    assert torch.equal(rl.selection_mask(3, **kw), rl.entropy_mask(h, mask, 0.2))
    assert not torch.equal(rl.selection_mask(2, **kw), rl.selection_mask(3, **kw))
    every = rl.selection_mask(3, **{**kw, "entropy": None}, entropy_sampling=False)
    assert torch.equal(every, mask.float())


# ---- 10. Aligned tokens -----------------------------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000))
def test_aligned_tokens_contribute_nothing(seed):
    logp, old, teacher, mask = batch(seed)
    aligned = torch.zeros_like(mask, dtype=torch.bool)
    aligned[:, ::2] = True
    teacher = torch.where(aligned, logp.detach(), teacher)
    sel = mask.to(torch.float64)
    _, g = value_and_grad(logp, old, teacher, sel, ppo_clip=False)
    assert torch.all(g[aligned] == 0)
    v_all, _ = value_and_grad(logp, old, teacher, sel, ppo_clip=False)
    only = sel * (~aligned)
    v_only, _ = value_and_grad(logp, old, teacher, only, ppo_clip=False, global_selected=sel.sum())
    assert torch.allclose(v_all, v_only, atol=1e-12)


# ---- 11. No teacher gradient ------------------------------------------------------------------

@pytest.mark.parametrize("stop_grad", [True, False])
def test_teacher_gets_no_gradient(stop_grad):
    logp, old, teacher, mask = batch(2)
    t = teacher.clone().requires_grad_(True)
    loss, _ = rl.reopold_loss(logp, old, t, mask.double(), stop_grad=stop_grad)
    g_t = torch.autograd.grad(loss, t, allow_unused=True)[0]
    assert g_t is None or torch.all(g_t == 0)
    same, _ = rl.reopold_loss(logp, old, teacher, mask.double(), stop_grad=stop_grad)
    assert torch.equal(loss.detach(), same.detach())


# ---- 12. Entropy bounds, chunked = unchunked --------------------------------------------------

@SETTINGS
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 7))
def test_entropy_bounds_and_chunking(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(2, 4, 11, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.long)
    h = losses.entropy(logits, mask)
    assert torch.all(h >= -1e-12) and torch.all(h <= math.log(11) + 1e-12)
    assert torch.allclose(losses.entropy(logits, mask, chunk_size=chunk), h, atol=1e-12)


def test_top_count_is_ceil_beta_n():
    assert [rl.top_count(10, b) for b in (0.7, 0.2, 0.21, 1.0, 0.01)] == [7, 2, 3, 10, 1]
    assert rl.top_count(0, 0.2) == 0


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="beta"):
        rl.top_count(10, 0.0)
    with pytest.raises(ValueError, match="exploration mask"):
        rl.exploration_mask(torch.zeros(1, 1), torch.ones(1, 1), -1.0, "bogus")  # type: ignore[arg-type]
    logp, old, teacher, mask = batch(0)
    with pytest.raises(ValueError, match="current policy"):
        rl.reopold_loss(logp, old, teacher, mask.double(), stop_grad=False, reward_logp=old)
