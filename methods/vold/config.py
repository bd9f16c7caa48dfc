"""VOLD settings for its three stages, with the paper's values as defaults (each names its source:
arXiv 2510.23497 Table 4 / §3-4, or docs/methods/vold.md where the paper is silent) and a smoke
profile per stage that scales everything down (steps, batch, lengths, models) so the whole
pipeline runs offline on a 2-core CPU in about a minute; smoke numbers say nothing about the paper.

Stages:
  traces  (stage 0)  ``TracesConfig``   the text-only teacher writes reasoning traces for SFT prompts
  sft     (stage 1)  ``VOLDSFTConfig``  SFT of the student VLM on those traces (Eq. 4)
  rl      (stage 2)  ``VOLDConfig``     GRPO + beta x teacher distillation on the same rollouts (Eq. 5/6)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from harness.train_config import PAPER_ROLLOUTS, PAPER_TRACES, VLLMSettings
from methods.grpo.config import GRPOConfig
from methods.grpo.config import PROFILES as GRPO_PROFILES
from methods.sft.config import PROFILES as _SFT_METHOD_PROFILES
from methods.sft.config import SFTConfig
from methods.vold.loss import KL_NORMS

STAGES = ("traces", "sft", "rl")


# ------------------------------------------------------------------ stage 0: teacher traces --

@dataclass
class TraceSampling:
    """How the teacher samples a trace (stage 0). The paper gives only the length limit."""

    max_new_tokens: int = 8192
    """§4.1: "keeping only trajectories under 8192 tokens"; a trace that reaches this cap without
    ending is over the limit and is dropped (see ``drop_truncated``)."""
    drop_truncated: bool = True
    """§4.1: over-length traces are dropped; no answer verification either way (§4.1)."""
    temperature: float = 0.6
    """Not given by VOLD; Qwen3's recommended thinking-mode sampling (Qwen3 model card: T 0.6,
    top-p 0.95). [A]"""
    top_p: float = 0.95
    """See ``temperature``. [A]"""
    batch_size: int = 8
    """Prompts per generate call (memory only)."""
    chunk_prompts: int = 256
    """Prompts per resumable part file: an interrupted run redoes at most one chunk."""
    engine: Literal["hf", "vllm"] = "hf"
    """Rollout engine of the teacher: ``hf`` (transformers' generate; CPU, smoke) or ``vllm``, the
    paper profile's (MoT prompts, 8192 tokens)."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    """The vLLM engine's settings (``engine: vllm``)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.chunk_prompts < 1:
            raise ValueError("max_new_tokens, batch_size and chunk_prompts must be >= 1")
        if self.temperature < 0 or not (0 < self.top_p <= 1):
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")


@dataclass
class TracesConfig(TraceSampling):
    model: str = "Qwen/Qwen3-8B"
    """§4.1: the text-only teacher Qwen3-8B generates "MoT-Teacher-8B"."""
    data: str = "mixture-of-thoughts"
    """§3.2 / §4.1: the prompts of Mixture-of-Thoughts (its own traces are not used)."""
    data_split: str = "train"
    data_limit: Optional[int] = None
    view: str = "text_only"
    """The teacher is text-only: prompts are rendered without images (§3.2)."""
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    device: str = "auto"
    """``auto``: CUDA when available, else CPU."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("data: required (the SFT prompts)")


# ------------------------------------------------------------------ stage 1: SFT on traces ---

@dataclass
class VOLDSFTConfig(SFTConfig):
    """methods.sft on the teacher's traces (Eq. 4) with VOLD's Table 4 stage-1 recipe."""

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """§4.1: student Qwen2.5-VL-3B-Instruct."""
    data: str = "mixture-of-thoughts"
    """§3.2: SFT on Mixture-of-Thoughts prompts with teacher (Qwen3-8B) traces ("MoT-Teacher-8B",
    written in stage 0)."""
    steps: int = 4000
    """Table 4: 4000 steps (~5 epochs, §4.1)."""
    batch_size: int = 256
    """Table 4: batch size 256 (rows per optimizer step, over all ranks)."""
    lr: float = 5e-5
    """Table 4: stage-1 learning rate."""
    weight_decay: float = 0.01
    """Table 4: AdamW, weight decay 1e-2."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """Table 4: cosine."""
    warmup_steps: int = 150
    """Table 4: 150 warmup steps (stage 1)."""
    max_length: int = 8192
    """Table 4 / §3.2: traces under 8192 tokens; responses are cut to this many tokens."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    """Eq. 4 sums over response tokens; its normalisation is unstated (V13): token-mean over the
    whole batch, as TRL's SFTTrainer does."""
    freeze_vision: bool = True
    """Table 4: vision encoder frozen (tower and merger, V10)."""
    micro_batch_size: int = 4
    save_every: int = 500

    teacher: str = "Qwen/Qwen3-8B"
    """Either a traces dataset written by stage 0 (a directory with ``traces.yaml``, e.g. the
    output of a ``vold_traces`` recipe stage) or a teacher model, in which case stage 0 runs first
    inside this run directory (``<out>/traces``) on the prompts of ``data``."""
    traces: TraceSampling = field(default_factory=TraceSampling)
    """Stage-0 sampling when ``teacher`` is a model."""
    stop_at: Optional[int] = None
    """Cold-start ablation (App. B.1, Fig. 4): follow the ``steps``-step schedule but stop after
    ``stop_at`` steps and export that state (the paper's "checkpoint at SFT step N")."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stop_at is not None and not (1 <= self.stop_at <= self.steps):
            raise ValueError(f"stop_at must be in [1, steps={self.steps}], got {self.stop_at}")


# ------------------------------------------------------------------ stage 2: RL + distillation

@dataclass
class VOLDConfig(GRPOConfig):
    """GRPO with VOLD's Table 4 stage-2 recipe, plus the teacher term of Eq. 5/6."""

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """§4.1: student Qwen2.5-VL-3B-Instruct (the stage-1 checkpoint in the full pipeline)."""
    data: str = "orz-57k"
    """§4.1: stage-2 RL on orz-57k (text-only math with ground-truth answers)."""
    steps: int = 60
    """Table 4: 60 RL steps."""
    lr: float = 6e-6
    """Table 4: stage-2 learning rate."""
    weight_decay: float = 0.01
    """Table 4: AdamW, weight decay 1e-2."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """Table 4: cosine schedule."""
    warmup_steps: int = 5
    """Table 4: 5 warmup steps (stage 2)."""
    prompts_per_step: int = 256
    """Table 4: batch size 256 (read as prompts, V7)."""
    num_generations: int = 5
    """Table 4: 5 rollouts per prompt."""
    temperature: float = 1.0
    """Not given by VOLD; 1.0 assumed (V7)."""
    max_new_tokens: int = 8192
    """Table 4: max sequence length 8192 (read as the response cap, V14)."""
    mini_batches_per_step: int = 1
    """Not given by VOLD; 1 (fully on-policy) assumed."""
    clip_low: float = 0.2
    """Eq. 2: eps_lower = 0.2 ("following DAPO", arXiv 2503.14476)."""
    clip_high: float = 0.3
    """Eq. 2: eps_upper = 0.3 (DAPO clip-higher)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    """Token-level ratio and token-mean aggregation (DAPO / verl; V3, V4)."""
    freeze_vision: bool = True
    """Table 4: vision encoder frozen (tower and merger, V10)."""
    micro_batch_size: int = 4
    save_every: int = 10

    teacher: str = "Qwen/Qwen3-8B"
    """§4.1: default text-only teacher Qwen3-8B (4B / 14B in App. B.2)."""
    beta: float = 0.1
    """KL coefficient. §4.1 says 0.1, Table 4 says 1e-3 (ambiguity V1, docs/deviations.md): 0.1 with
    token-mean is the default; ``beta=0.001`` is Table 4's reading."""
    kl_mask: bool = True
    """Reward-guided KL masking, Eq. 6 (the full VOLD); False gives Eq. 5 (App. B.3 ablation)."""
    kl_estimator: Literal["k2", "k1", "k3", "full_reverse", "full_forward"] = "k2"
    """§3.1: k2 on the token the student sampled. ``full_reverse`` = KL(pi_theta || pi_phi) and
    ``full_forward`` = KL(pi_phi || pi_theta) (Eq. 3 as written) over the full vocabulary
    (ambiguity V2, docs/deviations.md)."""
    kl_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = "token-mean"
    """Aggregation of the distillation term: token-mean like the policy loss (V4); Eqs. 3-6
    literally sum over tokens (``seq-mean-token-sum``)."""
    kl_mask_norm: Literal["all-tokens", "failed-tokens"] = "all-tokens"
    """V5: correct rollouts count in the KL denominator (Eq. 6 literally) or not."""
    teacher_view: str = "text_only"
    """§3.2: the text-only teacher scores the student's response given the text-only prompt,
    rendered with the teacher's own chat template (V9)."""
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    teacher_micro_batch_size: Optional[int] = None
    """Rows per teacher forward (None: ``micro_batch_size``)."""
    kl_chunk_size: Optional[int] = None
    """Tokens per chunk of the full-vocabulary KL (None: harness.losses.CHUNK_BYTES, 128 MiB of fp32 logits)."""
    reward: str = "boxed-exact"
    """§3.2 / §4.1: binary exact match of the ``\\boxed{}`` answer with the ground truth
    (harness.rewards.exact_match; "math" = math-verify equivalence is the switch, V11)."""

    # --- validation during RL (§4.1, Fig. 3): Geo3K, visual
    val_benchmark: str = "geometry3k_val"
    """§4.1: "we track progress on Geo3K" (the validation split of hiyouga/geometry3k, 300 rows)."""
    val_every: int = 5
    """Validate every N steps (and before the first); frequency not given [A]. 0 turns it off."""
    val_limit: Optional[int] = None
    val_source: str = "hub"
    """evals source: ``hub``, ``smoke`` (fixture rows in the real schema) or a local path."""
    val_max_new_tokens: int = 8192
    """Same cap as training (Table 4). [A]"""
    val_batch_size: int = 8
    val_smoke_n: int = 4
    """Fixture rows when ``val_source == "smoke"``."""

    def __post_init__(self) -> None:
        super().__post_init__()  # validates ``reward`` against harness.reward_registry
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.beta > 0 and not self.teacher:
            raise ValueError("teacher: required when beta > 0")
        if self.kl_coef != 0:
            raise ValueError("kl_coef: VOLD replaces GRPO's reference-KL penalty by the teacher term (§3.2, V8); "
                             "keep kl_coef=0 (use methods.grpo for a reference KL)")
        if self.kl_mask_norm not in KL_NORMS:
            raise ValueError(f"kl_mask_norm must be one of {KL_NORMS}")
        if self.val_every < 0:
            raise ValueError("val_every must be >= 0")


# ------------------------------------------------------------------ profiles ------------------

_SMOKE_DEVICE = {"dtype": "float32", "device": "cpu"}
SFT_SMOKE_BASE = dict(_SFT_METHOD_PROFILES["smoke"])

TRACES_PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_TRACES),
    # Tiny random Qwen3 (harness.models.smoke_model_path("qwen3"), same tokenizer as the tiny VLM
    # student) writing 16 traces of at most 24 tokens on synthetic text math. A random model
    # almost never ends a trace, so the smoke profile keeps truncated traces (the paper drops them).
    "smoke": {"model": "smoke:qwen3", "data": "smoke-text-math", "data_limit": 16, "max_new_tokens": 24,
              "drop_truncated": False, "batch_size": 8, "chunk_prompts": 8, **_SMOKE_DEVICE},
}

