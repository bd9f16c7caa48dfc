"""Settings every trainer shares (model, data, optimizer, schedule, checkpointing, parallelism).

Method configs (``methods/<name>/config.py``) subclass :class:`TrainConfig`. The defaults here are
neutral: the libraries' own defaults (verl, TRL, torch), each cited, never a paper's recipe. A
paper's values live in its method's config or profile, or in its recipe's stage settings
(``reproduce/papers/<paper>.yaml``), each with its source; each method's ``PROFILES["smoke"]``
scales a run down for the offline CPU profile.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from harness.optim import Schedule


@dataclass
class TrainConfig:
    # --- what to train on
    model: str = ""
    """Required. Hub id or local path; ``smoke:<kind>`` is a tiny random model
    (harness.models.smoke_model_path)."""
    data: str = ""
    """Training set name or path, as harness.data.load_training_set takes it."""
    data_split: str = "train"
    data_limit: Optional[int] = None
    """Use only the first N rows (None: all)."""
    view: str = "full"
    """Prompt view the policy sees and trains through (harness.scoring views)."""
    seed: int = 0
    """Seeds Python, NumPy and torch; data order and per-step sampling seeds derive from it."""

    # --- optimisation
    steps: int = 100
    """Training steps (one step = one batch; for online methods one rollout batch). No library
    default maps onto this; every recipe states its own."""
    micro_batch_size: int = 4
    """Rows per forward/backward; gradients accumulate to the full batch (changes memory, not the math)."""
    lr: float = 1e-6
    """verl's actor ``optim.lr`` default."""
    weight_decay: float = 0.01
    """verl's actor ``optim.weight_decay`` default."""
    adam_beta1: float = 0.9
    """AdamW betas/eps: not stated by the papers; torch's / verl's defaults."""
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    lr_schedule: Schedule = "constant"
    """verl's actor ``optim.warmup_style`` default (constant after warm-up)."""
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    """Cosine floor as a fraction of lr (verl's ``min_lr_ratio`` default 0)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip; not stated by the papers; verl's actor ``grad_clip`` default 1.0."""

    # --- model handling
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the trained weights (and so of AdamW's update). fp32 master weights, as verl's FSDP
    mixed precision keeps them: a bf16 weight cannot absorb an lr-6e-6 step."""
    autocast: Optional[Literal["bfloat16", "float16"]] = "bfloat16"
    """Compute dtype of forward passes (torch.autocast; verl's ``param_dtype`` bf16). None: the
    weights' dtype."""
    freeze_vision: bool = False
    """Freeze the vision encoder (tower and merger). Off, as verl's ``freeze_vision_tower`` and
    TRL train every parameter; VOLD (Table 4) freezes it."""
    gradient_checkpointing: bool = False

    # --- tracking (not part of the run's identity: a resumed run may change it)
    report_to: str = "none"
    """``none``, or trackers fed the step records as ``metrics.jsonl`` gets them, comma-separated:
    ``tensorboard``, ``wandb`` (``WANDB_MODE``, default offline), ``mlflow`` (harness.tracking)."""

    # --- run management
    save_every: int = 10
    """Checkpoint every N steps (and always at the last step)."""
    keep_checkpoints: int = 2
    distributed: Literal["auto", "single", "ddp", "fsdp", "zero2", "zero3"] = "auto"
    """``auto``: torch DDP when launched by torchrun with WORLD_SIZE > 1, else single process.
    ``fsdp``: torch FSDP2; ``zero2`` / ``zero3``: DeepSpeed ZeRO (docs/scale_out.md)."""
    device: str = "auto"
    shard_frozen: bool = True
    """Under ``fsdp`` / ``zero3`` the frozen teacher / reference model is sharded over the ranks like
    the student (FSDP2 without optimizer, ZeRO-3 inference; ``Strategy.shard_frozen``), its
    parameters gathered per forward. False (and under ``single`` / ``ddp`` / ``zero2``): every
    rank holds a full copy."""

    def __post_init__(self) -> None:
        from harness.tracking import parse_report_to
        parse_report_to(self.report_to)  # a one-line error for an unknown tracker
        for name in ("steps", "micro_batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not self.model:
            raise ValueError("model: required (a hub id, a local path or smoke:<kind>)")
        if not self.data:
            raise ValueError("data: required (a training-set name or path)")


@dataclass
class VLLMSettings:
    """Settings of the vLLM engine (``rollout_engine`` / ``engine`` = ``vllm``), passed to ``vllm.LLM``."""

    gpu_memory_utilization: float = 0.5
    """Share of each GPU's memory vLLM takes for weights and KV cache; colocated with training,
    leave the trainer its share (verl's default 0.5)."""
    tensor_parallel_size: int = 1
    """GPUs one vLLM engine spans (a model too large for one GPU)."""
    max_model_len: Optional[int] = None
    """Longest prompt + response the engine admits (None: the model config's context length;
    set it to size the KV cache to the recipe's lengths)."""
    enforce_eager: bool = False
    """No CUDA graphs (slower, less memory, faster start)."""
    sleep_mode: bool = False
    """Colocated training: vLLM releases its GPU memory (level-1 sleep: weights offloaded, KV cache
    dropped) during each update and wakes before the next rollout's weight sync. CUDA only."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"vllm.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"vllm.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"vllm.max_model_len must be >= 1 or null, got {self.max_model_len}")

    def engine_kwargs(self) -> dict:
        """Keyword arguments of ``harness.rollout.vllm.VLLMRolloutEngine``."""
        return {"gpu_memory_utilization": self.gpu_memory_utilization, "max_model_len": self.max_model_len,
                "enforce_eager": self.enforce_eager, "tensor_parallel_size": self.tensor_parallel_size,
                "sleep_mode": self.sleep_mode}


PAPER_ROLLOUTS: dict = {"rollout_engine": "vllm", "vllm": {"sleep_mode": True}}
"""The paper profile's rollout engine, which every online method's ``PROFILES["paper"]`` starts from:
vLLM colocated with the trainer, asleep (memory released) during each update. The papers generated
with vLLM (REOPOLD §5, verl; PTD-PO, EasyR1; VGS, TRL's vLLM mode); transformers' ``generate``
(``hf``) stays the smoke profile's and the CPU's engine."""

PAPER_TRACES: dict = {"engine": "vllm"}
"""The paper profile's engine for generate-only stages (VOLD's teacher traces): vLLM, no sleep
(nothing is trained next to it)."""


@dataclass
class OnlineConfig(TrainConfig):
    """Settings of the online loop (rollout -> reward -> method scoring -> updates)."""

    prompts_per_step: int = 64
    """Prompts per rollout batch, over all ranks. No library default maps onto it (verl's
    ``data.train_batch_size`` is 1024 prompts, TRL counts completions per device); every recipe
    states its own."""
    num_generations: int = 8
    """Rollouts per prompt (group size K): TRL's ``GRPOConfig.num_generations`` default."""
    temperature: float = 1.0
    """Rollout temperature: verl's and TRL's default."""
    top_p: float = 1.0
    """verl's and TRL's default (no nucleus truncation)."""
    max_new_tokens: int = 1024
    """Response-length cap in tokens (verl's ``data.max_response_length`` is 512, TRL's
    ``max_completion_length`` 256; 1024 leaves room for a reasoning chain)."""
    mini_batches_per_step: int = 1
    """Optimizer updates per rollout batch (per epoch); the rows are cut into this many mini-batches.
    1 = fully on-policy. With > 1 the importance ratio departs from 1 after the first update and
    the clip acts."""
    ppo_epochs: int = 1
    """Passes over the rollout batch (verl ``ppo_epochs`` default 1)."""
    recompute_old_logp: Literal["auto", "always", "never"] | bool = "auto"
    """Where pi_old log-probs come from. ``always``: a no-grad trainer forward every step (verl's
    default: a separate rollout engine's numerics differ from the trainer's). ``never``: the
    engine's own ``old_logp``. ``auto``: the engine's when they are the trainer's quantity
    (harness.trainer.engine_logp_exact: the HF engine on the policy's own model object, single
    turn), else recomputed; decided once per run and logged as the ``old_logp_recomputed``
    metric. ``true`` / ``false`` (older configs) mean ``always`` / ``never``."""
    rollout_is: Literal["none", "token_truncate", "token_mask"] = "none"
    """Importance-sampling correction of the rollout engine / trainer mismatch (a vLLM engine's
    log-probs differ from the trainer's pi_old: own kernels, own copy of the weights): per token
    w = exp(logp_old_trainer - logp_engine), detached, multiplies the policy-gradient surrogate
    (harness.losses.rollout_is_weights). ``token_truncate``: min(w, cap) (truncated IS, Yao et al.
    2025; verl's rollout IS, TRL's ``vllm_importance_sampling_correction``, ms-swift's
    ``rollout_importance_sampling_mode=token_truncate``); ``token_mask``: w, or 0 above the cap
    (ms-swift's ``token_mask``). Needs recomputed old log-probs. ``none`` (default): the papers
    reproduced here do not use it. When both log-probs exist, ``rollout_logp_abs_diff`` is logged
    whatever this setting (docs/scale_out.md)."""
    rollout_is_cap: float = 2.0
    """The cap C of ``rollout_is`` (TRL's ``vllm_importance_sampling_cap``); 2.0 is ms-swift's
    ``rollout_importance_sampling_threshold`` default."""
    rollout_batch_size: int = 8
    """Prompts per generate call (memory only)."""
    rollout_engine: Literal["hf", "vllm"] = "hf"
    """``hf``: transformers' generate on the policy itself (CPU, tests; no weight sync). ``vllm``:
    harness.rollout.vllm on the policy's checkpoint, its weights synced from the trainer before
    every rollout (GPU; the ``gpu`` extra)."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    """The vLLM engine's settings (``vllm.gpu_memory_utilization=0.4`` on the command line)."""
    reward: str = "math"
    """Reward function name (a key of harness.reward_registry.REWARDS)."""
    tools: tuple[str, ...] = ()
    """Tools the policy may call during a rollout (names in harness.tools.TOOLS, e.g.
    ``crop_image``, ``calculate``); empty: single-turn rollouts. With tools, rollouts are
    multi-turn (harness.rollout.multiturn): observation tokens are appended, attended to and never
    trained (loss mask 0), and scorers see the same full trajectory."""
    max_tool_rounds: int = 2
    """Tool calls executed per rollout at most, then a final answer round (REOPOLD trains with 2,
    following Pixel-Reasoner)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_tool_rounds < 0:
            raise ValueError(f"max_tool_rounds must be >= 0, got {self.max_tool_rounds}")
        if self.tools:
            from harness.tools import resolve_tools

            resolve_tools(list(self.tools))  # unknown names fail here, naming the known tools
            self.refuse_rank_local_rollouts("tools (multi-turn rollouts)")
        if self.recompute_old_logp not in (True, False, "auto", "always", "never"):
            raise ValueError(f"recompute_old_logp must be auto, always or never, got {self.recompute_old_logp!r}")
        if self.rollout_is not in ("none", "token_truncate", "token_mask"):
            raise ValueError(f"rollout_is must be none, token_truncate or token_mask, got {self.rollout_is!r}")
        if not self.rollout_is_cap > 0:
            raise ValueError(f"rollout_is_cap must be > 0, got {self.rollout_is_cap}")
        if self.rollout_is != "none" and self.recompute_old_logp in ("never", False):
            raise ValueError(f"rollout_is={self.rollout_is} needs the trainer's old log-probs: "
                             "set recompute_old_logp to auto or always, not never")
        if self.num_generations < 1 or self.prompts_per_step < 1:
            raise ValueError("prompts_per_step and num_generations must be >= 1")
        rows = self.prompts_per_step * self.num_generations
        if self.mini_batches_per_step < 1 or self.mini_batches_per_step > rows:
            raise ValueError(f"mini_batches_per_step must be in [1, {rows}] (rows per rollout batch)")

    def refuse_rank_local_rollouts(self, what: str) -> None:
        """One-line error when ``what`` (a rollout scheme whose number of ``generate`` calls depends
        on each rank's own rows) meets transformers' generate on a policy sharded over the ranks,
        where every decode step is a collective and unequal call counts hang."""
        if self.rollout_engine == "hf" and self.distributed in ("fsdp", "zero3"):
            raise ValueError(f"{what} with rollout_engine=hf cannot run under distributed={self.distributed} (a "
                             f"rank-dependent number of generate calls on a sharded policy hangs); use ddp or zero2")
