"""VGS settings (arXiv 2606.00564), the paper's values as defaults, each with its source
(Table 3 / Table 4 / a section, or an [A] reading listed in docs/deviations.md and
docs/methods/vgs.md §6, each one override).

``VGSConfig``          on-policy distillation with Visual Gradient Steering (Eqs. 17-18), its
                       ablations (language steering, Eq. 19; adaptive VGS, Eq. 24; standard OPD =
                       gamma = lambda = 0) and GRPO + distillation (Eq. 22, ``alpha``).
``TeacherGRPOConfig``  the teacher stage: GRPO of Qwen3-VL-8B-Instruct (App. B.1, Table 3).

Batch units follow EasyR1 / verl, the framework family Vision-SR1-47K comes from [A, G8]:
``prompts_per_step`` is the rollout batch in prompts, and ``prompts_per_step /
mini_batches_per_step`` the prompts of one optimizer update (Table 3's "global batch 128" with
"rollout batch 512" = 4 updates per rollout batch). One epoch of Vision-SR1-47K is
``ceil(47,000 / prompts_per_step)`` steps [A: 47k rows, as the paper names the set].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

from harness.reward_registry import REWARDS, reward_names
from harness.train_config import PAPER_ROLLOUTS, OnlineConfig
from methods.grpo.config import GRPOConfig
from methods.vgs.loss import PAPER_ETA, paper_eta

TRAIN_ROWS = 47_000
"""Vision-SR1-47K, as the paper names it (§5.1); the exact row count is not printed [A]."""
EtaMode = Literal["paper-2b", "paper-4b", "exact", "fixed"]
VGS_SYSTEM = ("A conversation between user and assistant. The user asks a question, and the assistant "
              "solves it. The assistant first thinks about the reasoning process in the mind and then "
              "provides the user with the answer. The reasoning process should be enclosed within "
              "<reason></reason>tags. The final answer MUST BE put in \\boxed{}.")
"""App. B.4: the unified system prompt of the teacher's GRPO, the distillation and inference (the
same text as ``evals run --system vgs``; tests/test_vgs_config.py holds them equal)."""


def epoch_steps(prompts_per_step: int, epochs: int = 1) -> int:
    """Steps of ``epochs`` passes over Vision-SR1-47K at ``prompts_per_step`` prompts a step."""
    return epochs * math.ceil(TRAIN_ROWS / prompts_per_step)


@dataclass
class VGSConfig(OnlineConfig):
    # --- models and data
    model: str = "Qwen/Qwen3-VL-2B-Instruct"
    """§5.1: students Qwen3-VL-2B-Instruct (default) and Qwen3-VL-4B-Instruct."""
    teacher: str = ""
    """Required: the GRPO-trained Qwen3-VL-8B-Instruct (§5.1, App. B.1), e.g. the output of the
    recipe's ``teacher_grpo`` stage (no released checkpoint exists). Same vocabulary as the student."""
    data: str = "vision-sr1-47k"
    """§5.1: Vision-SR1-47K (image, question, verifiable answer)."""
    system_prompt: Optional[str] = VGS_SYSTEM
    """App. B.4: the reasoning template, set as every training prompt's system turn (a row that has
    its own keeps it). None: no system prompt."""
    text_view: str = "text_only"
    """G5 [A]: the unimodal context x: the image and its placeholder removed, system prompt,
    question and response ids kept (harness.scoring's ``text_only`` view, positions recomputed)."""
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    teacher_micro_batch_size: Optional[int] = None
    """Rows per teacher forward (None: ``micro_batch_size``)."""

    # --- optimisation (Table 4)
    lr: float = 1e-6
    """Table 4: AdamW, learning rate 1e-6."""
    weight_decay: float = 0.01
    """Table 4: weight decay 1e-2."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "constant"
    """Table 4: constant."""
    warmup_steps: int = 0
    """Not stated; none [A] (a constant schedule)."""
    epochs: int = 1
    """Table 4: 1 epoch; ``steps`` is derived from it (``epoch_steps``) unless given."""
    steps: int = 0
    """0: ``epochs`` passes over Vision-SR1-47K (92 steps at 512 prompts) [A, G8]."""
    prompts_per_step: int = 512
    """Table 4: global batch 512, read as 512 prompts [A, G8]."""
    num_generations: int = 1
    """Not stated for distillation; one rollout per prompt [A, G8] (TRL GKD)."""
    mini_batches_per_step: int = 1
    """One update per rollout batch (global batch = rollout batch): fully on-policy [A]."""
    freeze_vision: bool = False
    """Table 4: vision encoder not frozen."""
    temperature: float = 1.0
    """Table 4: rollout temperature 1.0."""
    top_p: float = 1.0
    """Table 4: rollout top-p 1.0."""
    max_new_tokens: int = 2048
    """Table 4: max response length 2048."""
    max_prompt_length: int = 16384
    """Table 4: max input prompt length 16384. Prompts are never truncated here: a longer one is
    counted (``prompts_over_cap``) and warned about."""

    # --- VGS (§4, Table 4, App. A, App. E)
    gamma: float = 2.0
    """Table 4 / §5.2: steering coefficient gamma (Eq. 13). 0 with ``lambda_lp = 0`` is standard OPD."""
    lambda_lp: float = 0.01
    """Table 4 / §5.2: weight lambda of the language-preservation term (Eq. 16-17), or of the
    visual-preservation term under language steering (Eq. 19)."""
    eta_mode: EtaMode = "paper-2b"
    """Eq. 15's normaliser. ``paper-2b`` / ``paper-4b``: the paper's fixed 0.41 / 0.36 (§5.2, App. A),
    valid at gamma = 2 only (an error otherwise); ``exact``: Eq. 15 every step from the two
    objectives' full-batch gradients (norms and dot product reduced over ranks; one extra backward
    per objective); ``fixed``: the value of ``eta``."""
    eta: float = 1.0
    """The normaliser when ``eta_mode=fixed`` (1.0: none, e.g. standard OPD)."""
    lp_quantile: float = 0.7
    """Eq. 16: LP acts on tokens with VDS strictly above the 70th percentile (top 30%)."""
    adaptive_gamma: bool = False
    """App. E, Eqs. 24-25: a token-level gamma_t in {0, gamma/2, gamma} by VDS quantiles (Table 5)."""
    adaptive_low_quantile: float = 0.4
    """Eq. 25: the lower threshold Q_0.4 of adaptive VGS."""
    steer: Literal["visual", "language"] = "visual"
    """``language``: the Language-Steering ablation of §7 (Eqs. 19-21; gamma is gamma_Lang)."""
    vp_form: Literal["multimodal", "literal"] = "multimodal"
    """G10 [A]: Eq. 21's visual-preservation KL uses the multimodal student (its stated intent);
    ``literal`` = the printed p_S(.|tau_<t, x)."""
    detach_qstar: bool = True
    """G1 [A]: the visual target Q* is a target: no gradient through the text-only student inside it."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = \
        "seq-mean-token-mean"
    """G3 [A]: 1/|tau| per trajectory, then the mean over trajectories, as Eqs. 3-18 are printed;
    ``token-mean`` is TRL GKD's batch token mean."""
    kl_chunk_size: Optional[int] = None
    """Tokens per chunk of the full-vocabulary terms (None: about 8 MiB of fp32 logits per buffer)."""
    diag_every: int = 0
    """Log the gradient-angle diagnostics of §3.2 / Fig. 3 (cosines between the standard, visual
    and language gradients, their norms, and Eq. 15's eta at ``gamma``: App. A's measurement) every
    N steps (0: never). Each costs extra backward passes. [A: the paper gives no frequency]"""
    diag_gamma: Optional[float] = None
    """The gamma at which the diagnostics evaluate Eq. 23 (``eta_at_gamma``); None: ``gamma``.
    App. A measures eta at gamma = 2 *during standard OPD* (gamma = 0): set 2.0 there."""

    # --- GRPO + distillation (§8, Eq. 22)
    alpha: Optional[float] = None
    """§8, Eq. 22: None = pure distillation (Eq. 18); a value in [0, 1] mixes GRPO's clipped
    surrogate (weight 1 - alpha) with the distillation loss (weight alpha); the paper uses 0.3."""
    mix_eta: bool = False
    """G9 [A]: Eq. 22 as printed has no eta; True scales the distillation part by eta."""
    reward: Optional[str] = None
    """Required with ``alpha``: the correctness reward (G11 [A]: ``boxed-exact``); otherwise, when
    set, rewards are only computed and logged."""
    clip_low: float = 0.2
    """G9 [A]: GRPO clip eps 0.2 (verl's default) in Eq. 22."""
    clip_high: float = 0.2
    adv_eps: float = 1e-6
    """delta of the group advantage (verl / EasyR1)."""

    def __post_init__(self) -> None:
        if self.steps == 0:
            self.steps = epoch_steps(self.prompts_per_step, self.epochs)
        super().__post_init__()
        if not self.teacher:
            raise ValueError("teacher: required (the GRPO-trained teacher sharing the student's vocabulary)")
        if self.gamma < 0 or self.lambda_lp < 0:
            raise ValueError(f"gamma and lambda_lp must be >= 0, got {self.gamma}, {self.lambda_lp}")
        if self.eta_mode.startswith("paper-"):
            paper_eta(self.eta_mode[len("paper-"):], self.gamma)  # raises unless gamma == 2
        elif self.eta_mode == "fixed" and not self.eta > 0:
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if not (0 < self.adaptive_low_quantile <= self.lp_quantile < 1):
            raise ValueError(f"need 0 < adaptive_low_quantile <= lp_quantile < 1, got "
                             f"{self.adaptive_low_quantile}, {self.lp_quantile}")
        if self.adaptive_gamma and self.steer != "visual":
            raise ValueError("adaptive_gamma applies to visual steering only (App. E)")
        if self.diag_every < 0:
            raise ValueError(f"diag_every must be >= 0, got {self.diag_every}")
        if self.alpha is not None:
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
            if not self.reward:
                raise ValueError("reward: required with alpha (GRPO + distillation, Eq. 22)")
        if self.reward is not None and self.reward not in REWARDS:
            raise ValueError(f"reward: unknown reward {self.reward!r} (known: {', '.join(reward_names())})")

    @property
    def eta_value(self) -> Optional[float]:
        """The fixed normaliser, or None for ``exact``."""
        if self.eta_mode == "exact":
            return None
        if self.eta_mode == "fixed":
            return self.eta
        return PAPER_ETA[self.eta_mode[len("paper-"):]]


