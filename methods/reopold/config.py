"""REOPOLD settings (arXiv 2603.11137). Generic defaults come from harness.train_config; the
method's own defaults are the paper's (Table 7 / App. C of the arXiv v1, tagged [P-arXiv] in
docs/methods/reopold.md); values the paper does not give are [A] switches listed in
docs/deviations.md.

``PROFILES["paper"]`` is the math setting with the 1.5B student (Table 1, first group);
``PAPER_SETTINGS`` holds every column of Table 7 (math 1.5B / 7B, visual, tool use) for the
recipe stages; ``PROFILES["smoke"]`` is a tiny offline CPU run whose numbers mean nothing about
the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from harness.train_config import PAPER_ROLLOUTS, OnlineConfig
from methods.reopold.loss import EXPLORE_MASKS, ExploreMask

COMPONENTS = ("stop_grad", "reward_clip", "entropy_sampling", "multistage")
"""The module-ablation components in the paper's order (1)-(4), added cumulatively."""


@dataclass
class REOPOLDConfig(OnlineConfig):
    teacher: str = ""
    """Teacher model (hub id, path or ``smoke:<kind>``); must share the student's vocabulary."""
    teacher_view: str = "full"
    """Context the teacher scores in: the student's own (§2.1: same prompt, image + question, or
    the whole multi-turn tool trajectory)."""
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    teacher_micro_batch_size: Optional[int] = None
    """Rows per teacher forward (None: ``micro_batch_size``)."""
    clip_coef: float = 0.3
    """The paper's lambda, the student's weight in the mixture; floor ``c = log(lambda)/(1-lambda)``
    (Eqs. 5, 7). 0.3 in every setting [P-arXiv Table 7]. 0 disables the floor."""
    entropy_top: float = 0.2
    """The paper's beta: share of the batch's highest-entropy tokens kept in refinement (Eq. 8).
    0.2 math and visual, 0.4 tool use [P-arXiv Table 7]."""
    t_switch: int = 100
    """Step (0-based) from which refinement replaces exploration (Eq. 6). 100 for math-1.5B
    [P-arXiv Table 7]; 50 math-7B, 20 visual, 10 tool use."""
    stop_grad: bool = True
    """Component (1): R as a detached advantage (``J_RKL^sg``, Remark 3.1) [P-arXiv]."""
    reward_clip: bool = True
    """Component (2): floor the reward at ``c_lambda`` (Eqs. 5, 7) [P-arXiv]."""
    entropy_sampling: bool = True
    """Component (3): entropy-guided token selection (Eq. 8) [P-arXiv]."""
    multistage: bool = True
    """Component (4): exploration (Eq. 9) before ``t_switch``, refinement (Eq. 10) after [P-arXiv]."""
    explore_mask: ExploreMask = "floor"
    """Exploration selection: ``1[R >= c_lambda]`` (Eq. 9, the paper's); ``positive`` (R > 0) and
    ``all`` are ablation readings [A] (docs/deviations.md, REOPOLD R3)."""
    ppo_clip: bool = True
    """The PPO ratio clip is on in the paper's runs (App. A.2 / Fig. 11) but omitted from its
    equations [P-arXiv]; its eps is not given: ``clip_low`` / ``clip_high`` [A]."""
    clip_low: float = 0.2
    """PPO eps, lower side [A]: verl's default 0.2 (REOPOLD R6; not in Table 7 or App. C)."""
    clip_high: float = 0.2
    """PPO eps, upper side [A]: verl's symmetric default 0.2."""
    reward_logp: Literal["current", "old"] = "current"
    """Student log-prob inside ``R`` of the loss: the current policy (the paper writes R(theta)) or
    the sampler's [A] (REOPOLD R5)."""
    select_policy: Literal["old", "current"] = "old"
    """Policy whose R (exploration) and entropies (refinement) choose the tokens [A] (REOPOLD
    R4/R5): ``old``, the sampler's, once per rollout batch, the entropy threshold over the whole
    rollout batch; ``current``, the update's own forward (``ViewOutput.entropy()``), the threshold
    over the optimizer mini-batch, which must then be one micro-batch per rank (the normaliser
    ``sum M`` needs every selected token before the loss is divided)."""
    top_k: Optional[int] = None
    """None (default, the paper's REOPOLD): the sampled-token reward ``R = lp^T - lp^S``.
    An integer k: "Reopold†" of App. D / Table 8 [A] — at every sampled prefix the reward is the
    expectation over the teacher's top-k tokens of the floored log-ratio, student and teacher
    renormalised on those k tokens (``methods.reopold.loss.reopold_topk_loss``); k = 5 is the
    paper's "Top-5 approximation", k >= V the full vocabulary. Needs ``stop_grad``; the PPO ratio
    clip does not apply (no sampled token is reweighted)."""
    entropy_chunk_size: Optional[int] = None
    """Tokens per chunk of the full-vocabulary entropy (None: harness.losses.CHUNK_BYTES, 128 MiB of fp32 logits)."""
    log_full_rkl: bool = False
    """Also log ``rkl_full``, the exact full-vocabulary reverse KL per token on the rollouts."""
    kl_chunk_size: Optional[int] = None
    """Tokens per chunk of the logged full reverse KL."""
    reward: Optional[str] = None
    """Not used by the loss (§2.1: no verifiable reward). When set, logged as ``reward_mean``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError("teacher: required (a model that shares the student's vocabulary)")
        if not 0.0 <= self.clip_coef < 1.0:
            raise ValueError(f"clip_coef (lambda) must be in [0, 1), got {self.clip_coef}")
        if not 0.0 < self.entropy_top <= 1.0:
            raise ValueError(f"entropy_top (beta) must be in (0, 1], got {self.entropy_top}")
        if self.t_switch < 0:
            raise ValueError(f"t_switch must be >= 0, got {self.t_switch}")
        if self.explore_mask not in EXPLORE_MASKS:
            raise ValueError(f"explore_mask must be one of {EXPLORE_MASKS}, got {self.explore_mask!r}")
        if not self.stop_grad and self.reward_logp != "current":
            raise ValueError("stop_grad=false puts the gradient through R: reward_logp must be 'current'")
        if self.top_k is not None:
            if self.top_k < 1:
                raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")
            if not self.stop_grad:
                raise ValueError("top_k (Reopold†) is defined with the stop-gradient reward: stop_grad must be true")
        rows = self.prompts_per_step * self.num_generations
        if self.select_policy == "current" and self.micro_batch_size * self.mini_batches_per_step < rows:
            raise ValueError(f"select_policy=current needs one micro-batch per mini-batch: micro_batch_size >= "
                             f"{-(-rows // self.mini_batches_per_step)} (rows per mini-batch)")
        if not (0.0 <= self.clip_low < 1.0) or self.clip_high < 0.0:
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}")

    @property
    def components(self) -> tuple[str, ...]:
        """The ablation components switched on, in the paper's order."""
        return tuple(c for c in COMPONENTS if getattr(self, c))


