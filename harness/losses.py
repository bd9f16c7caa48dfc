"""Loss primitives: pure tensor functions over per-token (B, T) tensors with a response mask.

No model calls happen here; methods compose these functions (see ``methods/``). Notation
follows ``docs/methods/README.md`` (shared notation). Papers cited in the docstrings:

- [VOLD]    000, "VOLD": Eq. 2 (GRPO surrogate), Eq. 3 (KL term, k2 estimator), Eq. 1 (entropy).
- [REOPOLD] 002: Eq. 4 (masked token mean), Eq. 8 (student entropy).
- [PTD-PO]  004: Eq. 1 (group advantage), Eq. 3 (GRPO), Eq. 13 (JSD), Eqs. 14-17 (top-K JSD
  with a tail bucket), App. D Eqs. 36, 38, 42 (logit gradients), Eqs. 59-63 (tail identity).
- [DAPO]    Yu et al. 2025, asymmetric clip ("clip-higher"), token-level loss.
- [Dr.GRPO] Liu et al. 2025, "Understanding R1-Zero-like training": unscaled advantages and
  a constant (max-length) normaliser.
- [Schulman 2020] "Approximating KL divergence" (k1, k2, k3).
- [TIS]     Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
  training": truncated importance sampling for the rollout-engine / trainer mismatch (verl's
  rollout IS, TRL's ``vllm_importance_sampling_*``, ms-swift's ``rollout_importance_sampling_*``).

Full-vocabulary quantities (``full_kl``, ``jsd``, ``topk_jsd``, ``entropy``) take each side as
logits ``(B, T, V)`` or as ``HiddenHead(hidden (B, T, H), weight (V, H))``; the top-k losses
(``teacher_topk_jsd``, ``topk_expected_reward``; REOPOLD App. D's "Top-5 approximation") take the
teacher as a ``TopKTeacher`` (its k ids and log-probs per token, from ``teacher_topk``). They are computed in
chunks of valid tokens (``CHUNK_BYTES``) and keep no ``N x V`` tensor. Two paths share the
kernels (closed-form logit gradients): the reference path returns per-token values and its
backward recomputes each chunk's logits; the fused path (``token_weights=`` a (B, T) tensor, e.g.
``agg_weights(mask, agg)``) returns ``FusedLoss(sum_t w_t value_t, values)`` with the gradients
with respect to ``hidden`` and ``weight`` formed during the forward, so its backward is a scaling.
Peak extra memory is O(chunk_size * V) plus the gradient buffers, independent of the number of
tokens. The teacher side never gets a gradient. At real vocabulary sizes the kernels run compiled
(``KERNEL_COMPILE``; the eager kernels are the reference). docs/design.md ("Full-vocabulary
losses", "Compiled kernels").
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Callable, Literal, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from harness.chunking import CHUNK_BYTES, tokens_per_chunk
from harness.errors import UnknownNameError

__all__ = [
    "AGG_MODES",
    "RATIO_LEVELS",
    "HiddenHead",
    "LOSSES",
    "agg_loss",
    "agg_weights",
    "CHUNK_BYTES",
    "COMPILE_MIN_VOCAB",
    "KERNEL_COMPILE",
    "entropy",
    "full_kl",
    "FusedLoss",
    "get_loss",
    "group_advantages",
    "jsd",
    "kl_estimate",
    "policy_loss",
    "register_loss",
    "ROLLOUT_IS_MODES",
    "rollout_is_weights",
    "TopKTeacher",
    "teacher_topk",
    "teacher_topk_jsd",
    "topk_expected_reward",
    "topk_jsd",
    "weight_tokens",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
RATIO_LEVELS = ("token", "sequence", "sequence-sum")
RatioLevel = Literal["token", "sequence", "sequence-sum"]
ROLLOUT_IS_MODES = ("none", "token_truncate", "token_mask")
RolloutISMode = Literal["none", "token_truncate", "token_mask"]

# verl-style registry (verl/trainer/ppo/core_algos.py): name -> function.
LOSSES: dict[str, Callable] = {}


def register_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding a function to ``LOSSES`` under ``name`` (names are unique)."""

    def deco(fn: Callable) -> Callable:
        if name in LOSSES and LOSSES[name] is not fn:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = fn
        return fn

    return deco


