"""REOPOLD (Relaxed On-Policy Distillation, arXiv 2603.11137) as pure tensor functions, registered
in ``harness.losses.LOSSES`` (``reopold/<name>``). Equation numbers are the paper's (arXiv v1);
docs/methods/reopold.md states them as implemented.

The student samples ``o ~ pi_old``; the teacher scores the same tokens in the same context. Per
response token, with ``lp^S = log pi_theta(o_t|h_t)`` and ``lp^T = log pi_T(o_t|h_t)``:

- token reward ``R = lp^T - lp^S`` (Eq. 3), stop-gradient (Remark 3.1), used as the per-token
  advantage of ``harness.losses.policy_loss``;
- mixture-based clipping ``Rhat = max(sg(R), c_lambda)``, ``c_lambda = log(lambda) / (1 - lambda)``
  (Eqs. 5, 7; lambda is the student's weight in the mixture ``(1-lambda) pi_T + lambda pi_theta``);
- a selection mask ``M``: exploration ``1[R >= c_lambda]`` for steps ``k < T_switch`` (Eq. 9),
  refinement ``1[H >= tau_beta]`` afterwards (Eq. 10), ``tau_beta`` the batch-level top-``beta``
  entropy threshold (Eq. 8); schedule Eq. 6;
- loss ``-sum M s(Rhat) / sum M`` (Eq. 4, ``s`` the PPO-clipped surrogate), 0 with zero gradient
  when no token is selected.

Module ablation (the paper's component table): ``stop_grad``, ``reward_clip``,
``entropy_sampling``, ``multistage``; all off is ``J_RKL`` (the gradient also flows through R).
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Union

import torch
from torch import Tensor

from harness import losses
from methods.opd.loss import token_reward

Number = Union[int, float, Tensor, None]
ExploreMask = Literal["floor", "positive", "all"]
EXPLORE_MASKS = ("floor", "positive", "all")


def clip_floor(lam: float) -> float:
    """``c_lambda = log(lambda) / (1 - lambda)`` (Eqs. 5, 7; App. A.2 Eq. 21 as ``R -> -inf``);
    ``-inf`` at ``lambda = 0`` (no clipping). ``lambda`` must be in ``[0, 1)``."""
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"lambda (the clipping coefficient) must be in [0, 1), got {lam}")
    return -math.inf if lam == 0.0 else math.log(lam) / (1.0 - lam)


def mixture_bound(reward: Tensor, lam: float) -> Tensor:
    """The right side of App. A.2 Eq. 21 in terms of ``R``:
    ``log((1 - lambda) e^R + lambda) / (1 - lambda)`` (Jensen: it bounds ``R`` from above, equal
    only at ``R = 0``; its limit as ``R -> -inf`` is ``c_lambda``). Computed with logaddexp."""
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lambda must be in (0, 1) for the mixture bound, got {lam}")
    a = torch.as_tensor(math.log1p(-lam), dtype=reward.dtype, device=reward.device)
    b = torch.as_tensor(math.log(lam), dtype=reward.dtype, device=reward.device)
    return torch.logaddexp(reward + a, b.expand_as(reward)) / (1.0 - lam)


def clipped_reward(reward: Tensor, floor: float) -> Tensor:
    """``Rhat = max(sg(R), c_lambda)`` (Eqs. 5, 7): detached, floored at ``c_lambda``."""
    return reward.detach().clamp_min(floor)


def exploration_mask(reward: Tensor, mask: Tensor, floor: float, rule: ExploreMask = "floor") -> Tensor:
    """Exploration-phase selection (Eq. 9): ``1[R >= c_lambda]`` on the response tokens (``floor``,
    the paper's); the ablation readings ``1[R > 0]`` (``positive``) and every token (``all``)."""
    valid = mask != 0
    if rule == "floor":
        keep = reward.detach() >= floor
    elif rule == "positive":
        keep = reward.detach() > 0
    elif rule == "all":
        keep = torch.ones_like(valid)
    else:
        raise ValueError(f"unknown exploration mask {rule!r}; expected one of {EXPLORE_MASKS}")
    return (keep & valid).to(torch.float32)


def top_count(n: int, beta: float) -> int:
    """How many of ``n`` tokens the top-``beta`` entropy selection keeps: ``ceil(beta * n)``
    (1e-6 is taken off first so that float noise, e.g. ``0.7 * 10 = 7.000000000000001``, does not
    add a token)."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta (the entropy top-percentile) must be in (0, 1], got {beta}")
    return min(n, max(0, math.ceil(beta * n - 1e-6)))


def entropy_threshold(entropy: Tensor, mask: Tensor, beta: float) -> Tensor:
    """``tau_beta`` of Eq. 8: the ``ceil(beta N)``-th largest entropy among the ``N`` valid tokens
    (no interpolation, so ``1[H >= tau]`` keeps exactly ``ceil(beta N)`` tokens when the entropies
    are distinct, more on ties). ``+inf`` when there is no valid token."""
    values = entropy.detach()[mask != 0]
    k = top_count(values.numel(), beta)
    if k == 0:
        return torch.tensor(math.inf, dtype=entropy.dtype, device=entropy.device)
    return torch.topk(values, k).values[-1]


def threshold_by_bisection(values: Tensor, k: int, reduce_sum: Callable[[float], float],
                           reduce_min: Callable[[float], float], reduce_max: Callable[[float], float],
                           iters: int = 200) -> float:
    """The largest ``tau`` with ``#{v >= tau} >= k`` over values spread across ranks, using only
    scalar all-reduces (``reduce_*`` of a local float). With one rank it is
    :func:`entropy_threshold`'s threshold up to float bisection (tests compare them)."""
    if k <= 0:
        return math.inf
    lo = reduce_min(float(values.min()) if values.numel() else math.inf)
    hi = reduce_max(float(values.max()) if values.numel() else -math.inf)
    # invariant: count(>= lo) >= k; count(>= hi') < k for hi' > hi
    if reduce_sum(float((values >= hi).sum())) >= k:
        return hi
    for _ in range(iters):
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            break
        if reduce_sum(float((values >= mid).sum())) >= k:
            lo = mid
        else:
            hi = mid
    # [lo, hi) now holds the k-th largest value and no other: snap to it (a real entropy)
    above = values[values >= lo]
    return reduce_min(float(above.min()) if above.numel() else math.inf)


def entropy_mask(entropy: Tensor, mask: Tensor, beta: float, threshold: Optional[Tensor | float] = None) -> Tensor:
    """Refinement-phase selection (Eqs. 8, 10): ``1[H >= tau_beta]`` on the response tokens;
    ``threshold`` given (e.g. computed over every rank's tokens) or :func:`entropy_threshold`."""
    tau = entropy_threshold(entropy, mask, beta) if threshold is None else threshold
    return ((entropy.detach() >= tau) & (mask != 0)).to(torch.float32)


def in_exploration(step: int, t_switch: int, multistage: bool) -> bool:
    """Eq. 6 with ``k`` counted from 0: exploration while ``k < T_switch`` (only with ``multistage``)."""
    return multistage and step < t_switch


def selection_mask(step: int, *, reward: Tensor, entropy: Optional[Tensor], mask: Tensor, lam: float,
                   beta: float, t_switch: int, multistage: bool = True, entropy_sampling: bool = True,
                   explore_rule: ExploreMask = "floor", threshold: Optional[Tensor | float] = None) -> Tensor:
    """``M^(k)`` of Eq. 6 as a float (B, T) mask. With ``multistage``: exploration mask for
    ``k < T_switch``, then the entropy mask (or every token, without ``entropy_sampling``).
    Without ``multistage``: the entropy mask at every step (or every token). ``entropy`` is only
    read when the entropy mask is used."""
    if in_exploration(step, t_switch, multistage):
        return exploration_mask(reward, mask, clip_floor(lam), explore_rule)
    if entropy_sampling:
        if entropy is None:
            raise ValueError("the entropy mask needs the student's token entropies")
        return entropy_mask(entropy, mask, beta, threshold)
    return (mask != 0).to(torch.float32)


@losses.register_loss("reopold/loss")
def reopold_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, select: Tensor, *, lam: float = 0.3,
                 stop_grad: bool = True, reward_clip: bool = True, ppo_clip: bool = True,
                 clip_low: float = 0.2, clip_high: float = 0.2, reward_logp: Optional[Tensor] = None,
                 global_selected: Number = None, token_weights: Optional[Tensor] = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
    """``-J_REOPOLD`` (Eq. 4) of one micro-batch, to be minimised.

    ``select`` is ``M`` (B, T), already multiplied by the response mask (:func:`selection_mask`);
    ``global_selected`` is ``sum M`` over the whole optimizer mini-batch (all micro-batches and
    ranks; ``None``: this call's own sum), so micro-batch pieces add up to the mini-batch loss.

    - ``stop_grad`` on: ``A = sg(R)`` (``R`` from ``reward_logp`` when given, e.g. ``pi_old``'s,
      else from ``logp``), floored at ``c_lambda`` with ``reward_clip``; the per-token loss is
      ``harness.losses.policy_loss``'s clipped surrogate (``ppo_clip``, eps ``clip_low`` /
      ``clip_high``) or ``-rho A`` without it. Gradient per token (no clip active):
      ``-M rho Rhat / sum M``.
    - ``stop_grad`` off: ``-rho R`` with the gradient also through ``R = lp^T - lp^theta``
      (``J_RKL`` of Eq. 3; with ``reward_clip``, ``max(R, c_lambda)``, whose gradient vanishes
      where the floor is active); no PPO clip, as the paper's RKL baseline.

    ``token_weights`` (B, T), the rollout-IS weights (harness.losses.rollout_is_weights), multiply
    the per-token term on every path (``policy_loss`` or ``_unclipped``); the normaliser is unchanged.

    Returns ``(loss, stats)``; stats are detached, over this call's selected tokens:
    ``clipped_frac`` (share with ``R < c_lambda``), ``reward`` (mean ``R``) and, with the PPO
    clip, ``policy_loss``'s ``pg_*`` stats."""
    floor = clip_floor(lam) if reward_clip else -math.inf
    sel = select.to(logp.dtype)
    selected = sel != 0
    if stop_grad:
        student = logp if reward_logp is None else reward_logp
        reward = token_reward(teacher_logp.detach(), student.detach(), select)
        adv = clipped_reward(reward, floor)
        if ppo_clip:
            loss, pg = losses.policy_loss(logp, old_logp, adv, sel, clip_low=clip_low, clip_high=clip_high,
                                          agg="token-mean", global_tokens=global_selected, token_weights=token_weights)
            stats = {f"pg_{k}": v for k, v in pg.items()}
        else:
            loss, stats = _unclipped(logp, old_logp, adv, sel, global_selected, token_weights=token_weights), {}
    else:
        if reward_logp is not None:
            raise ValueError("stop_grad=False puts the gradient through R = lp^T - lp^theta: R must use the "
                             "current policy (reward_logp=None)")
        reward = token_reward(teacher_logp.detach(), logp, select)
        value = torch.maximum(reward, torch.full_like(reward, floor)) if reward_clip else reward
        loss, stats = _unclipped(logp, old_logp, value, sel, global_selected, token_weights=token_weights), {}
    with torch.no_grad():
        n = selected.sum().clamp_min(1).to(logp.dtype)
        r = reward.detach()
        stats.update(clipped_frac=((r < floor) & selected).sum() / n,
                     reward=torch.where(selected, r, torch.zeros_like(r)).sum() / n)
    return loss, stats


@losses.register_loss("reopold/topk")
def reopold_topk_loss(student: losses.Side, teacher: losses.TopKTeacher, select: Tensor, *, lam: float,
                      reward_clip: bool = True, chunk_size: Optional[int] = None,
                      global_selected: Number = None, sampled_reward: Optional[Tensor] = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """``-J`` of "Reopold†" (REOPOLD App. D, Table 8: Reopold "using the full vocabulary or applying
    the Top-5 approximation"), to be minimised. The paper gives no formula; our reading [A]
    (docs/deviations.md) replaces Eq. 4's single-sample term ``rho_t Rhat_t`` by its exact
    expectation over the teacher's top-k tokens S_t at the sampled prefix h_t:

        r_t = sum_{v in S_t} p~(v|h_t) max( log q~(v|h_t) - log p~(v|h_t), c_lambda )
        loss = - sum_t M_t r_t / sum M

    with ``p~``, ``q~`` the student and teacher renormalised on S_t and the reward held constant in
    the gradient (stop-gradient, Remark 3.1): ``grad r_t = sum_v Rhat(v) grad p~(v)``
    (``harness.losses.topk_expected_reward``). The selection ``M`` (Eqs. 6, 8-10, from the sampled
    token) and its normaliser are REOPOLD's unchanged; no importance ratio is needed since no
    sampled token is reweighted (the prefix is the sampler's, as in GKD; so it takes no rollout-IS
    weights either). Properties (tests): with
    S the whole vocabulary and no floor, ``r_t = -KL(p || q)`` and the loss is the masked mean
    full-vocabulary reverse KL; it does not depend on the order of the vocabulary; its gradient
    vanishes where student and teacher agree on S.

    ``select`` is ``M`` (B, T) times the response mask; ``global_selected`` as ``reopold_loss``.
    Returns ``(loss, stats)``: ``reward`` (mean ``r_t`` over the selected tokens) and, when
    ``sampled_reward`` (the sampled token's ``R = lp^T - lp^theta``, B x T) is given,
    ``clipped_frac``: the share of selected tokens whose sampled-token ``R`` is below ``c_lambda``,
    the statistic ``reopold_loss`` reports, so the two rows of Table 8 log the same quantity."""
    floor = clip_floor(lam) if reward_clip else -math.inf
    r = losses.get_loss("topk_expected_reward")(student, teacher, select, floor, chunk_size)
    loss = losses.agg_loss(-r, select, "token-mean", global_tokens=global_selected)
    with torch.no_grad():
        selected = select != 0
        n = selected.sum().clamp_min(1).to(r.dtype)
        stats = {"reward": torch.where(selected, r.detach(), torch.zeros_like(r)).sum() / n}
        if sampled_reward is not None:
            stats["clipped_frac"] = ((sampled_reward.detach() < floor) & selected).sum() / n
    return loss, stats


def _unclipped(logp: Tensor, old_logp: Tensor, value: Tensor, sel: Tensor, global_selected: Number,
               token_weights: Optional[Tensor] = None) -> Tensor:
    """``-sum M w rho v / sum M`` with ``rho = exp(lp - lp^old)`` (gradient through ``rho`` and any
    gradient ``value`` carries) and ``w`` the optional ``token_weights`` (detached)."""
    valid = sel != 0
    zero = torch.zeros_like(logp)
    log_ratio = torch.where(valid, logp - old_logp.detach().to(logp.dtype), zero).clamp(-20.0, 20.0)
    per_token = -torch.exp(log_ratio) * torch.where(valid, value, zero)
    return losses.agg_loss(losses.weight_tokens(per_token, token_weights), sel, "token-mean",
                           global_tokens=global_selected)


__all__ = ["EXPLORE_MASKS", "clip_floor", "clipped_reward", "entropy_mask", "entropy_threshold", "exploration_mask",
           "in_exploration", "mixture_bound", "reopold_loss", "reopold_topk_loss", "selection_mask", "threshold_by_bisection",
           "top_count"]
