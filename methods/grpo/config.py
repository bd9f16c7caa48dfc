"""GRPO settings: a generic method, so its defaults are neutral (verl's / TRL's, each cited) and
no paper's recipe. A paper that runs GRPO states its values in its recipe stage
(``reproduce/papers/<paper>.yaml``); VOLD's RL stage states its own in ``methods.vold.config``.
``PROFILES["smoke"]`` scales a run down to a tiny random model on a learnable synthetic task so the
whole loop runs offline on a CPU in seconds; its numbers mean nothing about any paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.reward_registry import REWARDS, reward_names
from harness.train_config import PAPER_ROLLOUTS, OnlineConfig


@dataclass
class GRPOConfig(OnlineConfig):
    clip_low: float = 0.2
    """PPO / GRPO ratio clip eps_lower: verl's ``clip_ratio`` default 0.2."""
    clip_high: float = 0.2
    """eps_upper: symmetric, as PPO and GRPO (verl's ``clip_ratio_high`` defaults to ``clip_ratio``);
    DAPO's clip-higher (0.28, or VOLD's 0.3) is a recipe setting."""
    ratio_level: Literal["token", "sequence", "sequence-sum"] = "token"
    """Importance ratio (harness.losses.policy_loss): per token (DAPO / verl; VOLD V3's reading),
    GSPO's length-normalised sequence ratio, or the whole-sequence ratio of VOLD Eq. 2 as written."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    """Loss aggregation: token-mean over the batch (verl's ``loss_agg_mode`` default, as DAPO)."""
    kl_coef: float = 0.0
    """Reference-KL weight: 0, as TRL's ``GRPOConfig.beta`` default and verl's ``use_kl_loss=False``;
    > 0 loads a frozen copy of the initial policy as pi_ref."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Estimator of KL(pi_theta || pi_ref) when kl_coef > 0: k3 (verl's ``low_var_kl``)."""
    adv_eps: float = 1e-6
    """delta in A = (r - mean) / (std + delta): verl / EasyR1 use 1e-6."""
    adv_std_unbiased: bool = True
    """Sample std (/(G-1)) as torch.std in verl / EasyR1."""
    adv_scale: bool = True
    """Divide by the group std (GRPO); False gives Dr. GRPO's mean-centred advantage."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward not in REWARDS:
            raise ValueError(f"reward: unknown reward {self.reward!r} (known: {', '.join(reward_names())})")


PROFILES: dict[str, dict[str, Any]] = {
    # GRPO has no recipe of its own: the paper profile is the neutral defaults, and a recipe stage
    # (or the command line) gives model, data and the paper's settings.
    "paper": dict(PAPER_ROLLOUTS),
    # Offline CPU smoke run, not a reproduction of anything: a tiny random Qwen2.5-VL
    # (harness.models.smoke_model_path), synthetic prompts (harness.data.synthetic.learnable),
    # a dense synthetic reward a random model can learn (fraction of even token ids,
    # harness.reward_registry "smoke-even-tokens"), 6-token responses, fp32, lr 1e-2, 2 mini-batches per rollout batch
    # so the importance ratio and the clip act, 12 steps (mean reward 0.48 -> 0.95, ~2 s).
    "smoke": {
        "model": "smoke:qwen2_5_vl",
        "data": "smoke-learnable",
        "steps": 12,
        "prompts_per_step": 4,
        "num_generations": 5,
        "mini_batches_per_step": 2,
        "micro_batch_size": 5,
        "max_new_tokens": 6,
        "rollout_batch_size": 4,
        "lr": 1e-2,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "dtype": "float32",
        "autocast": None,
        "reward": "smoke-even-tokens",
        "freeze_vision": True,
        "save_every": 2,
        "device": "cpu",
    },
}