@dataclass
class TeacherGRPOConfig(GRPOConfig):
    """GRPO of the teacher (App. B.1, Table 3), on methods.grpo."""

    model: str = "Qwen/Qwen3-VL-8B-Instruct"
    """§5.1 / App. B.1: the teacher starts from Qwen3-VL-8B-Instruct."""
    data: str = "vision-sr1-47k"
    """App. B.1: Vision-SR1-47K."""
    system_prompt: Optional[str] = VGS_SYSTEM
    """App. B.4: the same reasoning template as the distillation (unified across stages)."""
    lr: float = 1e-6
    """Table 3: AdamW, learning rate 1e-6."""
    weight_decay: float = 0.01
    """Table 3: weight decay 1e-2."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "constant"
    """Table 3: constant."""
    warmup_steps: int = 0
    """Not stated; none [A]."""
    epochs: int = 2
    """Table 3: 2 epochs; ``steps`` is derived from it unless given."""
    steps: int = 0
    """0: ``epochs`` passes over Vision-SR1-47K at ``prompts_per_step`` (184 steps) [A]."""
    prompts_per_step: int = 512
    """Table 3: rollout batch size 512 (prompts, EasyR1's ``rollout_batch_size``) [A]."""
    mini_batches_per_step: int = 4
    """Table 3: global batch 128 prompts per update: 512 / 128 = 4 updates per rollout batch [A]."""
    num_generations: int = 8
    """Table 3: rollout size G = 8."""
    temperature: float = 1.0
    """Table 3: rollout temperature 1.0."""
    top_p: float = 0.99
    """Table 3: rollout top-p 0.99."""
    max_new_tokens: int = 2048
    """Table 3: max response length 2048."""
    max_prompt_length: int = 12800
    """Table 3: max input prompt length 12800 (counted, never truncated: ``prompts_over_cap``)."""
    kl_coef: float = 0.0
    """Table 3: no KL loss."""
    freeze_vision: bool = False
    """Table 3: vision encoder not frozen."""
    reward: str = "boxed-exact"
    """G11 [A]: accuracy only, a binary match of the ``\\boxed{}`` answer (the prompt of App. B.4
    asks for it); no format reward."""

    def __post_init__(self) -> None:
        if self.steps == 0:
            self.steps = epoch_steps(self.prompts_per_step, self.epochs)
        super().__post_init__()
        if self.prompts_per_step * self.num_generations % self.mini_batches_per_step:
            raise ValueError("prompts_per_step * num_generations must divide into mini_batches_per_step")


# Offline CPU smoke runs: tiny random Qwen3-VL models (the paper's architecture; harness.tiny),
# the synthetic image questions of harness.data.synthetic.visual (the text-only view really drops
# the image), short responses, fp32, a few steps. The numbers say nothing about the paper.
_SMOKE_RUN = {
    "model": "smoke:qwen3_vl", "data": "smoke-visual", "data_limit": 32, "dtype": "float32", "autocast": None,
    "device": "cpu", "lr_schedule": "constant", "warmup_steps": 0, "save_every": 2, "rollout_batch_size": 8,
}
PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_ROLLOUTS),
    # Teacher: the tiny Qwen2.5-VL (same offline vocabulary, another architecture and initialisation;
    # in a recipe, the smoke teacher_grpo stage's output).
    # 8 prompts x 2 rollouts, 8-token responses, lr 1e-3, 8 steps; fixed eta 0.41 at gamma 2
    # (the paper's 2B constant); angle diagnostics every 2 steps.
    "smoke": {**_SMOKE_RUN, "teacher": "smoke:qwen2_5_vl", "teacher_dtype": "float32", "steps": 8,
              "prompts_per_step": 8, "num_generations": 2, "micro_batch_size": 8, "max_new_tokens": 8,
              "lr": 1e-3, "diag_every": 2},
}
TEACHER_PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_ROLLOUTS),
    # GRPO of the tiny Qwen3-VL on the smoke images with the dense synthetic reward a random model
    # can learn (fraction of even token ids), so the "teacher" differs from the initial student.
    "smoke": {**_SMOKE_RUN, "steps": 6, "prompts_per_step": 4, "num_generations": 4, "mini_batches_per_step": 2,
              "micro_batch_size": 8, "max_new_tokens": 8, "lr": 1e-2, "reward": "smoke-even-tokens"},
}
