"""PTD-PO settings: the paper's values as defaults, each with its source (arXiv 2606.07000 Table 3
/ §3.1 = [P]; the authors' code = [C]; our reading = [A], listed in docs/deviations.md and
docs/methods/ptdpo.md), and a smoke profile that runs the whole loop offline on a CPU.

The RLVR optimiser under the PTD term is a switch (Table 4): ``optimizer`` picks GRPO, DAPO or
GSPO, and the optimiser-specific fields left unset (``None``) take that optimiser's values
(:data:`OPTIMIZERS`). ``lambda_ptd = 0`` is the plain optimiser (tested: same value and gradient),
which is how the recipe's GRPO / DAPO / GSPO baselines run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from harness.reward_registry import REWARDS
from harness.train_config import PAPER_ROLLOUTS
from methods.grpo.config import GRPOConfig
from methods.ptdpo.loss import DIVERGENCES, SELECTIONS

OPTIMIZERS: dict[str, dict[str, Any]] = {
    # [C] EasyR1 defaults in the authors' launch scripts: clip 0.2 / 0.3, dual clip 3.0, token-mean
    # aggregation ("loss_avg_mode=token"), token-level ratio (docs/methods/ptdpo.md T4, T5).
    "grpo": {"clip_low": 0.2, "clip_high": 0.3, "clip_ratio_c": 3.0, "loss_agg": "token-mean",
             "ratio_level": "token", "dynamic_sampling": False},
    # DAPO (Yu et al. 2025, arXiv 2503.14476 §3): clip-higher eps_low 0.2 / eps_high 0.28, dynamic
    # sampling (drop groups whose accuracy is all 0 or all 1, refill), token-level loss. No dual clip.
    "dapo": {"clip_low": 0.2, "clip_high": 0.28, "clip_ratio_c": 0.0, "loss_agg": "token-mean",
             "ratio_level": "token", "dynamic_sampling": True},
    # GSPO (Zheng et al. 2025, arXiv 2507.18071 §4-5): length-normalised sequence ratio, clip range
    # 3e-4 / 4e-4, per-sequence mean of the objective.
    "gspo": {"clip_low": 3e-4, "clip_high": 4e-4, "clip_ratio_c": 0.0, "loss_agg": "seq-mean-token-mean",
             "ratio_level": "sequence", "dynamic_sampling": False},
}
PRIVILEGED = ("hint", "answer", "solution")


@dataclass
class PTDPOConfig(GRPOConfig):
    model: str = "Qwen/Qwen3-VL-4B-Thinking"
    """§3: Qwen3-VL-{2B, 4B, 8B}-Thinking [P]; 4B (the ablations' model) by default."""
    data: str = "virl39k"
    """§3.1: ViRL39K (38,870 questions) [P]."""
    hints: Optional[str] = None
    """A hint set written by ``python -m methods.ptdpo.hints`` (JSONL of ``{"id", "hint"}``): each
    training row whose id is in it gets that hint as ``Sample.hint``. None: the data set's own
    ``Sample.hint`` (champ's human hints, the synthetic generators' solution paths)."""
    instruction: Optional[str] = "think_boxed"
    """Answer-format instruction appended to each question: ``<think> ... </think>`` then
    ``\\boxed{}`` (App. C.2; harness.data.prompts.THINK_BOXED) [P]."""
    steps: int = 203
    """Two epochs of ViRL39K at 384 questions a step: ceil(2 x 38,870 / 384) [A from P]."""
    lr: float = 1e-6
    """Table 3 [P]."""
    weight_decay: float = 0.01
    """Table 3 [P]."""
    lr_schedule: Literal["cosine", "constant", "linear"] = "constant"
    """Table 3: constant, warm-up ratio 0 [P]."""
    warmup_steps: int = 0
    prompts_per_step: int = 384
    """Table 3: rollout batch size 384 [P]."""
    mini_batches_per_step: int = 3
    """Table 3: global batch 128 questions per optimizer update, so 3 updates a step [C, EasyR1
    semantics; T10]."""
    num_generations: int = 8
    """Table 3: rollout number 8 (ablations 5) [P]."""
    top_p: float = 0.99
    """Table 3 [P]."""
    temperature: float = 1.0
    """[C] launch scripts (not in the paper; T11)."""
    max_new_tokens: int = 4096
    """Table 3: 4096 (ablations 2048) [P]."""
    freeze_vision: bool = False
    """Table 3: vision tower trained [P]."""
    reward: str = "format-accuracy"
    """Table 3 / App. B: 0.1 format + 0.9 binary accuracy [P]; the format rule is ours (T11 [A])."""
    accuracy_reward: str = "math"
    """Binary accuracy for routing (Eq. 6; T2 [C]): rule-based math-verify matching [A]."""
    kl_coef: float = 0.01
    """Table 3: KL penalty 1e-2 [P]."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """[C] ``low_var_kl`` (T5)."""
    kl_direction: Literal["reverse", "swapped"] = "reverse"
    """T5: k3 of KL(pi_theta || pi_ref) [A]; ``swapped`` is [C]'s ``kl_direction=forward_kl``."""
    skip_ref_kl_routed_groups: bool = False
    """T6: [C] zeroes the reference KL of every rollout of a group with a routed rollout; the
    paper does not (default off)."""

    optimizer: Literal["grpo", "dapo", "gspo"] = "grpo"
    """The RLVR optimiser under PTD (Table 4); GRPO in every other table [P]."""
    clip_low: Optional[float] = None  # type: ignore[assignment]
    """None: the optimiser's value (:data:`OPTIMIZERS`)."""
    clip_high: Optional[float] = None  # type: ignore[assignment]
    clip_ratio_c: Optional[float] = None
    """Dual-clip constant (> 1); 0 turns it off; None: the optimiser's (GRPO [C] 3.0)."""
    loss_agg: Optional[Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",  # type: ignore[assignment]
                               "seq-mean-token-sum-norm"]] = None
    ratio_level: Optional[Literal["token", "sequence", "sequence-sum"]] = None  # type: ignore[assignment]
    dynamic_sampling: Optional[bool] = None
    """DAPO's dynamic sampling; None: on for ``dapo`` only."""
    max_gen_batches: int = 3
    """Dynamic sampling: rollout batches drawn at most per step before the batch is completed with
    filtered groups (verl's ``max_num_gen_batches``; DAPO gives no number) [A]."""
    pg_coef: float = 1.0
    """Weight of the policy-gradient surrogate; 0 is pure self-distillation (the OPSD baseline)."""

    lambda_ptd: float = 0.5
    """Table 3: {5e-2, 5e-1}; [C] launch scripts 2B 5e-2, 4B 5e-1, 8B 5e-2 (T9)."""
    tau_ptd: float = 1.0
    """Table 3: activation threshold 1.0 [P] (ablations 0.2, 0.4)."""
    trajectory_selection: Literal["failed", "all"] = "failed"
    """Table 3: failed trajectories only [P]; ``all``: every rollout of a group below tau (Table 2)."""
    top_k: int = 100
    """Table 3: K = 100 [P] (Table 5: 50, 200)."""
    topk_support: Literal["union", "student", "teacher"] = "union"
    """Eq. 14: TopK(p) U TopK(q) [P]; ``student`` is [C]'s support (T7)."""
    divergence: Literal["topk_jsd", "jsd", "forward_kl", "reverse_kl"] = "topk_jsd"
    """Eq. 17 [P]; the others are App. D.2's comparisons (Fig. 8)."""
    privileged: Literal["hint", "answer", "solution"] = "hint"
    """What the frozen teacher sees besides x (Eq. 9): the hint [P]; ``answer`` / ``solution``
    (reference CoT and answer) are the answer-revealing contexts of Fig. 3 and the OPSD / HDPO
    baselines (T12)."""
    hint_position: Literal["after", "before"] = "after"
    """x^h = [x; h]: the hint after the question in the user turn [A, T1]; ``before`` is the
    harness's ``hint`` view."""
    teacher_micro_batch_size: Optional[int] = None
    """Rows per teacher forward (None: ``micro_batch_size``)."""
    kl_chunk_size: Optional[int] = None
    """Tokens per chunk of the full-vocabulary divergence (None: harness.losses.CHUNK_BYTES, 128 MiB of fp32 logits)."""

    def __post_init__(self) -> None:
        preset = OPTIMIZERS[self.optimizer]
        for name, value in preset.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        super().__post_init__()
        if self.accuracy_reward not in REWARDS:
            raise ValueError(f"accuracy_reward: unknown reward {self.accuracy_reward!r}")
        if self.lambda_ptd < 0 or self.kl_coef < 0 or self.pg_coef < 0:
            raise ValueError("lambda_ptd, kl_coef and pg_coef must be >= 0")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.clip_ratio_c and self.clip_ratio_c <= 1:
            raise ValueError(f"clip_ratio_c must be > 1 (or 0: off), got {self.clip_ratio_c}")
        if self.max_gen_batches < 1:
            raise ValueError(f"max_gen_batches must be >= 1, got {self.max_gen_batches}")
        if self.dynamic_sampling:
            self.refuse_rank_local_rollouts("dynamic_sampling")
        if self.trajectory_selection not in SELECTIONS or self.divergence not in DIVERGENCES:
            raise ValueError("unknown trajectory_selection or divergence")


PROFILES: dict[str, dict[str, Any]] = {
    "paper": dict(PAPER_ROLLOUTS),
    # Offline CPU smoke run, not a reproduction: the tiny random Qwen3-VL (harness.tiny) on the
    # champ training split (harness.data.packaged.champ_split; real competition problems with
    # human, answer-free hints in Sample.hint), 2 questions x 4 rollouts, 8-token responses, fp32,
    # lr 1e-3, 4 steps. A random model fails every champ problem, so every rollout is routed and
    # the PTD term is what moves the weights (the composite reward's advantages are all 0).
    "smoke": {
        "model": "smoke:qwen3_vl", "data": "champ", "steps": 4, "prompts_per_step": 2, "num_generations": 4,
        "mini_batches_per_step": 1, "micro_batch_size": 8, "max_new_tokens": 8, "rollout_batch_size": 2,
        "lr": 1e-3, "dtype": "float32", "autocast": None, "device": "cpu", "save_every": 2,
        "freeze_vision": True,
    },
}