def components(n: int) -> dict[str, bool]:
    """The first ``n`` components on, the rest off (the ablation table's cumulative rows; 0 is RKL)."""
    if not 0 <= n <= len(COMPONENTS):
        raise ValueError(f"components: 0..{len(COMPONENTS)}, got {n}")
    return {c: i < n for i, c in enumerate(COMPONENTS)}


_COMMON = {**PAPER_ROLLOUTS, "temperature": 1.0, "lr_schedule": "constant", "warmup_steps": 0, "clip_coef": 0.3}
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    # Table 7 / App. C [P-arXiv]: verl, 128 queries per step, mini-batch 32 queries (4 updates),
    # 8 responses per query, max response 8192, AdamW constant lr.
    "math-1.5b": {**_COMMON, "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                  "teacher": "Skywork/Skywork-OR1-Math-7B", "data": "openr1-math-46k", "prompts_per_step": 128,
                  "num_generations": 8, "mini_batches_per_step": 4, "max_new_tokens": 8192, "lr": 1e-5,
                  "steps": 300, "entropy_top": 0.2, "t_switch": 100, "reward": "math"},
    "math-7b": {**_COMMON, "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
                "teacher": "Skywork/Skywork-OR1-32B-Preview", "data": "openr1-math-46k", "prompts_per_step": 128,
                "num_generations": 8, "mini_batches_per_step": 4, "max_new_tokens": 8192, "lr": 3e-6,
                "steps": 200, "entropy_top": 0.2, "t_switch": 50, "reward": "math"},
    # visual: 12 responses, mini-batch 64 queries (2 updates), max response 2048, 60 steps.
    "visual": {**_COMMON, "model": "Qwen/Qwen2.5-VL-3B-Instruct", "teacher": "xyliu6/NoisyRollout-Geo3K-32B",
               "data": "geometry3k-noisyrollout", "prompts_per_step": 128, "num_generations": 12,
               "mini_batches_per_step": 2, "max_new_tokens": 2048, "lr": 5e-6, "steps": 60, "entropy_top": 0.2,
               "t_switch": 20, "reward": "math"},
    # agentic tool use (VerlTool, Pixel-Reasoner): 8 responses, 2 tool rounds in training, 40 steps.
    "tool": {**_COMMON, "model": "TIGER-Lab/PixelReasoner-WarmStart", "teacher": "TIGER-Lab/PixelReasoner-RL-v1",
             "data": "TIGER-Lab/PixelReasoner-RL-Data", "prompts_per_step": 128, "num_generations": 8,
             "mini_batches_per_step": 2, "max_new_tokens": 8192, "lr": 1e-6, "steps": 40, "entropy_top": 0.4,
             "t_switch": 10, "tools": ("crop_image",), "max_tool_rounds": 2, "reward": None},
}
"""Every column of the paper's Table 7 as config values (the recipe's stages pick theirs)."""

TABLE7: dict[str, dict[str, Any]] = {
    name: {k: s[k] for k in ("num_generations", "lr", "clip_coef", "entropy_top", "t_switch", "steps")}
    for name, s in PAPER_SETTINGS.items()
}
"""Table 7's printed values per setting (n, lr, lambda, beta, T_switch, K) [P-arXiv]."""


PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_SETTINGS["math-1.5b"]),
    # Offline CPU smoke run: a tiny Qwen2 (the DeepSeek-R1-Distill-Qwen architecture) distils the
    # sharper tiny Qwen3 teacher (same tokenizer, another architecture and initialisation) on the
    # synthetic text math prompts; 8 prompts x 4 rollouts, 8-token responses, fp32, lr 1e-3,
    # 12 steps with the switch at step 4 (a third, as the paper's 1.5B column).
    "smoke": {
        "model": "smoke:qwen2", "teacher": "smoke:qwen3_teacher", "teacher_dtype": "float32",
        "data": "smoke-text-math", "steps": 12, "t_switch": 4, "prompts_per_step": 8, "num_generations": 4,
        "mini_batches_per_step": 2, "micro_batch_size": 16, "max_new_tokens": 8, "rollout_batch_size": 8,
        "lr": 1e-3, "warmup_steps": 0, "lr_schedule": "constant", "dtype": "float32", "autocast": None,
        "save_every": 4, "device": "cpu", "log_full_rkl": True, "temperature": 1.0,
    },
}