SFT_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"traces": dict(PAPER_TRACES)},
    # methods.sft's smoke profile (tiny Qwen2.5-VL, lr 1e-3, short rows, fp32, CPU) on the smoke
    # traces of 16 prompts, 8 steps instead of 4000.
    "smoke": {**SFT_SMOKE_BASE, "teacher": "smoke:qwen3", "data_limit": 16, "steps": 8, "max_length": 32,
              "traces": {k: TRACES_PROFILES["smoke"][k]
                         for k in ("max_new_tokens", "drop_truncated", "batch_size", "chunk_prompts")}},
}

RL_PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_ROLLOUTS),
    # methods.grpo's smoke profile (tiny Qwen2.5-VL, 2 mini-batches) for 8 steps of 4 easy-vqa
    # training questions x 5 rollouts, 8-token responses, lr 3e-5 (at 1e-3, 8 steps erased what a
    # smoke SFT had taught: docs/smoke_profile.md), VOLD's own binary reward
    # (boxed-exact, so Eq. 6's mask acts; the warm-started student answers at chance, ~0.25), the
    # tiny Qwen3 as the teacher, and Geo3K validation on 8 held-out smoke items every 4 steps.
    "smoke": {**GRPO_PROFILES["smoke"], "steps": 8, "data": "easy-vqa", "reward": "boxed-exact",
              "max_new_tokens": 8, "lr": 3e-5, "teacher": "smoke:qwen3",
              "teacher_dtype": "float32", "val_source": "smoke", "val_every": 4, "val_smoke_n": 8,
              "val_max_new_tokens": 8, "save_every": 4},
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {"traces": TRACES_PROFILES, "sft": SFT_PROFILES, "rl": RL_PROFILES}
CONFIGS: dict[str, type] = {"traces": TracesConfig, "sft": VOLDSFTConfig, "rl": VOLDConfig}
