"""VOLD's objective as pure tensor functions (arXiv 2510.23497, "VOLD"; docs/methods/vold.md §3).

    Eq. 2   L_GRPO  = -E[(1/K) sum_i min(rho_i A_i, clip(rho_i, 1-eps_lo, 1+eps_hi) A_i)]
            (implemented with token-level ratios and token-mean aggregation, DAPO/verl; V3, V4)
    Eq. 3   L_RKL   = E_{tau~pi_theta}[ sum_t D(pi_phi(.|h_t), pi_theta(.|h_t)) ]
            estimated per token with k2 = 0.5 (log pi_theta(y_t) - log pi_phi(y_t))^2 on the token
            y_t the student sampled (§3.1: "we use the k2 estimator")
    Eq. 5   L_VOLD        = L_GRPO + beta * L_RKL
    Eq. 6   L_VOLD-masked = L_GRPO + beta * E[(1 - r(tau)) sum_t D(...)]     r in {0, 1}

Nothing here calls a model: the policy's log-probs ``logp`` carry the gradient, everything else
(old log-probs, advantages, rewards, the teacher's log-probs or logits) is data and is detached.
The full-vocabulary readings of Eq. 3 (reverse KL(pi_theta || pi_phi), forward KL(pi_phi ||
pi_theta)) enter as precomputed per-token values from ``harness.losses.full_kl``; see
docs/deviations.md (VOLD) for why k2 is the default and what its gradient is.
"""
from __future__ import annotations

from typing import Callable, Literal, Optional, Union

import torch
from torch import Tensor

from harness import losses
from harness.routing import failure_weights

__all__ = ["KLEstimator", "SAMPLED_ESTIMATORS", "FULL_ESTIMATORS", "KL_NORMS", "sampled_kl",
           "distillation_term", "distillation_weights", "vold_loss"]

KLEstimator = Literal["k2", "k1", "k3", "full_reverse", "full_forward"]
SAMPLED_ESTIMATORS = ("k1", "k2", "k3")
FULL_ESTIMATORS = {"full_reverse": "reverse", "full_forward": "forward"}
KL_NORMS = ("all-tokens", "failed-tokens")
Number = Union[int, float, Tensor, None]


def sampled_kl(logp: Tensor, teacher_logp: Tensor, mask: Tensor, estimator: str = "k2") -> Tensor:
    """Per-token Monte-Carlo estimate of Eq. 3's divergence on the student's sampled tokens, (B, T).

    ``k2 = 0.5 (logp - teacher_logp)^2`` is VOLD's estimator (§3.1, Schulman 2020). Its gradient with
    respect to ``logp`` is ``logp - teacher_logp``, and summed over the student's own samples it is
    exactly the gradient of the *reverse* KL(pi_theta || pi_phi) (docs/methods/vold.md §3). ``k1``/``k3``
    are the other estimators of ``harness.losses.kl_estimate``. 0 on padding; the teacher is detached.
    """
    if estimator not in SAMPLED_ESTIMATORS:
        raise ValueError(f"unknown sampled KL estimator {estimator!r}; expected one of {SAMPLED_ESTIMATORS}")
    if teacher_logp.shape != logp.shape:
        raise ValueError(f"teacher log-probs {tuple(teacher_logp.shape)} do not align with the student's "
                         f"{tuple(logp.shape)}: both must be (B, T) over the same response tokens")
    return losses.kl_estimate(logp, teacher_logp.detach(), estimator, mask=mask) * (mask != 0).to(logp.dtype)


def distillation_term(kl_tokens: Tensor, rewards: Tensor, mask: Tensor, *, masked: bool = True,
                      agg: str = "token-mean", norm: str = "all-tokens",
                      global_tokens: Number = None, global_seqs: Number = None, max_len: Optional[int] = None
                      ) -> Tensor:
    """The KL part of Eq. 5 / Eq. 6 (without beta) from per-token divergences ``kl_tokens`` (B, T).

    ``agg``: ``token-mean`` (default, V4) or ``seq-mean-token-sum`` (Eqs. 3-6 literally: a sum over
    the tokens of each rollout, averaged over rollouts), or any other ``harness.losses`` mode.
    ``norm`` (V5): with ``all-tokens`` (default, Eq. 6 read literally) masked rollouts contribute 0
    but still count in the denominator; with ``failed-tokens`` the denominator counts only the
    (weighted) tokens / rollouts of failed rollouts, so then the ``global_*`` counts must be the
    failed ones. ``global_*`` are the whole mini-batch's counts (harness.update.Normalizers), so
    the pieces of micro-batches sum to the mini-batch value.
    """
    w = distillation_weights(rewards, mask, masked=masked, agg=agg, norm=norm, global_tokens=global_tokens,
                             global_seqs=global_seqs, max_len=max_len, dtype=kl_tokens.dtype)
    return (torch.where(mask != 0, kl_tokens, torch.zeros_like(kl_tokens)) * w).sum()