def get_loss(name: str) -> Callable:
    """The registered function called ``name``; the KeyError lists the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise UnknownNameError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


# --------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and 0 where den == 0 (then num is 0 too), with finite gradients."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def _as_tensor(x: Union[int, float, Tensor], like: Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


@register_loss("agg_loss")
def agg_loss(
    values: Tensor,
    mask: Tensor,
    agg: AggMode = "token-mean",
    *,
    global_tokens: Union[int, float, Tensor, None] = None,
    global_seqs: Union[int, float, Tensor, None] = None,
    max_len: Optional[int] = None,
) -> Tensor:
    """Reduce per-token ``values`` (B, T) to a scalar under ``mask`` (B, T) (0/1 or weights).

    Modes (docs/methods/README.md; verl ``agg_loss``), with m the mask and N the number of
    sequences that have at least one valid token (sum_t m > 0):

    - ``token-mean``:  sum_{i,t} m x / sum_{i,t} m  ([DAPO] token-level loss; [PTD-PO] code;
      with a weighted mask this is REOPOLD Eq. 4 / PTD-PO Eq. 11 "masked token mean").
    - ``seq-mean-token-mean``:  (1/N) sum_i (sum_t m x / sum_t m)  ([PTD-PO] Eq. 3 as written).
    - ``seq-mean-token-sum``:  (1/N) sum_i sum_t m x  ([VOLD] Eqs. 3-6 as written).
    - ``seq-mean-token-sum-norm``:  (1/N) sum_i sum_t m x / max_len  ([Dr.GRPO]: a fixed
      constant; ``max_len`` is required and never taken from the padded width T, so padding
      cannot change the value). verl's mode of this name omits the 1/N; ours is its per-sequence mean.

    Padding (m = 0) never contributes, even when ``values`` holds inf/NaN there, and sequences
    with no valid token are not counted in N. An all-masked input gives 0 with zero gradient.

    Global denominators (micro-batches / data parallelism). A loss computed per micro-batch with
    *local* counts and then averaged is not the full-batch loss when micro-batches hold
    different numbers of tokens (a known silent bug in RL frameworks: short-response
    micro-batches get too much weight). Pass ``global_tokens`` (sum of m over the whole
    mini-batch, all ranks) for ``token-mean`` and ``global_seqs`` (N over the whole mini-batch)
    for the ``seq-mean-*`` modes: each piece is then divided by the global count, and the
    **sum** of the pieces (over micro-batches and ranks) equals the full-batch value exactly.
    Pieces must split along the batch (sequence) axis. Under DDP, whose all-reduce averages
    gradients, multiply the piece by the world size. The argument a mode does not use is ignored.
    """
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must both be (B, T)")
    w = agg_weights(mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len,
                    dtype=values.dtype)
    return (torch.where(mask != 0, values, torch.zeros_like(values)) * w).sum()


def agg_weights(
    mask: Tensor,
    agg: AggMode = "token-mean",
    *,
    global_tokens: Union[int, float, Tensor, None] = None,
    global_seqs: Union[int, float, Tensor, None] = None,
    max_len: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
) -> Tensor:
    """The per-token weights w (B, T) of ``agg_loss``: ``agg_loss(x, mask, agg, ...) =
    sum_{i,t} w_{i,t} x_{i,t}`` for every x (the aggregation is linear in the values; its
    denominators depend on the mask only). With m the mask and N the sequences with sum_t m > 0:
    ``token-mean`` m / sum m; ``seq-mean-token-mean`` m / (N sum_t m); ``seq-mean-token-sum``
    m / N; ``seq-mean-token-sum-norm`` m / (N max_len); ``global_*`` replace the counts as in
    ``agg_loss``. 0 where m = 0 (all 0 for an all-masked input). The fused losses take these as
    ``token_weights`` (and cast them to their compute dtype). ``dtype`` defaults to float64: the
    weights are (B, T), cheap, and then exact enough for a float64 loss too."""
    if agg not in AGG_MODES:
        raise ValueError(f"unknown agg {agg!r}; expected one of {AGG_MODES}")
    if mask.dim() != 2:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T)")
    dtype = dtype or torch.float64
    m = torch.where(mask != 0, mask.to(dtype), torch.zeros((), dtype=dtype, device=mask.device))
    if agg == "token-mean":
        return _safe_div(m, m.sum() if global_tokens is None else _as_tensor(global_tokens, m))
    tokens_per_seq = m.sum(dim=-1, keepdim=True)
    if agg == "seq-mean-token-mean":
        w = _safe_div(m, tokens_per_seq)
    elif agg == "seq-mean-token-sum":
        w = m
    else:
        if max_len is None or max_len <= 0:
            raise ValueError("agg='seq-mean-token-sum-norm' needs max_len > 0 (Dr.GRPO's constant normaliser)")
        w = m / max_len
    den = (tokens_per_seq > 0).sum().to(dtype) if global_seqs is None else _as_tensor(global_seqs, m)
    return _safe_div(w, den)


# --------------------------------------------------------------------------------------
# Clipped surrogate
# --------------------------------------------------------------------------------------


@register_loss("policy_loss")
def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.3,
    agg: AggMode = "token-mean",
    *,
    clip_ratio_c: Optional[float] = None,
    ratio_level: RatioLevel = "token",
    global_tokens: Union[int, float, Tensor, None] = None,
    global_seqs: Union[int, float, Tensor, None] = None,
    max_len: Optional[int] = None,
    token_weights: Optional[Tensor] = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped policy-gradient surrogate, to be minimised ([VOLD] Eq. 2 and [PTD-PO] Eq. 3 with a
    token-level ratio; [DAPO] asymmetric clip; docs/methods/README.md):

        rho = exp(logp - old_logp),   per token  l = -min(rho A, clip(rho, 1-clip_low, 1+clip_high) A)

    then ``agg_loss(l, mask, agg, ...)``. ``advantages`` is (B,) (one per sequence, GRPO) or
    (B, T) (per token, e.g. REOPOLD's clipped token reward). ``old_logp`` and ``advantages`` are
    detached; the gradient flows through ``logp`` only. ``clip_ratio_c`` (> 1) turns on dual-clip
    PPO (Ye et al. 2020; EasyR1 default 3.0): for A < 0 the loss is capped at -A * clip_ratio_c.
    The log-ratio is clamped to [-20, 20] before exp (as verl does), so garbage never overflows.
    Padding may hold any values: they are replaced by 0 before any arithmetic.

    ``ratio_level`` chooses the importance ratio every token of response i uses (with
    L_i = sum_t m (logp - old_logp) and |y_i| = sum_t m):

    - ``token``: rho_{i,t} = exp(logp_t - old_logp_t) ([DAPO], verl; the default);
    - ``sequence``: s_i = exp(L_i / |y_i|), the length-normalised sequence ratio of GSPO
      (Zheng et al. 2025, arXiv 2507.18071); with ``agg="seq-mean-token-mean"`` this is GSPO's
      per-sequence objective exactly;
    - ``sequence-sum``: exp(L_i), the whole-sequence ratio pi_theta(y_i|q) / pi_old(y_i|q) of
      [VOLD] Eq. 2 as written (clamped like the token log-ratio; numerically degenerate for long
      responses, which is why token level is the default).

    The gradient flows through the whole sequence ratio into every token's log-prob. For a
    response of one token all three coincide.

    ``token_weights`` (B, T), optional, detached: multiply each token's surrogate before the
    aggregation (``weight_tokens``), e.g. the rollout-IS weights of ``rollout_is_weights`` ([TIS];
    verl multiplies ``pg_losses`` by them the same way). For w >= 0 this equals scaling the
    advantage by w (dual clip included); the normaliser (``agg`` and ``global_*``) is unchanged,
    so a masked token (w = 0) still counts in the denominator, as in verl. The stats ignore them.

    Returns ``(loss, stats)``; stats are detached 0-d tensors over the valid tokens of this call
    (local, not global): ``clipfrac`` (tokens where the clipped branch is active),
    ``clipfrac_low`` (A < 0 and rho < 1-clip_low), ``clipfrac_high`` (A > 0 and rho > 1+clip_high),
    ``dual_clipfrac``, ``ratio_mean``, ``ratio_min``, ``ratio_max``, ``approx_kl``
    (token mean of old_logp - logp, verl's ``ppo_kl``).
    """
    if not (0.0 <= clip_low < 1.0) or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if logp.shape != old_logp.shape or logp.shape != mask.shape or logp.dim() != 2:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, mask {tuple(mask.shape)} must be (B, T)")
    if advantages.dim() == 1:
        if advantages.shape[0] != logp.shape[0]:
            raise ValueError(f"advantages {tuple(advantages.shape)} does not match batch {logp.shape[0]}")
        advantages = advantages[:, None].expand_as(logp)
    elif advantages.shape != logp.shape:
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) or {tuple(logp.shape)}")
    valid = mask != 0
    zero = torch.zeros_like(logp)
    logp = torch.where(valid, logp, zero)
    old_logp = torch.where(valid, old_logp.detach().to(logp.dtype), zero)
    adv = torch.where(valid, advantages.detach().to(logp.dtype), zero)

    log_ratio = _log_ratio(logp - old_logp, valid, ratio_level).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    dual = torch.zeros_like(valid)
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1, got {clip_ratio_c}")
        cap = -adv * clip_ratio_c
        dual = (adv < 0) & (per_token > cap) & valid
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
    per_token = weight_tokens(per_token, token_weights)
    loss = agg_loss(per_token, mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len)

    with torch.no_grad():
        n = valid.sum().clamp_min(1).to(logp.dtype)
        v = valid.to(logp.dtype)
        r = ratio.detach()
        stats = {
            "clipfrac": ((clipped > unclipped) & valid).sum() / n,
            "clipfrac_low": ((adv < 0) & (r < 1.0 - clip_low) & valid).sum() / n,
            "clipfrac_high": ((adv > 0) & (r > 1.0 + clip_high) & valid).sum() / n,
            "dual_clipfrac": dual.sum() / n,
            "ratio_mean": (r * v).sum() / n,
            "ratio_min": torch.where(valid, r, torch.ones_like(r)).min(),
            "ratio_max": torch.where(valid, r, torch.ones_like(r)).max(),
            "approx_kl": ((old_logp - logp.detach()) * v).sum() / n,
        }
    return loss, stats


def weight_tokens(per_token: Tensor, token_weights: Optional[Tensor]) -> Tensor:
    """``per_token * sg(token_weights)`` (both (B, T)), the one place a per-token surrogate takes
    importance weights (``policy_loss``, OPD's ``rkl-sampled``, REOPOLD's unclipped path);
    ``None``: ``per_token`` itself, unchanged."""
    if token_weights is None:
        return per_token
    if token_weights.shape != per_token.shape:
        raise ValueError(f"token_weights {tuple(token_weights.shape)} must be {tuple(per_token.shape)} (B, T)")
    return per_token * token_weights.detach().to(per_token.dtype)


