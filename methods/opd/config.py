"""Plain on-policy distillation settings. Generic defaults come from harness.train_config;
``PROFILES["paper"]`` is REOPOLD's visual RKL baseline (arXiv 2603.11137 Table 7 / App. C, the
column the plain-OPD rows of its visual table use); ``PROFILES["smoke"]`` is a tiny offline CPU
run whose numbers mean nothing about any paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from harness.train_config import PAPER_ROLLOUTS, OnlineConfig


@dataclass
class OPDConfig(OnlineConfig):
    teacher: str = ""
    """Teacher model (hub id, path or ``smoke:<kind>``); must share the student's vocabulary."""
    teacher_view: str = "full"
    """Context the teacher scores in: on-policy distillation scores the student's tokens in the
    *same* context the student saw (REOPOLD §2.1; GKD)."""
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    teacher_micro_batch_size: Optional[int] = None
    """Rows per teacher forward (None: ``micro_batch_size``)."""
    loss: Literal["k1-reward", "rkl-sampled", "full-rkl", "full-fkl", "jsd", "topk-jsd"] = "k1-reward"
    """methods.opd.loss: sampled-token reward with stop-gradient (default), the same with the
    gradient through the reward (REOPOLD's RKL baseline), GKD's full-vocabulary divergences, or
    GKD with the top-k approximation (``topk-jsd``: JSD(0.5) over the teacher's ``top_k`` tokens
    and a tail bucket, the teacher kept as k ids and log-probs per token; REOPOLD App. D "GKD†")."""
    top_k: int = 5
    """``loss=topk-jsd``: size of the teacher's support (REOPOLD App. D: "the commonly used Top-5
    approximation")."""
    jsd_beta: float = 0.5
    """GKD's JSD(beta) interpolation (``loss=jsd``); TRL's GKDConfig default 0.5."""
    reward_logp: Literal["current", "old"] = "current"
    """``k1-reward``: the student log-prob inside R = lp^T - lp^S, current policy (REOPOLD's
    R(theta), its R5 default) or the sampler's (Thinking Machines)."""
    clip_low: float = 0.2
    """PPO ratio clip of the ``k1-reward`` surrogate; no paper states it (REOPOLD R6): verl's 0.2."""
    clip_high: float = 0.2
    ratio_level: Literal["token", "sequence", "sequence-sum"] = "token"
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    """REOPOLD Eq. 3 divides by all response tokens of the batch (token-mean)."""
    kl_chunk_size: Optional[int] = None
    """Tokens per chunk of the full-vocabulary losses (None: harness.losses.CHUNK_BYTES, 128 MiB of fp32 logits)."""
    log_full_rkl: bool = False
    """Also log ``rkl_full``: the exact full-vocabulary reverse KL(pi_theta || pi_T) per token on
    the rollouts (one extra student forward without gradient, and the teacher's hidden states).
    The sampled ``rkl_k1`` estimate is always logged but is biased low when the policy puts mass
    on tokens the rollout engine bans (multimodal placeholders)."""
    reward: Optional[str] = None
    """Not used by the loss. When set (a harness reward name), rewards are computed and logged
    as ``reward_mean`` (how well the distilled student answers)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError("teacher: required (a model that shares the student's vocabulary)")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.jsd_beta <= 1.0:
            raise ValueError(f"jsd_beta must be in [0, 1], got {self.jsd_beta}")


PROFILES: dict[str, dict[str, Any]] = {
    # REOPOLD visual setting [P-arXiv Table 7, App. C]: Qwen2.5-VL-3B-Instruct student, teacher
    # Qwen2.5-VL-32B-Instruct + NoisyRollout, Geometry3K, 128 prompts x 12 rollouts, 2 updates
    # per step, responses up to 2048 tokens, AdamW lr 5e-6 constant, 60 steps; "RKL" baseline =
    # the sampled reverse KL with the gradient through the reward.
    "paper": {
        **PAPER_ROLLOUTS,
        "model": "Qwen/Qwen2.5-VL-3B-Instruct", "teacher": "xyliu6/NoisyRollout-Geo3K-32B",
        "data": "geometry3k", "loss": "rkl-sampled", "prompts_per_step": 128, "num_generations": 12,
        "mini_batches_per_step": 2, "max_new_tokens": 2048, "lr": 5e-6, "lr_schedule": "constant",
        "warmup_steps": 0, "steps": 60, "temperature": 1.0, "reward": "math",
    },
    # Offline CPU smoke run: the tiny Qwen2.5-VL student distils a tiny Qwen3 with sharper
    # next-token distributions (harness.tiny's "qwen3_teacher": same tokenizer, another
    # architecture and initialisation, per-token reverse KL ~1.5 nats at the start) on the
    # synthetic "answer with a digit" prompts; 8 prompts x 8 rollouts, 8-token responses, fp32,
    # lr 1e-3, 30 steps, the exact reverse KL logged every step. (At lr >= 2e-3 the sampled-reward
    # losses push mass onto the placeholder tokens the rollout engine bans and never samples, and
    # the exact KL turns back up: see docs/deviations.md, "banned tokens".)
    "smoke": {
        "model": "smoke:qwen2_5_vl", "teacher": "smoke:qwen3_teacher", "teacher_dtype": "float32",
        "data": "smoke-learnable", "steps": 30, "prompts_per_step": 8, "num_generations": 8,
        "mini_batches_per_step": 1, "micro_batch_size": 16, "max_new_tokens": 8, "rollout_batch_size": 8,
        "lr": 1e-3, "warmup_steps": 0, "lr_schedule": "constant", "dtype": "float32", "autocast": None,
        "save_every": 10, "device": "cpu", "reward": "smoke-contains-answer", "log_full_rkl": True,
        "freeze_vision": True,  # as when results/bench/opd_smoke-cpu.md was measured
    },
}