def distillation_weights(rewards: Tensor, mask: Tensor, *, masked: bool = True, agg: str = "token-mean",
                         norm: str = "all-tokens", global_tokens: Number = None, global_seqs: Number = None,
                         max_len: Optional[int] = None, dtype: torch.dtype = torch.float64) -> Tensor:
    """Per-token weights w (B, T) of ``distillation_term``: it equals ``sum_{i,t} w kl_tokens`` (the
    term is linear in the divergences). ``all-tokens``: (1 - r_i) times ``agg_weights(mask)``;
    ``failed-tokens``: ``agg_weights`` of the mask weighted by (1 - r_i). The fused
    full-vocabulary losses take these as ``token_weights``."""
    if norm not in KL_NORMS:
        raise ValueError(f"unknown kl_mask_norm {norm!r}; expected one of {KL_NORMS}")
    w = failure_weights(rewards, masked).to(mask.device, dtype)[:, None]
    glob = dict(global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len, dtype=dtype)
    valid = (mask != 0).to(dtype)
    if norm == "all-tokens":
        return w * losses.agg_weights(valid, agg, **glob)
    # failed-tokens: the weighted mask is the denominator's count (agg_loss divides by sum of the mask).
    return losses.agg_weights(valid * w, agg, **glob)


def vold_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, rewards: Tensor, mask: Tensor, *,
              beta: float, teacher_logp: Optional[Tensor] = None,
              kl_tokens: Union[Tensor, Callable[[Tensor], losses.FusedLoss], None] = None,
              masked: bool = True, estimator: str = "k2", clip_low: float = 0.2, clip_high: float = 0.3,
              agg: str = "token-mean", ratio_level: str = "token", kl_agg: str = "token-mean", kl_norm: str = "all-tokens",
              global_tokens: Number = None, global_seqs: Number = None, max_len: Optional[int] = None,
              kl_global_tokens: Number = None, kl_global_seqs: Number = None,
              token_weights: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
    """VOLD's loss, to be minimised: Eq. 2 (GRPO, DAPO clip 0.2 / 0.3, no reference KL: §3.2
    "replaces the standard GRPO KL-divergence penalty") plus ``beta`` times the distillation term
    of Eq. 6 (``masked=True``, the paper's VOLD) or Eq. 5 (``masked=False``).

    The divergence per token is ``sampled_kl(logp, teacher_logp, mask, estimator)`` or, for the
    full-vocabulary readings, the given ``kl_tokens`` (e.g. ``harness.losses.full_kl``), or, for
    the fused path, a function of the term's ``distillation_weights`` returning a
    ``harness.losses.FusedLoss`` (e.g. ``lambda w: full_kl(..., token_weights=w)``). With
    ``beta == 0`` the result is the GRPO loss exactly (the distillation term is not evaluated).
    ``kl_global_*`` override ``global_*`` as the KL term's denominators (``kl_norm="failed-tokens"``).
    ``token_weights`` (B, T) (the rollout-IS weights, harness.losses.rollout_is_weights) weight the
    GRPO surrogate only; the distillation term is not an importance-weighted surrogate and is not.
    Returns ``(loss, stats)``: the policy-loss stats prefixed ``pg_``, plus ``kl`` (the term's
    value) and ``kl_token_mean`` (mean divergence over all valid tokens, unmasked; detached).
    """
    pg, pg_stats = losses.policy_loss(logp, old_logp, advantages, mask, clip_low=clip_low, clip_high=clip_high,
                                      agg=agg, ratio_level=ratio_level, global_tokens=global_tokens, global_seqs=global_seqs,
                                      max_len=max_len, token_weights=token_weights)
    stats = {f"pg_{k}": v for k, v in pg_stats.items()}
    if beta == 0:
        return pg, stats
    if (teacher_logp is None) == (kl_tokens is None):
        raise ValueError("give exactly one of teacher_logp (sampled estimator) or kl_tokens (full-vocabulary)")
    if kl_tokens is None:
        kl_tokens = sampled_kl(logp, teacher_logp, mask, estimator)
    term = dict(masked=masked, agg=kl_agg, norm=kl_norm,
                global_tokens=global_tokens if kl_global_tokens is None else kl_global_tokens,
                global_seqs=global_seqs if kl_global_seqs is None else kl_global_seqs, max_len=max_len)
    if callable(kl_tokens):
        fused = kl_tokens(distillation_weights(rewards, mask, **term))
        kl, kl_tokens = fused.loss, fused.values
    else:
        kl = distillation_term(kl_tokens, rewards, mask, **term)
    with torch.no_grad():
        valid = (mask != 0)
        stats["kl"] = kl.detach()
        stats["kl_token_mean"] = (kl_tokens.detach() * valid).sum() / valid.sum().clamp_min(1)
    return pg + beta * kl, stats