@register_loss("rollout_is_weights")
def rollout_is_weights(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor, mode: RolloutISMode = "token_truncate",
                       cap: float = 2.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token importance weights correcting the rollout engine / trainer mismatch ([TIS]):

        w_t = exp(old_logp_t - rollout_logp_t)   (pi_old of the trainer over the engine's sampler)

    with the log-ratio clamped to [-20, 20] before exp (as ``policy_loss``), then
    ``token_truncate``: min(w, cap) (TIS; verl's truncate mode, TRL's
    ``vllm_importance_sampling_cap``, ms-swift's ``token_truncate``) or ``token_mask``: w where
    w <= cap, else 0 (ms-swift's ``token_mask``, masked IS: the token is dropped);
    ``none``: 1 (diagnostics only). Returned (B, T) fp32, detached, 0 on padding (mask 0), so
    equal log-probs give exactly 1 on every valid token. ``cap`` > 0 (ms-swift's default 2.0).

    Stats (detached 0-d tensors over this call's valid tokens, local): ``logp_abs_diff`` (token
    mean |old_logp - rollout_logp|), ``weight_mean`` (of the returned weights), ``capped_frac``
    (share of tokens whose raw weight exceeds ``cap``: truncated or masked)."""
    if mode not in ROLLOUT_IS_MODES:
        raise ValueError(f"unknown rollout_is mode {mode!r}; expected one of {ROLLOUT_IS_MODES}")
    if not cap > 0:
        raise ValueError(f"rollout_is cap must be > 0, got {cap}")
    if old_logp.shape != rollout_logp.shape or old_logp.shape != mask.shape or old_logp.dim() != 2:
        raise ValueError(f"old_logp {tuple(old_logp.shape)}, rollout_logp {tuple(rollout_logp.shape)}, "
                         f"mask {tuple(mask.shape)} must be (B, T)")
    with torch.no_grad():
        valid = mask != 0
        zero = torch.zeros(old_logp.shape, dtype=torch.float32, device=old_logp.device)
        diff = torch.where(valid, old_logp.float() - rollout_logp.float().to(old_logp.device), zero)
        raw = torch.exp(diff.clamp(-20.0, 20.0))
        above = (raw > cap) & valid
        if mode == "token_truncate":
            w = raw.clamp(max=cap)
        elif mode == "token_mask":
            w = torch.where(above, zero, raw)
        else:
            w = torch.ones_like(raw)
        w = torch.where(valid, w, zero)
        n = valid.sum().clamp_min(1).float()
        stats = {"logp_abs_diff": diff.abs().sum() / n, "weight_mean": w.sum() / n, "capped_frac": above.sum() / n}
    return w, stats


def _log_ratio(diff: Tensor, valid: Tensor, level: str) -> Tensor:
    """Per-token log importance ratio of ``policy_loss`` at the given level, (B, T)."""
    if level == "token":
        return diff
    if level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {level!r}; expected one of {RATIO_LEVELS}")
    total = (diff * valid).sum(-1, keepdim=True)
    if level == "sequence":
        total = _safe_div(total, valid.sum(-1, keepdim=True).to(diff.dtype))
    return total.expand_as(diff)


# --------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------


def _group_index(group_ids: Union[Tensor, Sequence], device: torch.device) -> Tensor:
    if isinstance(group_ids, Tensor):
        ids = group_ids.to(device)
    else:  # any hashables, e.g. verl's uid strings
        codes: dict = {}
        ids = torch.tensor([codes.setdefault(g, len(codes)) for g in group_ids], device=device)
    return torch.unique(ids, return_inverse=True)[1]


@register_loss("group_advantages")
def group_advantages(
    rewards: Tensor,
    group_ids: Union[Tensor, Sequence],
    eps: float = 1e-6,
    scale: bool = True,
    unbiased: bool = True,
) -> Tensor:
    """GRPO group-normalised advantage ([PTD-PO] Eq. 1; [VOLD] Eq. 2; docs/methods/README.md):

        A_i = (r_i - mean_g r) / (std_g r + eps)         (scale=True)
        A_i =  r_i - mean_g r                            (scale=False: [Dr.GRPO] unscaled)

    over the rows sharing a group id (the rollouts of one prompt). ``unbiased`` picks the
    sample std (/(G-1), torch.std, verl/EasyR1's choice; default) or the population std (/G).
    A group whose rewards are all equal gets exactly 0 (it carries no learning signal), and so
    does a group of one (verl instead returns r for singletons). ``group_ids`` is a (B,) tensor or
    a sequence of hashables. Computed in float64; returned in the rewards' float dtype
    (float32 for integer/bool rewards). No gradient: rewards are data.
    """
    rewards = rewards.detach()
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (B,), got {tuple(rewards.shape)}")
    if len(group_ids) != rewards.shape[0]:
        raise ValueError(f"group_ids has {len(group_ids)} entries for {rewards.shape[0]} rewards")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    r = rewards.to(torch.float64)
    inv = _group_index(group_ids, r.device)
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    zeros = torch.zeros(n_groups, dtype=r.dtype, device=r.device)
    count = zeros.index_add(0, inv, torch.ones_like(r))
    mean = zeros.index_add(0, inv, r) / count
    centered = r - mean[inv]
    rmax = zeros.scatter_reduce(0, inv, r, "amax", include_self=False)
    rmin = zeros.scatter_reduce(0, inv, r, "amin", include_self=False)
    constant = (rmax == rmin)[inv]
    if scale:
        ss = zeros.index_add(0, inv, centered**2)
        dof = count - 1 if unbiased else count
        std = torch.sqrt(ss / dof.clamp_min(1))[inv]
        adv = centered / (std + eps)
    else:
        adv = centered
    return torch.where(constant, torch.zeros_like(adv), adv).to(out_dtype)


# --------------------------------------------------------------------------------------
# Sampled-token KL estimators
# --------------------------------------------------------------------------------------


@register_loss("kl_estimate")
def kl_estimate(
    logp: Tensor,
    ref_logp: Tensor,
    kind: Literal["k1", "k2", "k3"] = "k3",
    *,
    mask: Optional[Tensor] = None,
    clamp: Optional[float] = None,
) -> Tensor:
    """Per-token KL estimators on sampled tokens ([Schulman 2020]; docs/methods/README.md), with
    d = logp - ref_logp on a token sampled from the policy:

        k1 = d                 unbiased for KL(pi || ref), can be negative
        k2 = 0.5 d^2           >= 0, biased; [VOLD] Eq. 3's estimator. Its gradient
                               sum_y pi(y) grad k2(y) is exactly grad KL(pi || ref)
        k3 = exp(-d) - 1 + d   >= 0, unbiased for KL(pi || ref) (verl "low_var_kl")

    ``ref_logp`` (reference / teacher) is detached. ``mask`` zeroes padding *before* the
    arithmetic (so garbage there cannot produce inf/NaN gradients); ``clamp`` optionally clamps
    the result to [-clamp, clamp] (verl clamps k3 at 10). Returns (B, T) like ``logp``.
    """
    ref_logp = ref_logp.detach().to(logp.dtype)
    d = logp - ref_logp
    if mask is not None:
        d = torch.where(mask != 0, d, torch.zeros_like(d))
    if kind == "k1":
        k = d
    elif kind == "k2":
        k = 0.5 * d.square()
    elif kind == "k3":
        k = torch.expm1(-d) + d
    else:
        raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")
    if clamp is not None:
        k = k.clamp(-clamp, clamp)
    return k


# --------------------------------------------------------------------------------------
# Full-vocabulary quantities, chunked
# --------------------------------------------------------------------------------------


class HiddenHead(NamedTuple):
    """One side of a full-vocabulary loss given as final hidden states and the lm_head weight:
    logits = hidden @ weight.T, computed chunk by chunk, never for all tokens at once."""

    hidden: Tensor  # (B, T, H)
    weight: Tensor  # (V, H)


class TopKTeacher(NamedTuple):
    """The teacher side of a top-k loss given only as its k most probable token ids and their
    log-probabilities (under the teacher's full softmax) at each position: what a trainer keeps
    between scoring and update under the "top-k approximation" (k ids and k log-probs per token
    instead of V logits or H hidden states). Build it with ``teacher_topk``."""

    ids: Tensor  # (B, T, k) integer token ids, distinct per position
    logq: Tensor  # (B, T, k) log q(id), descending


Side = Union[Tensor, HiddenHead]
# A kernel maps fp logits of a chunk, student zs (c, V) and teacher zt (c, V) or None, to the
# per-token value (c,) and, when asked, d value / d zs (c, V).
Kernel = Callable[[Tensor, Optional[Tensor], bool], tuple[Tensor, Optional[Tensor]]]



# CHUNK_BYTES (harness.chunking, 128 MiB: 220 tokens at V = 151,936) sizes the automatic chunk: the
# number of tokens whose fp32 (chunk, V) logit buffer takes CHUNK_BYTES. A chunk holds two such
# buffers in the logits' dtype (the student's and the teacher's logits; the row-weighted logit
# gradient overwrites the student's, in that dtype); the kernels then run, eager or compiled
# (KERNEL_COMPILE), on blocks of rows of 1/16 of the budget, upcasting each block to fp32, so their
# few temporaries add about 5/16 of it (eager; compiled, inductor fuses most of them away). The
# working memory is therefore at most about 2.3 x CHUNK_BYTES whatever the number of tokens (plus,
# on the fused path, the gradients with respect to ``hidden`` and ``weight``; in bf16 the logit
# buffers take half). The bf16 weight-gradient blocks use the same budget.


def _auto_chunk(vocab: int) -> int:
    """Tokens per chunk so that one (chunk, V) fp32 buffer is ``CHUNK_BYTES`` (at least 1)."""
    return tokens_per_chunk(vocab, CHUNK_BYTES)


def _kernel_rows(vocab: int) -> int:
    """Rows per kernel block: one (block, V) fp32 buffer is ``CHUNK_BYTES / 16`` (at least 1)."""
    return max(1, CHUNK_BYTES // (64 * vocab))


def _compute_dtype(*ts: Optional[Tensor]) -> torch.dtype:
    dt = torch.float32
    for t in ts:
        if t is not None and t.dtype == torch.float64:
            dt = torch.float64
    return dt


def _chunk_logits(x: Tensor, w: Optional[Tensor], rows: Tensor) -> Tensor:
    """Logits of the given token rows, a fresh buffer the kernels may overwrite: x[rows] if x
    holds logits, else x[rows] @ w.T. In the inputs' dtype (a bf16 matmul stays bf16, like Liger);
    ``_apply_kernel`` upcasts."""
    xr = x.index_select(0, rows)
    return xr if w is None else xr @ w.t()


class _Sides(NamedTuple):
    """Flattened inputs of a chunked loss: the student (logits (N, V), or hidden (N, H) and
    weight (V, H)), the detached teacher (likewise, or a packed ``TopKTeacher`` (N, 2k)), the
    computed rows (mask != 0), the chunk size and (B, T)."""

    s_x: Tensor
    s_w: Optional[Tensor]
    t_x: Optional[Tensor]
    t_w: Optional[Tensor]
    rows: Tensor
    chunk: int
    bt: tuple[int, int]


# --------------------------------------------------------------------------------------
# Running a kernel: eager (the reference) or compiled (torch.compile / inductor)
# --------------------------------------------------------------------------------------

KERNEL_COMPILE: Literal["auto", "always", "never"] = "auto"
"""Whether the chunked and fused paths run their kernels compiled (``torch.compile``, inductor,
``dynamic=True`` so that chunks of any row count share one compiled kernel): ``"never"`` (the
eager kernels), ``"always"``, or ``"auto"``: compiled when the vocabulary has at least
``COMPILE_MIN_VOCAB`` entries (real vocabularies; the tests' small ones stay eager and pay no
compile time), except the top-K kernels, which compiling does not speed up (``_eager_under_auto``).
The bf16 -> fp32 accumulation of the weight gradient (``_accumulate_``) follows the same rule.
The environment variable ``VLMREPRO_COMPILE_KERNELS`` overrides it. Under ``auto`` a
compilation that fails (e.g. no C++ compiler) warns once and the kernels stay eager for the rest of
the process; under ``always`` it raises. The first call of each kernel (per input dtype) compiles it
(seconds to tens of seconds on a CPU; inductor caches the result on disk, so a later process
loads it). Compiled and eager kernels compute the same equations; they differ by fp rounding
(tests/test_compiled_kernels.py states the tolerances)."""

COMPILE_MIN_VOCAB = 32768
"""``KERNEL_COMPILE="auto"`` compiles the kernels from this vocabulary size on."""

_COMPILED: dict[Callable, Callable] = {}  # key (a kernel, or _accumulate_) -> its compiled wrapper
_COMPILE_BROKEN: list[str] = []  # the first compile failure under "auto" (then: eager for good)


def _compile_mode() -> str:
    """``$VLMREPRO_COMPILE_KERNELS`` or ``KERNEL_COMPILE``, validated."""
    mode = os.environ.get("VLMREPRO_COMPILE_KERNELS") or KERNEL_COMPILE
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"KERNEL_COMPILE / VLMREPRO_COMPILE_KERNELS must be 'auto', 'always' or 'never', got {mode!r}")
    return mode


def _use_compiled(vocab: int, pays: bool = True) -> bool:
    """The rule of ``KERNEL_COMPILE`` for a vocabulary of ``vocab`` entries; ``pays=False`` (the
    top-K kernels, see ``_eager_under_auto``) keeps a function eager under ``auto``."""
    mode = _compile_mode()
    return mode == "always" or (mode == "auto" and pays and vocab >= COMPILE_MIN_VOCAB and not _COMPILE_BROKEN)


def _owned(z: Tensor, dtype: torch.dtype) -> Tensor:
    """z in ``dtype`` for a kernel to work on in place. Eager: z itself when it has that dtype
    (the chunk's buffer is ours). Compiled: always a copy, which costs nothing there (the graph is
    functional), so the in-place kernels do not write their intermediate values back into z."""
    return z.to(dtype, copy=torch.compiler.is_compiling())


def _apply_kernel(kernel: Kernel, dtype: torch.dtype, zs: Tensor, zt: Optional[Tensor],
                  scale: Optional[Tensor]) -> Tensor:
    """The per-token values (c,) of ``kernel`` on the logits zs, zt (c, V) computed in ``dtype``;
    when ``scale`` (c,) is given, also ``scale_c * d value_c / d zs`` written into zs's buffer, in
    zs's dtype (the row weight and the downcast of a bf16 chunk done in the same pass)."""
    val, dz = kernel(_owned(zs, dtype), None if zt is None else _owned(zt, dtype), scale is not None)
    if scale is not None:
        zs.copy_(dz.mul_(scale[:, None]))  # a no-op copy when the eager kernel left dz in zs
    return val


def _compiled(key: Callable, fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=True)``, made once per ``key`` (the one compile wrapper: the
    kernels' ``_apply_kernel`` and the weight gradient's ``_accumulate_``). Each gets a code object
    of its own: dynamo keeps compiled graphs per code object, at most ``recompile_limit`` (8) of
    them, which the kernels together (x dtypes) would exceed."""
    got = _COMPILED.get(key)
    if got is None:
        def run(*args: object) -> object:
            return fn(*args)

        name = "".join(ch if ch.isalnum() else "_" for ch in getattr(key, "__qualname__", "fn"))
        run.__code__ = run.__code__.replace(co_name=f"compiled{name}")
        got = _COMPILED[key] = torch.compile(run, dynamic=True)
    return got


def _runner(key: Callable, fn: Callable, vocab: int) -> Callable:
    """``fn``, or its compiled variant when ``KERNEL_COMPILE`` says so for a vocabulary of
    ``vocab``; under ``auto`` a failed compilation falls back to eager with one warning."""
    if not _use_compiled(vocab, not getattr(key, "eager_under_auto", False)):
        return fn
    compiled, forced = _compiled(key, fn), _compile_mode() == "always"

    def run(*args: object) -> object:
        if _COMPILE_BROKEN and not forced:
            return fn(*args)
        try:
            return compiled(*args)
        except (torch.OutOfMemoryError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager function is the same one
            if forced:
                raise
            if not _COMPILE_BROKEN:
                _COMPILE_BROKEN.append(f"{type(e).__name__}: {e}")
                warnings.warn(f"harness.losses: compiling the loss kernels failed ({type(e).__name__}: "
                              f"{str(e)[:200]}); running them eager (KERNEL_COMPILE='never' silences this)",
                              RuntimeWarning, stacklevel=2)
            return fn(*args)

    return run


def _eager_under_auto(kernel: Kernel) -> Kernel:
    """Mark a kernel that ``KERNEL_COMPILE="auto"`` leaves eager: the top-K ones, whose time goes
    to ``torch.topk`` and gathers/scatters rather than fusable elementwise passes (at V = 151,936,
    220 rows, 2 CPU cores: the compiled top-100 JSD kernel took ~1.2x the eager one). ``always``
    compiles them too (the tests do)."""
    kernel.eager_under_auto = True
    return kernel


def _kernel_runner(kernel: Kernel, vocab: int) -> Callable:
    """run(dtype, zs, zt, scale) -> values: ``_apply_kernel`` for ``kernel``, eager or compiled."""
    return _runner(kernel, functools.partial(_apply_kernel, kernel), vocab)


def _accumulate_(dst: Tensor, src: Tensor, first: bool) -> None:
    """dst = src (``first``) or dst += src, in dst's dtype, in place (compiled: one pass; eager
    torch adds a bf16 tensor into an fp32 one ~10x slower than it copies it)."""
    if first:
        dst.copy_(src)
    else:
        dst.add_(src)


def _chunks(kernel: Kernel, sd: "_Sides", dtype: torch.dtype, scale: Optional[Tensor],
            visit: Callable[[int, Tensor, Tensor, Optional[Tensor]], None]) -> None:
    """Call ``visit(start, rows, values, dz)`` chunk by chunk with the kernel's per-token values
    (fp ``dtype``) and, when a per-row ``scale`` (n_rows,) is given, the scaled closed-form logit
    gradient ``scale_t d value_t / d z_s`` in the logits' dtype (else None). A callback, not a
    generator: a chunk's buffers are freed before the next chunk's logits are computed. Kernels
    run on row blocks of ``_kernel_rows`` rows, eager or compiled: the temporaries stay small, and
    a block's rows stay in the CPU's cache across the kernel's passes (compiled, a whole 220-row
    chunk at V = 151,936 ran 2-4x slower than its blocks)."""
    n = sd.rows.numel()
    step = -(-n // -(-n // sd.chunk)) if n else 1  # equal chunks of at most sd.chunk rows (no small last one)
    run = _kernel_runner(kernel, sd.s_w.shape[0] if sd.s_w is not None else sd.s_x.shape[1])
    for start in range(0, n, step):
        r = sd.rows[start:start + step]
        zs = _chunk_logits(sd.s_x, sd.s_w, r)
        zt = None if sd.t_x is None else _chunk_logits(sd.t_x, sd.t_w, r)
        sc = None if scale is None else scale[start:start + r.numel()]
        val = _blockwise(run, dtype, zs, zt, sc, _kernel_rows(zs.shape[1]))
        del zt
        visit(start, r, val, None if scale is None else zs)
        del val, zs


def _blockwise(run: Callable, dtype: torch.dtype, zs: Tensor, zt: Optional[Tensor], scale: Optional[Tensor],
               block: int) -> Tensor:
    """``run(dtype, zs, zt, scale)`` over blocks of ``block`` rows (the kernels are row-wise), so
    that its temporaries are block-sized; each block's scaled logit gradient lands in its rows of
    ``zs``. Returns the values (c,)."""
    if zs.shape[0] <= block:
        return run(dtype, zs, zt, scale)
    sl = lambda t, i: None if t is None else t[i:i + block]
    return torch.cat([run(dtype, zs[i:i + block], sl(zt, i), sl(scale, i)) for i in range(0, zs.shape[0], block)])


def _add_outer_(grad_w: Tensor, dz: Tensor, xr: Tensor, first: bool = False) -> None:
    """grad_w += dz.T @ xr in place (the weight gradient of logits = x @ W.T), or grad_w = dz.T @ xr
    when ``first`` (grad_w may then hold garbage: no zero-fill pass over the V x H buffer). Same
    dtypes: one ``addmm_`` (``mm`` into grad_w), no (V, H) temporary. A low-precision input (bf16 /
    fp16) with an fp32 buffer: the matmul runs in the input dtype (as the forward's) in blocks of
    vocabulary rows whose product fits ``CHUNK_BYTES``, each added (copied) into the fp32 buffer
    without an fp32 copy (``_accumulate_``, compiled by the ``KERNEL_COMPILE`` rule)."""
    if grad_w.dtype == xr.dtype:
        if first:
            torch.mm(dz.t(), xr, out=grad_w)
        else:
            grad_w.addmm_(dz.t(), xr)
        return
    step = max(1, CHUNK_BYTES // (xr.shape[1] * xr.element_size()))
    acc = _runner(_accumulate_, _accumulate_, grad_w.shape[0])
    for v0 in range(0, grad_w.shape[0], step):
        acc(grad_w[v0:v0 + step], dz[:, v0:v0 + step].t() @ xr, first)


def _map_grad_(dz: Tensor, r: Tensor, sd: "_Sides", grad_x: Optional[Tensor], grad_w: Optional[Tensor],
               first: bool) -> None:
    """Map a chunk's logit gradient dz (c, V) onto the student's inputs, in place:
    grad_x[r] += dz (logits) or dz @ W (hidden); grad_w += dz.T @ x[r] (= when ``first``, the
    first chunk: ``_grad_buffers`` leaves grad_w unset when there are rows)."""
    if sd.s_w is None:
        grad_x.index_add_(0, r, dz.to(grad_x.dtype))
        return
    dz = dz.to(sd.s_w.dtype)
    if grad_x is not None:
        grad_x.index_add_(0, r, dz @ sd.s_w)
    if grad_w is not None:
        _add_outer_(grad_w, dz, sd.s_x.index_select(0, r), first)


def _grad_buffers(sd: "_Sides", need_x: bool, need_w: bool, dtype: torch.dtype
                  ) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradient buffers: grad_x zeroed, in the input's dtype (each computed row is written once),
    grad_w in the compute dtype (fp32, or fp64) whatever the weight's dtype (it accumulates over
    chunks); grad_w is left unset when there are rows (the first chunk writes it, see
    ``_map_grad_``), zeroed when there are none."""
    grad_x = torch.zeros_like(sd.s_x) if need_x else None
    new = torch.empty if sd.rows.numel() else torch.zeros
    grad_w = new(sd.s_w.shape, dtype=dtype, device=sd.s_w.device) if (need_w and sd.s_w is not None) else None
    return grad_x, grad_w


class _ChunkedTokenFn(torch.autograd.Function):
    """Reference path. Per-token values of ``kernel`` over the rows of the flattened inputs,
    chunk by chunk. Saves only the inputs; backward recomputes each chunk's logits and maps the
    kernel's closed-form logit gradient, scaled by each token's incoming gradient, onto the
    student's hidden and weight (or logits). Teacher inputs get no gradient."""

    @staticmethod
    def forward(ctx, kernel: Kernel, chunk_size: int, rows: Tensor, s_x: Tensor, s_w: Optional[Tensor],
                t_x: Optional[Tensor], t_w: Optional[Tensor]) -> Tensor:
        sd = _Sides(s_x, s_w, t_x, t_w, rows, chunk_size, (0, 0))
        dtype = _compute_dtype(s_x, s_w, t_x, t_w)
        out = torch.empty(rows.numel(), dtype=dtype, device=s_x.device)
        _chunks(kernel, sd, dtype, None, lambda start, r, val, _: out[start:start + r.numel()].copy_(val))
        ctx.kernel, ctx.chunk_size, ctx.dtype = kernel, chunk_size, dtype
        ctx.save_for_backward(rows, s_x, s_w, t_x, t_w)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        rows, s_x, s_w, t_x, t_w = ctx.saved_tensors
        sd = _Sides(s_x, s_w, t_x, t_w, rows, ctx.chunk_size, (0, 0))
        grad_x, grad_w = _grad_buffers(sd, ctx.needs_input_grad[3], ctx.needs_input_grad[4], ctx.dtype)
        if grad_x is None and grad_w is None:
            return None, None, None, None, None, None, None
        g = grad_out.to(ctx.dtype)
        _chunks(ctx.kernel, sd, ctx.dtype, g, lambda start, r, _, dz: _map_grad_(dz, r, sd, grad_x, grad_w, start == 0))
        if grad_w is not None:
            grad_w = grad_w.to(s_w.dtype)
        return None, None, None, grad_x, grad_w, None, None


class _FusedTokenFn(torch.autograd.Function):
    """Fused path (as Liger's fused linear cross-entropy): ``loss = sum_t w_t value_t`` over the
    rows, with the gradients with respect to the student's hidden and weight (or logits) computed
    during the forward from each chunk's closed-form logit gradient (grad_x rows = w dz @ W,
    grad_w += (w dz).T @ x in place in one fp32 buffer). No logits are recomputed: the backward
    only scales the two buffers by the incoming gradient, once (no ``retain_graph`` replay).
    Returns ``(loss, values)``; the per-token values are not differentiable."""

    @staticmethod
    def forward(ctx, kernel: Kernel, chunk_size: int, rows: Tensor, weights: Tensor, need_x: bool, need_w: bool,
                s_x: Tensor, s_w: Optional[Tensor], t_x: Optional[Tensor], t_w: Optional[Tensor]):
        sd = _Sides(s_x, s_w, t_x, t_w, rows, chunk_size, (0, 0))
        dtype = _compute_dtype(s_x, s_w, t_x, t_w)
        grad_x, grad_w = _grad_buffers(sd, need_x, need_w, dtype)
        grad = grad_x is not None or grad_w is not None
        wt = weights.to(dtype)
        vals = torch.empty(rows.numel(), dtype=dtype, device=s_x.device)

        def visit(start: int, r: Tensor, val: Tensor, dz: Optional[Tensor]) -> None:
            vals[start:start + r.numel()] = val
            if grad:
                _map_grad_(dz, r, sd, grad_x, grad_w, start == 0)

        _chunks(kernel, sd, dtype, wt if grad else None, visit)
        ctx.mark_non_differentiable(vals)
        ctx.save_for_backward(grad_x, grad_w)
        ctx.w_dtype, ctx.used = None if s_w is None else s_w.dtype, False
        return (wt * vals).sum(), vals

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_vals: Optional[Tensor]):
        if ctx.used:
            raise RuntimeError("a fused loss's backward runs once (its gradient buffers are scaled in place)")
        ctx.used = True
        grad_x, grad_w = ctx.saved_tensors
        g = grad_loss.reshape(())
        # the usual case (loss.backward()): no scaling pass over the buffers; checked on the CPU only
        # (on an accelerator the check would synchronise the device, and the pass is cheap there)
        one = g.device.type == "cpu" and bool(g == 1)
        if grad_x is not None and not one:
            grad_x = grad_x.mul_(g.to(grad_x.dtype))
        if grad_w is not None:
            if not one:
                grad_w = grad_w.mul_(g.to(grad_w.dtype))
            grad_w = grad_w.to(ctx.w_dtype)  # (torch.mul(out=bf16) would allocate an fp32 temporary)
        return None, None, None, None, None, None, grad_x, grad_w, None, None


def _flatten(side: Side, name: str, detach: bool) -> tuple[Tensor, Optional[Tensor], int, tuple[int, int]]:
    """(x (N, V or H), weight or None, V, (B, T)) of one side."""
    if isinstance(side, HiddenHead):
        h, w = side.hidden, side.weight
        if h.dim() != 3 or w.dim() != 2 or h.shape[-1] != w.shape[1]:
            raise ValueError(f"{name}: hidden {tuple(h.shape)} must be (B, T, H) and weight {tuple(w.shape)} (V, H)")
        if detach:
            h, w = h.detach(), w.detach()
        return h.reshape(-1, h.shape[-1]), w, w.shape[0], (h.shape[0], h.shape[1])
    if not isinstance(side, Tensor) or side.dim() != 3:
        raise ValueError(f"{name}: expected logits (B, T, V) or HiddenHead(hidden, weight)")
    x = side.detach() if detach else side
    return x.reshape(-1, x.shape[-1]), None, x.shape[-1], (x.shape[0], x.shape[1])


def _sides(student: Side, teacher: Union[Side, TopKTeacher, None], mask: Tensor, chunk_size: Optional[int]) -> _Sides:
    """Validate and flatten the inputs of a chunked loss (see ``_Sides``)."""
    s_x, s_w, v, bt = _flatten(student, "student", detach=False)
    t_x = t_w = None
    if isinstance(teacher, TopKTeacher):
        ids, logq = teacher.ids.detach(), teacher.logq.detach()
        if ids.shape != logq.shape or ids.dim() != 3 or tuple(ids.shape[:2]) != bt:
            raise ValueError(f"TopKTeacher ids {tuple(ids.shape)} and logq {tuple(logq.shape)} must be (B, T, k) "
                             f"with (B, T) = {bt}")
        if ids.numel() and (int(ids.max()) >= v or int(ids.min()) < 0):
            raise ValueError(f"TopKTeacher ids must be in [0, {v})")
        # packed (N, 2k): ids as floats (exact below 2**24), then log-probs; the kernel unpacks
        pack = torch.float64 if logq.dtype == torch.float64 else torch.float32
        t_x = torch.cat([ids.to(pack), logq.to(pack)], -1).reshape(-1, 2 * ids.shape[-1])
    elif teacher is not None:
        t_x, t_w, tv, tbt = _flatten(teacher, "teacher", detach=True)
        if tv != v or tbt != bt:
            raise ValueError(f"student (B, T, V) = {(*bt, v)} and teacher {(*tbt, tv)} differ")
    if tuple(mask.shape) != bt:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T) = {bt}")
    chunk = chunk_size or _auto_chunk(v)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = (mask.reshape(-1) != 0).nonzero().squeeze(1).to(s_x.device)
    return _Sides(s_x, s_w, t_x, t_w, rows, chunk, bt)


class FusedLoss(NamedTuple):
    """What a full-vocabulary loss returns when given ``token_weights`` (the fused path)."""

    loss: Tensor  # 0-d: sum_t token_weights_t * value_t over the tokens with mask != 0
    values: Tensor  # (B, T) per-token values, detached, 0 on padding


def _per_token(kernel: Kernel, student: Side, teacher: Union[Side, TopKTeacher, None], mask: Tensor,
               chunk_size: Optional[int], token_weights: Optional[Tensor] = None) -> Union[Tensor, FusedLoss]:
    """Per-token values (B, T) through the reference path, or, with ``token_weights`` (B, T),
    ``FusedLoss(sum_t w_t value_t, values)`` through the fused path."""
    sd = _sides(student, teacher, mask, chunk_size)
    n = sd.bt[0] * sd.bt[1]
    if token_weights is None:
        vals = _ChunkedTokenFn.apply(kernel, sd.chunk, sd.rows, sd.s_x, sd.s_w, sd.t_x, sd.t_w)
        return torch.zeros(n, dtype=vals.dtype, device=vals.device).index_put((sd.rows,), vals).view(sd.bt)
    if tuple(token_weights.shape) != sd.bt:
        raise ValueError(f"token_weights {tuple(token_weights.shape)} must be (B, T) = {sd.bt}")
    grad = torch.is_grad_enabled()
    need_x = grad and sd.s_x.requires_grad
    need_w = grad and sd.s_w is not None and sd.s_w.requires_grad
    w_rows = token_weights.detach().reshape(-1).to(sd.s_x.device).index_select(0, sd.rows)
    loss, vals = _FusedTokenFn.apply(kernel, sd.chunk, sd.rows, w_rows, need_x, need_w, *sd[:4])
    return FusedLoss(loss, torch.zeros(n, dtype=vals.dtype, device=vals.device).index_put((sd.rows,), vals).view(sd.bt))


def _log_softmax_(z: Tensor) -> Tensor:
    """In-place log-softmax over the last dim (z is a fresh per-chunk buffer we own; the fused
    ``torch.log_softmax`` and a copy are ~2x faster than logsumexp and a subtraction)."""
    return z.copy_(torch.log_softmax(z, -1))


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """sum_v a[c, v] b[c, v] without a (c, V) temporary (compiled: a fused product-sum)."""
    if torch.compiler.is_compiling():
        return (a * b).sum(-1)
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


# Kernels work in place on the chunk's logit buffers to keep few (c, V) buffers alive at once.

def _kl_reverse_kernel(zs: Tensor, zt: Tensor, grad: bool):
    lp, lq = _log_softmax_(zs), _log_softmax_(zt)
    p = lp.exp()
    neg_diff = lq.sub_(lp)  # log q - log p
    val = -_rowdot(p, neg_diff)
    if not grad:
        return val, None
    return val, neg_diff.add_(val[:, None]).mul_(p).neg_()  # p (log p - log q - KL): [PTD-PO] Eq. 38


def _kl_forward_kernel(zs: Tensor, zt: Tensor, grad: bool):
    lp, lq = _log_softmax_(zs), _log_softmax_(zt)
    q = lq.exp()
    val = _rowdot(q, lq.sub_(lp))
    return val, (lp.exp_().sub_(q) if grad else None)  # p - q: [PTD-PO] Eq. 36


def _entropy_kernel(zs: Tensor, zt: None, grad: bool):
    lp = _log_softmax_(zs)
    p = lp.exp()
    val = -_rowdot(p, lp)
    return val, (lp.add_(val[:, None]).mul_(p).neg_() if grad else None)  # -p (log p + H)


def _topk_support(zs: Tensor, zt: Tensor, k: int, support: str) -> tuple[Tensor, Optional[Tensor]]:
    """The ids of S per row, (c, k) or (c, 2k) for the union ([PTD-PO] Eq. 14), and for the union
    a (c, 2k) bool marking each id's first occurrence (a teacher id already in the student's
    top-k is a duplicate), else None. Selected on the logits, without gradient."""
    if support == "student":
        return zs.topk(k, dim=-1).indices, None
    if support == "teacher":
        return zt.topk(k, dim=-1).indices, None
    ids_s, ids_t = zs.topk(k, dim=-1).indices, zt.topk(k, dim=-1).indices
    in_s = torch.zeros_like(zs, dtype=torch.bool).scatter_(1, ids_s, True)
    first = torch.cat([torch.ones_like(ids_s, dtype=torch.bool), in_s.gather(1, ids_t).logical_not_()], 1)
    return torch.cat([ids_s, ids_t], 1), first


def _tail_mass(p: Tensor, p_s: Tensor, first: Optional[Tensor]) -> Tensor:
    """sum_{v not in S} p_v as the float64 difference of two sums of the same fp numbers (the
    whole row and S, duplicates counted once): as exact as summing the tail itself, without a
    (c, V) mask pass; clamped at 0."""
    s = (p_s if first is None else torch.where(first, p_s, 0.0)).sum(-1, dtype=torch.float64)
    return (p.sum(-1, dtype=torch.float64) - s).clamp_min_(0.0).to(p.dtype)


def _compressed_jsd(p: Tensor, ids: Tensor, p_s: Tensor, q_s: Tensor, p_t: Tensor, q_t: Tensor,
                    first: Optional[Tensor], grad: bool) -> tuple[Tensor, Optional[Tensor]]:
    """JSD(q~, p~) over the categories (S, tail) ([PTD-PO] Eqs. 15-17) from the masses on S
    (p_s, q_s (c, m), at ``ids``; entries with ``first`` False are duplicates and count once) and
    the tail masses (c,). With l_c = log(p~_c / m~_c) (0 where p~_c = 0), the logit gradient is
    0.5 p_v (l_{c(v)} - E_{c~p~} l_c) ([PTD-PO] Eq. 42 in compressed coordinates, every v outside S
    in the tail category); it overwrites ``p``'s buffer."""
    tiny = torch.finfo(p.dtype).tiny

    def ell(a: Tensor, m: Tensor) -> Tensor:  # log(a / m), 0 where a == 0 (0 log 0 = 0)
        return torch.where(a > 0, torch.log(a.clamp_min(tiny) / m.clamp_min(tiny)), torch.zeros_like(a))

    m_s, m_t = 0.5 * (p_s + q_s), 0.5 * (p_t + q_t)
    l_ps, l_qs, l_pt, l_qt = ell(p_s, m_s), ell(q_s, m_s), ell(p_t, m_t), ell(q_t, m_t)
    once = (lambda x: x) if first is None else (lambda x: torch.where(first, x, 0.0))
    e_p = once(p_s * l_ps).sum(-1) + p_t * l_pt  # E_{c ~ p~} l_c
    val = 0.5 * (e_p + once(q_s * l_qs).sum(-1) + q_t * l_qt)
    if not grad:
        return val, None
    dz = p.mul_((0.5 * (l_pt - e_p))[:, None])  # every token as the tail ...
    return val, dz.scatter_(1, ids, 0.5 * p_s * (l_ps - e_p[:, None]))  # ... then S its own (duplicates agree)


@functools.lru_cache(maxsize=None)  # one kernel object per setting: compiled once (see _compiled)
def _jsd_kernel(k: Optional[int], support: str) -> Kernel:
    """JSD(q, p) over the full vocabulary (k=None, [PTD-PO] Eq. 13) or over the compressed
    distributions (S, tail) with S the top-k support ([PTD-PO] Eqs. 14-17). With
    l_c = log(p_c / m_c) per category c (tail: log(p_tail / m_tail)), the logit gradient is
    0.5 p_v (l_{c(v)} - E_{c~p~} l_c) ([PTD-PO] Eq. 42 in compressed coordinates, with every
    v outside S mapped to the tail category)."""

    def kernel(zs: Tensor, zt: Tensor, grad: bool):
        if k is not None:
            ids, first = _topk_support(zs, zt, min(k, zs.shape[-1]), support)
            p, q = _log_softmax_(zs).exp_(), _log_softmax_(zt).exp_()  # in place: p, q in zs, zt
            p_s, q_s = p.gather(1, ids), q.gather(1, ids)
            return _compressed_jsd(p, ids, p_s, q_s, _tail_mass(p, p_s, first), _tail_mass(q, q_s, first), first,
                                   grad)
        lp, lq = _log_softmax_(zs), _log_softmax_(zt)
        p, q = lp.exp(), lq.exp()
        tiny = torch.finfo(p.dtype).tiny
        lm = torch.add(p, q).mul_(0.5).clamp_min_(tiny).log_()
        ell_p, ell_q = lp.sub_(lm), lq.sub_(lm)  # log(p/m), log(q/m); 0 * finite where p or q is 0
        del lm
        e_p = _rowdot(p, ell_p)
        val = 0.5 * (e_p + _rowdot(q, ell_q))
        if not grad:
            return val, None
        return val, ell_p.sub_(e_p[:, None]).mul_(p).mul_(0.5)

    return kernel if k is None else _eager_under_auto(kernel)


@register_loss("full_kl")
def full_kl(
    student: Side,
    teacher: Side,
    mask: Tensor,
    direction: Literal["reverse", "forward"] = "reverse",
    chunk_size: Optional[int] = None,
    *,
    token_weights: Optional[Tensor] = None,
) -> Union[Tensor, FusedLoss]:
    """Per-token full-vocabulary KL between the student p = softmax(z_s) and the detached
    teacher q = softmax(z_t), (B, T), 0 on padding; aggregate with ``agg_loss``.

    - ``reverse``: KL(p || q) = sum_v p (log p - log q)  (on-policy distillation's objective;
      [VOLD] Eq. 3's gradient, docs/methods/vold.md §3; [REOPOLD] Eq. 2). Logit gradient
      p (log p - log q - KL)  ([PTD-PO] App. D Eq. 38).
    - ``forward``: KL(q || p) = sum_v q (log q - log p)  ([PTD-PO] Eq. 4 as written; [VOLD] Eq. 3
      as written). Logit gradient p - q  ([PTD-PO] Eq. 36).

    Each side is logits (B, T, V) or ``HiddenHead(hidden, weight)``. Only tokens with
    mask != 0 are computed, ``chunk_size`` of them at a time (default: ``CHUNK_BYTES`` of fp32
    logits per chunk); bf16/fp16 logits are upcast to fp32, float64 stays float64.

    ``token_weights`` (B, T) selects the fused path: the result is then
    ``FusedLoss(loss = sum_t w_t KL_t, values)`` with the gradients computed during the forward
    (see ``_FusedTokenFn``); ``agg_weights`` gives the w that reproduce an ``agg_loss``. Every
    loss of this section takes it the same way.
    """
    if direction == "reverse":
        kernel = _kl_reverse_kernel
    elif direction == "forward":
        kernel = _kl_forward_kernel
    else:
        raise ValueError(f"unknown KL direction {direction!r}; expected 'reverse' or 'forward'")
    return _per_token(kernel, student, teacher, mask, chunk_size, token_weights)


_FULL_JSD = _jsd_kernel(None, "union")


@functools.lru_cache(maxsize=None)  # one kernel object per setting: compiled once (see _compiled)
def _generalized_jsd_kernel(beta: float) -> Kernel:
    """beta KL(q || m) + (1 - beta) KL(p || m) with m = beta q + (1 - beta) p (GKD's JSD(beta),
    Agarwal et al. 2024, as TRL's ``generalized_jsd_loss`` defines it; q teacher, p student).
    d/dp_v = (1 - beta) log(p_v / m_v), so the logit gradient is (1 - beta) p (l - E_p l) with
    l = log(p / m)."""

    def kernel(zs: Tensor, zt: Tensor, grad: bool):
        lp, lq = _log_softmax_(zs), _log_softmax_(zt)
        p, q = lp.exp(), lq.exp()
        tiny = torch.finfo(p.dtype).tiny
        lm = torch.add(q.mul(beta), p, alpha=1.0 - beta).clamp_min_(tiny).log_()
        ell_p, ell_q = lp.sub_(lm), lq.sub_(lm)
        del lm
        e_p = _rowdot(p, ell_p)
        val = beta * _rowdot(q, ell_q) + (1.0 - beta) * e_p
        if not grad:
            return val, None
        return val, ell_p.sub_(e_p[:, None]).mul_(p).mul_(1.0 - beta)

    return kernel


@register_loss("jsd")
def jsd(student: Side, teacher: Side, mask: Tensor, chunk_size: Optional[int] = None, beta: float = 0.5, *,
        token_weights: Optional[Tensor] = None) -> Union[Tensor, FusedLoss]:
    """Per-token full-vocabulary Jensen-Shannon divergence, (B, T), 0 on padding.

    ``beta = 0.5`` (default): JSD(q, p) = 0.5 KL(q || m) + 0.5 KL(p || m), m = (p + q) / 2
    ([PTD-PO] Eq. 13); symmetric, in [0, log 2] (Eq. 43); student logit gradient [PTD-PO] Eq. 42.
    Other ``beta`` in (0, 1): GKD's generalised JSD(beta) = beta KL(q || m) + (1 - beta) KL(p || m)
    with m = beta q + (1 - beta) p (Agarwal et al. 2024, arXiv 2306.13649, Eq. in §3, in TRL's
    convention). The end points follow TRL too: ``beta = 0`` is the forward KL(q || p) and
    ``beta = 1`` the reverse KL(p || q) (``full_kl``). Sides, mask, chunking and ``token_weights``
    as ``full_kl``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return full_kl(student, teacher, mask, "forward", chunk_size, token_weights=token_weights)
    if beta == 1.0:
        return full_kl(student, teacher, mask, "reverse", chunk_size, token_weights=token_weights)
    kernel = _FULL_JSD if beta == 0.5 else _generalized_jsd_kernel(beta)
    return _per_token(kernel, student, teacher, mask, chunk_size, token_weights)


@register_loss("topk_jsd")
def topk_jsd(
    student: Side,
    teacher: Side,
    mask: Tensor,
    k: int = 100,
    chunk_size: Optional[int] = None,
    support: Literal["union", "student", "teacher"] = "union",
    *,
    token_weights: Optional[Tensor] = None,
) -> Union[Tensor, FusedLoss]:
    """Per-token top-K JSD with a tail bucket ([PTD-PO] Eqs. 14-17, App. D.3):

        S = TopK(p) U TopK(q)                       (support='union', the paper, Eq. 14)
        p~ = ({p(v)}_{v in S}, 1 - sum_S p),  q~ likewise           (Eqs. 15-16)
        D = JSD(q~, p~)                                             (Eq. 17)

    The tail keeps the mass outside S (no renormalisation), so D <= JSD(q, p) with the gap
    given by Eq. 63, and D == JSD when S covers the vocabulary (k >= V). ``support='student'``
    is the authors' code path (student top-K only, docs/methods/ptdpo.md T7; this function still uses the
    teacher's exact probabilities on S, unlike that code's uniform-tail approximation);
    'teacher' uses the teacher's top-K. S is selected without gradient; the gradient reaches
    every student logit through p(v), v in S, and through the tail. Here the teacher is given
    in full (logits or hidden states), so values on S are exact; its memory is O(chunk * V)
    per chunk like ``jsd``. ``token_weights``: the fused path, as ``full_kl``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if support not in ("union", "student", "teacher"):
        raise ValueError(f"unknown support {support!r}; expected 'union', 'student' or 'teacher'")
    return _per_token(_jsd_kernel(k, support), student, teacher, mask, chunk_size, token_weights)


@register_loss("entropy")
def entropy(student: Side, mask: Tensor, chunk_size: Optional[int] = None, *,
            token_weights: Optional[Tensor] = None) -> Union[Tensor, FusedLoss]:
    """Per-token entropy H(p) = -sum_v p log p of the student, (B, T), 0 on padding
    ([VOLD] Eq. 1 monitoring metric; [REOPOLD] Eq. 8 token selection, use it detached there).
    In [0, log V]. Logit gradient -p (log p + H). Sides, mask, chunking and ``token_weights``
    as ``full_kl``."""
    return _per_token(_entropy_kernel, student, None, mask, chunk_size, token_weights)


# --------------------------------------------------------------------------------------
# Top-k teacher ("top-k approximation"): the teacher kept as k ids and log-probs per token
# --------------------------------------------------------------------------------------


@torch.no_grad()
def teacher_topk(teacher: Side, mask: Tensor, k: int, chunk_size: Optional[int] = None) -> TopKTeacher:
    """The teacher's ``k`` most probable tokens and their log-probabilities ``log q(v)`` (full
    softmax, temperature 1) at every position, chunk by chunk (no ``N x V`` tensor), without
    gradient; positions with ``mask == 0`` get ids 0 and log-probs 0. ``k`` above V is cut to V.
    Ties are broken by ``torch.topk``. This is the whole teacher signal the top-k losses
    (``teacher_topk_jsd``, ``topk_expected_reward``) read, so a trainer can drop the teacher's
    hidden states or logits after scoring (REOPOLD App. D, "Top-5 approximation")."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x, w, v, bt = _flatten(teacher, "teacher", detach=True)
    if tuple(mask.shape) != bt:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B, T) = {bt}")
    kk = min(k, v)
    dtype = _compute_dtype(x, w)
    chunk = chunk_size or _auto_chunk(v)
    rows = (mask.reshape(-1) != 0).nonzero().squeeze(1).to(x.device)
    ids = torch.zeros(bt[0] * bt[1], kk, dtype=torch.long, device=x.device)
    logq = torch.zeros(bt[0] * bt[1], kk, dtype=dtype, device=x.device)
    for start in range(0, rows.numel(), chunk):
        r = rows[start:start + chunk]
        top = _log_softmax_(_chunk_logits(x, w, r).to(dtype)).topk(kk, dim=-1)
        ids[r], logq[r] = top.indices, top.values.clamp_min(math.log(torch.finfo(dtype).tiny))
    return TopKTeacher(ids.view(*bt, kk), logq.view(*bt, kk))


def _unpack_topk(zt: Tensor) -> tuple[Tensor, Tensor]:
    """(ids (c, k) long, log q (c, k)) of a packed ``TopKTeacher`` chunk (see ``_per_token``)."""
    k = zt.shape[-1] // 2
    return zt[:, :k].round().long(), zt[:, k:]


def _teacher_topk_jsd_kernel(zs: Tensor, zt: Tensor, grad: bool):
    """JSD(q~, p~) over the k + 1 categories (teacher top-k ids S, tail) — ``_jsd_kernel(k,
    'teacher')`` with the teacher given only on S: its tail mass is ``1 - sum_S q`` (clamped at 0).
    Logit gradient 0.5 p_v (l_{c(v)} - E_{c~p~} l_c), l_c = log(p~_c / m~_c) ([PTD-PO] Eq. 42 in
    compressed coordinates)."""
    ids, lq_s = _unpack_topk(zt)
    p = _log_softmax_(zs).exp_()  # zs's buffer now holds p
    p_s, q_s = p.gather(1, ids), lq_s.exp()
    q_t = (1.0 - q_s.sum(-1)).clamp_min(0.0)  # the teacher's tail: all that is known of it
    return _compressed_jsd(p, ids, p_s, q_s, _tail_mass(p, p_s, None), q_t, None, grad)


_eager_under_auto(_teacher_topk_jsd_kernel)


@register_loss("teacher_topk_jsd")
def teacher_topk_jsd(student: Side, teacher: TopKTeacher, mask: Tensor, chunk_size: Optional[int] = None, *,
                     token_weights: Optional[Tensor] = None) -> Union[Tensor, FusedLoss]:
    """Per-token JSD(0.5) between the student and the teacher compressed onto the teacher's top-k
    support S with a tail bucket ([PTD-PO] Eqs. 14-17 with ``S = TopK(q)``):

        p~ = ({p(v)}_{v in S}, 1 - sum_S p),   q~ = ({q(v)}_{v in S}, 1 - sum_S q),   D = JSD(q~, p~)

    (B, T), 0 on padding. Equals ``topk_jsd(student, teacher_logits, mask, k, support='teacher')``
    when ``teacher = teacher_topk(teacher_logits, mask, k)``, but reads only the k ids and
    log-probs the teacher kept (the "top-k approximation" of GKD, REOPOLD App. D / Table 8):
    memory O(chunk * V) for the student, O(N k) for the teacher. No renormalisation: the tail
    keeps the mass outside S, so D <= JSD(q, p) (Eq. 63) and D = JSD when k = V.
    ``token_weights``: the fused path, as ``full_kl``."""
    if not isinstance(teacher, TopKTeacher):
        raise TypeError("teacher_topk_jsd: teacher must be a TopKTeacher (see teacher_topk)")
    return _per_token(_teacher_topk_jsd_kernel, student, teacher, mask, chunk_size, token_weights)


@functools.lru_cache(maxsize=None)  # one kernel object per setting: compiled once (see _compiled)
def _topk_reward_kernel(floor: float) -> Kernel:
    """Expected floored log-ratio over the teacher's top-k support S, both sides renormalised
    on S: ``val = sum_{v in S} p~(v) max(log q~(v) - log p~(v), floor)`` with the reward held
    constant in the gradient: d val / d z_u = p~(u) (Rhat(u) - val) for u in S, 0 outside."""

    def kernel(zs: Tensor, zt: Tensor, grad: bool):
        ids, lq_s = _unpack_topk(zt)
        lp_s = _log_softmax_(zs).gather(1, ids)
        lpt = lp_s - torch.logsumexp(lp_s, -1, keepdim=True)  # log p~ on S
        lqt = lq_s - torch.logsumexp(lq_s, -1, keepdim=True)  # log q~ on S
        pt = lpt.exp()
        reward = torch.where(pt > 0, (lqt - lpt).clamp_min(floor), torch.zeros_like(pt))
        val = (pt * reward).sum(-1)
        if not grad:
            return val, None
        dz = torch.zeros_like(zs)
        return val, dz.scatter_(1, ids, pt * (reward - val[:, None]))

    return _eager_under_auto(kernel)


@register_loss("topk_expected_reward")
def topk_expected_reward(student: Side, teacher: TopKTeacher, mask: Tensor, floor: float = -float("inf"),
                         chunk_size: Optional[int] = None, *, token_weights: Optional[Tensor] = None
                         ) -> Union[Tensor, FusedLoss]:
    """Per-token expected (floored) token reward over the teacher's top-k support, (B, T), 0 on
    padding — the "Top-5 approximation" / full-vocabulary form of REOPOLD's token reward
    (REOPOLD App. D, Table 8 "Reopold†"; docs/deviations.md). At each sampled prefix h, with S the
    ids of ``teacher`` and both distributions renormalised on S,

        p~(v) = p(v | h) / p(S | h),   q~(v) = q(v | h) / q(S | h),   v in S
        Rhat(v) = max( log q~(v) - log p~(v), floor )        (REOPOLD Eq. 5 per vocabulary entry)
        r(h) = sum_{v in S} p~(v) Rhat(v)

    and the gradient treats ``Rhat`` as constant (REOPOLD's stop-gradient, Remark 3.1):
    ``grad r = sum_{v in S} Rhat(v) grad p~(v)``. Without a floor this is exactly the gradient of
    ``-KL(p~ || q~)`` (``sum_v p~ grad log p~ = 0``), and with S the whole vocabulary (k = V)
    ``r = -KL(p || q)``, the full-vocabulary expected token reward (REOPOLD Eq. 2 per prefix).
    The gradient vanishes when p = q on S (every ``Rhat = 0``). Student as logits or
    ``HiddenHead``; memory O(chunk * V). ``token_weights``: the fused path, as ``full_kl``."""
    if not isinstance(teacher, TopKTeacher):
        raise TypeError("topk_expected_reward: teacher must be a TopKTeacher (see teacher_topk)")
    return _per_token(_topk_reward_kernel(float(floor)), student, teacher, mask, chunk_size, token_weights)
