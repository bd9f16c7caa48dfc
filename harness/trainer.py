"""The training loops: a shared run scaffold, the online loop (rollout -> reward -> method scoring
-> several optimizer mini-batches) and the SFT loop, with checkpoint / resume.

A method plugs into the online loop with an :class:`OnlineMethod` (verl's ``core_algos`` split,
TRL's trainer shape): it names the policy ``views`` it trains through; ``prepare`` adds per-row
tensors after rollout and reward (advantages, a teacher's log-probs or hidden states, ...) and
``loss`` maps one micro-batch's policy forward (one :class:`harness.forward.ViewOutput` per view)
to its share of the mini-batch loss, dividing by the global ``Normalizers`` (harness.update) —
one scalar, or several named objectives that ``combine`` turns into the step's gradient. Both
hooks get the step index (0-based, restored on resume). A method that needs no verifiable
reward (``needs_reward = False``) runs without a reward function; when one is given its rewards
are still computed and logged.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from harness import losses
from harness.forward import Forward, policy_forward
from harness.config import to_dict
from harness.checkpoint import (find_checkpoint, load_checkpoint, make_room, save_checkpoint, save_final,
                                seed_everything, set_aside)
from harness.distributed import Strategy, make_strategy
from harness.models import load_model, load_teacher, resolve_dtype, resolve_model_name, unwrap_model
from harness.optim import build_optimizer, build_scheduler
from harness.rollout.hf import HFRolloutEngine
from harness.run_dir import RunDir
from harness.scoring import token_logprobs
from harness.tracking import open_trackers
from harness.train_config import OnlineConfig, TrainConfig
from harness.types import Sample, SamplingParams, Trajectories
from harness.update import (Grads, LossFn, Normalizers, Objective, accumulate_update, reduce_floats, select_rows,
                            split_rows, sum_objectives)

logger = logging.getLogger(__name__)

StepFn = Callable[[int, list[Sample]], dict[str, float]]
"""(step index from 0, this rank's samples of the step) -> metrics."""


@dataclass
class Context:
    """What a step function can use: config, policy bundle (``.model``, ``.tokenizer``,
    ``.processor``), optimizer, scheduler, the data-parallel strategy and the run directory."""

    cfg: TrainConfig
    policy: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    strategy: Strategy
    run: RunDir


class EpochSampler:
    """Deterministic data order: a fresh seeded permutation each epoch; its state (epoch, position)
    is the data position saved in checkpoints."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("the training set is empty")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order()
            m = min(k - len(out), self.n - self.pos)
            out += order[self.pos:self.pos + m]
            self.pos += m
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])


def step_seed(seed: int, step: int, rank: int) -> int:
    """Sampling seed of one step on one rank: rollouts do not depend on where a run was resumed."""
    return (seed * 1_000_003 + step * 1_009 + rank * 7_919) % 2**31


def shard(items: list, strategy: Strategy) -> list:
    """This rank's contiguous share of a global batch (groups never straddle ranks)."""
    w = strategy.world_size
    if len(items) % w:
        raise ValueError(f"batch of {len(items)} is not divisible by the world size {w}")
    k = len(items) // w
    return items[strategy.rank * k:(strategy.rank + 1) * k]


def load_frozen(ctx: Context, name_or_path: str, dtype: str, *, teacher: bool = True) -> Any:
    """A frozen model for a method's ``setup``: a teacher (``harness.models.load_teacher``: its
    vocabulary checked against the policy's) or, ``teacher=False``, a reference; then sharded like
    the student when ``cfg.shard_frozen`` (``Strategy.shard_frozen``), else a full copy per rank."""
    device = ctx.strategy.device
    bundle = (load_teacher(name_or_path, ctx.policy, dtype=dtype, device=device) if teacher
              else load_model(name_or_path, dtype=dtype, device=device, trainable=False))
    place = ctx.strategy.shard_frozen if ctx.cfg.shard_frozen else partial(Strategy.shard_frozen, ctx.strategy)
    bundle.model = place(bundle.model)
    return bundle


def default_load_policy(cfg: TrainConfig, strategy: Strategy) -> Any:
    """harness.models.load_model; ``smoke:<kind>`` names the cached tiny model of that kind."""
    policy = load_model(resolve_model_name(cfg.model), dtype=cfg.dtype, device=strategy.device, trainable=True,
                        freeze_vision=cfg.freeze_vision)
    if cfg.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable()
    return policy


def run_training(cfg: TrainConfig, out_dir: str | Path, *, load_data: Callable[[], list[Sample]],
                 build_step: Callable[[Context], StepFn], samples_per_step: int,
                 load_policy: Callable[[TrainConfig, Strategy], Any] = default_load_policy,
                 stop_after: int | None = None, desc: str = "train") -> Path | None:
    """Run (or resume) ``cfg.steps`` steps in ``out_dir``; returns the final model directory.

    Order matters for failure modes: the data is loaded and validated before the directory is
    created (a bad row leaves nothing behind), and ``COMPLETE`` is written last. ``stop_after``
    ends the session after that many total steps without completing the run (tests, time-sliced
    jobs); the next call resumes. A complete run returns at once.
    """
    run = RunDir(out_dir)
    if run.is_complete():
        run.check_config(cfg)
        return run.final
    strategy = make_strategy(cfg.distributed, cfg.device)
    tracker = None
    try:
        dataset = load_data()
        sampler = EpochSampler(len(dataset), cfg.seed)
        if strategy.is_main:
            run.start(cfg)
        strategy.barrier()
        seed_everything(cfg.seed + strategy.rank)
        policy = load_policy(cfg, strategy)
        policy.model, optimizer = strategy.wrap(
            policy.model, lambda m: build_optimizer(m, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2),
                                                    cfg.adam_eps), cfg.max_grad_norm)
        scheduler = build_scheduler(optimizer, cfg.lr_schedule, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
        start = 0
        ckpt, unusable = find_checkpoint(run.checkpoints)
        if strategy.is_main:
            for bad, why in unusable:
                logger.warning("skipping checkpoint %s: %s; resuming from %s", bad, why,
                               ckpt.path if ckpt is not None else "the start")
        strategy.barrier()  # every rank has chosen before the unusable ones are set aside
        if strategy.is_main:
            set_aside(unusable)
        if ckpt is not None:
            load_checkpoint(ckpt, policy.model, optimizer, scheduler, strategy)
            sampler.load_state_dict(ckpt.data["sampler"])
            start = ckpt.step
        if strategy.is_main:
            run.truncate_metrics(start)  # steps logged after the checkpoint (or with none) run again
            tracker = open_trackers(cfg.report_to, run.path, to_dict(cfg), start)
        ctx = Context(cfg=cfg, policy=policy, optimizer=optimizer, scheduler=scheduler, strategy=strategy, run=run)
        step_fn = build_step(ctx)
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        bar = tqdm(range(start, end), desc=desc, initial=start, total=cfg.steps, disable=not strategy.is_main,
                   dynamic_ncols=True)
        for step in bar:
            t0 = time.perf_counter()
            samples = [dataset[i] for i in sampler.take(samples_per_step)]
            lr = scheduler.get_last_lr()[0]
            metrics = step_fn(step, shard(samples, strategy))
            scheduler.step()
            record = {"step": step + 1, "lr": lr, **metrics, "time_s": round(time.perf_counter() - t0, 4)}
            if strategy.is_main:
                run.log(record)
                tracker.log(record, step + 1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                 if k in ("loss", "reward_mean", "grad_norm")})
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(run.checkpoints, step + 1, policy.model, optimizer, scheduler,
                                {"sampler": sampler.state_dict()}, strategy, keep=cfg.keep_checkpoints)
        if end < cfg.steps:
            return None
        weights = strategy.full_state_dict(policy.model)  # collective: gathered on the main rank
        if strategy.is_main:
            make_room(run.checkpoints, 2 * sum(t.numel() * t.element_size() for t in weights.values()))
            save_final(run.final, policy.model, getattr(policy, "tokenizer", None), getattr(policy, "processor", None),
                       state_dict=weights)
            run.mark_complete({"steps": cfg.steps, "final": str(run.final)})
        strategy.barrier()
        return run.final
    finally:
        if tracker is not None:
            tracker.close()
        strategy.shutdown()


# ----------------------------------------------------------------------------------------------
# The online loop


class OnlineMethod:
    """A method's hooks into the online loop. Subclass and override ``prepare`` / ``loss``
    (and ``views``, ``combine``, ``needs_reward`` where the method differs)."""

    needs_reward: bool = True
    """False for methods whose loss uses no verifiable reward (on-policy distillation)."""

    def __init__(self, cfg: OnlineConfig):
        self.cfg = cfg

    @property
    def views(self) -> tuple[str, ...]:
        """The policy views the loss trains through, one forward each per micro-batch (default:
        the view the policy samples from)."""
        return (self.cfg.view,)

    def setup(self, ctx: Context) -> None:
        """Once, before the first step (load a teacher or a reference model here)."""

    def prepare(self, traj: Trajectories, ctx: Context, step: int) -> dict[str, float]:
        """After rollout and reward, before the updates of step ``step`` (0-based): add per-row
        tensors to ``traj.extras`` (advantages, teacher log-probs, ...). Returns metrics to log."""
        return {}

    def loss(self, fwd: Forward, mb: Trajectories, norm: Normalizers, step: int
             ) -> tuple[Objective, dict[str, torch.Tensor]]:
        """This micro-batch's share of the mini-batch loss (divide by ``norm``'s global counts):
        a scalar, or ``{name: scalar}`` named objectives (see ``combine``). ``fwd[view]`` is the
        policy's forward under each of ``views``."""
        raise NotImplementedError

    def combine(self, grads: Grads) -> tuple[list[torch.Tensor | None], dict[str, float]]:
        """Named objectives' full-batch gradients -> the gradient to step on (default: their sum)."""
        return sum_objectives(grads)


RewardFn = Callable[[Trajectories], torch.Tensor]
"""Trajectories -> (B,) float rewards."""


def autocast(ctx: Context) -> contextlib.AbstractContextManager:
    """The config's forward-pass compute dtype (``cfg.autocast``), or nothing."""
    if ctx.cfg.autocast is None:
        return contextlib.nullcontext()
    device_type = "cuda" if ctx.strategy.device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=resolve_dtype(ctx.cfg.autocast))


def policy_logprobs(ctx: Context, traj: Trajectories, *, grad: bool) -> torch.Tensor:
    """(B, T) fp32 log-probs of ``traj``'s response tokens under the current policy (harness.scoring)."""
    cfg = ctx.cfg
    with autocast(ctx):
        return token_logprobs(ctx.policy, traj, cfg.view, grad=grad, micro_batch_size=cfg.micro_batch_size).float()


def forward_fn(ctx: Context, views: tuple[str, ...]) -> Callable[[Trajectories], Forward]:
    """The update's policy forward: one pass per view, with grad, under the config's autocast."""
    return lambda mb: policy_forward(ctx.policy, mb, views, grad=True, autocast=lambda: autocast(ctx))


def default_engine(ctx: Context) -> Any:
    """The configured rollout engine: transformers' ``generate`` on the policy itself (shares its
    weights: no sync needed), or vLLM on the policy's checkpoint (weights synced every step);
    with ``cfg.tools``, wrapped for multi-turn tool rollouts (harness.rollout.multiturn)."""
    cfg: OnlineConfig = ctx.cfg  # type: ignore[assignment]
    if cfg.rollout_engine == "vllm":
        from harness.rollout.vllm import VLLMRolloutEngine

        engine: Any = VLLMRolloutEngine(ctx.policy.path, dtype=cfg.dtype, view=cfg.view, seed=cfg.seed,
                                        progress=ctx.strategy.is_main, **cfg.vllm.engine_kwargs())
    else:
        engine = HFRolloutEngine(ctx.policy, batch_size=cfg.rollout_batch_size, view=cfg.view,
                                 progress=ctx.strategy.is_main)
    if cfg.tools:
        from harness.rollout.multiturn import MultiTurnEngine

        engine = MultiTurnEngine(engine, list(cfg.tools), cfg.max_tool_rounds)
    return engine


def engine_logp_exact(engine: Any, ctx: Context) -> tuple[bool, str]:
    """Whether ``engine``'s ``old_logp`` are the trainer's own pi_old log-probs, and why.

    True only for transformers' ``generate`` on the policy's own model object (so the same
    weights at the same version, the same dtype and the same autocast as the trainer's forward)
    rendering the trainer's view, single turn. That engine records each token's log-prob under the
    raw distribution before any sampling transform (temperature, top-p, token bans:
    harness.rollout.hf), which is what the trainer scores; the values differ from a trainer
    forward only by summation order (incremental decoding with a KV cache), ~5e-7 in fp32. vLLM
    (own kernels, own copy of the weights), a copy of the policy (possibly in another dtype) and
    multi-turn rollouts (contexts re-rendered per round) are not exact."""
    if type(engine) is not HFRolloutEngine:
        return False, f"{type(engine).__name__} computes its log-probs apart from the trainer"
    if unwrap_model(engine.bundle.model) is not unwrap_model(ctx.policy.model):
        return False, "the engine samples from a copy of the policy, not the trained model object"
    if engine.view != ctx.cfg.view:
        return False, f"the engine renders view {engine.view!r}, the trainer scores {ctx.cfg.view!r}"
    return True, "transformers generate on the trained model itself (same weights, dtype and autocast)"


def recompute_old_logp(engine: Any, ctx: Context) -> bool:
    """The run's decision for ``cfg.recompute_old_logp`` (see ``OnlineConfig``), logged with its reason."""
    mode = ctx.cfg.recompute_old_logp
    if isinstance(mode, bool):  # older configs
        mode = "always" if mode else "never"
    if mode == "auto":
        exact, why = engine_logp_exact(engine, ctx)
        recompute = not exact
    else:
        recompute, why = mode == "always", "set in the config"
    if ctx.strategy.is_main:
        logger.info("old log-probs: %s (recompute_old_logp=%s: %s)",
                    "recomputed by a trainer forward" if recompute else "the engine's", mode, why)
    return recompute


ROLLOUT_IS_WEIGHT = "rollout_is_weight"
"""``traj.extras`` key of the rollout-IS token weights (B, T) (``cfg.rollout_is``)."""


def rollout_is_weight(mb: Trajectories) -> torch.Tensor | None:
    """The rollout-IS token weights (B, T) the online loop put in ``mb.extras`` (``cfg.rollout_is``),
    or None: what every method passes as its policy-gradient surrogate's ``token_weights``."""
    return mb.extras.get(ROLLOUT_IS_WEIGHT)


def rollout_mismatch(traj: Trajectories, rollout_logp: torch.Tensor, cfg: OnlineConfig,
                     strategy: Strategy) -> dict[str, float]:
    """Compare the engine's log-probs ``rollout_logp`` with the trainer's recomputed ``traj.old_logp``
    (harness.losses.rollout_is_weights): ``rollout_logp_abs_diff`` always; with ``cfg.rollout_is``
    the weights go into ``traj.extras[ROLLOUT_IS_WEIGHT]``, and ``rollout_is_weight_mean`` and
    ``rollout_is_truncated_frac`` (``token_truncate``) / ``rollout_is_masked_frac`` (``token_mask``)
    are logged. Token means over every rank's loss tokens."""
    mode = cfg.rollout_is
    w, stats = losses.rollout_is_weights(traj.old_logp, rollout_logp, traj.response_mask, mode, cfg.rollout_is_cap)
    names = {"logp_abs_diff": "rollout_logp_abs_diff"}
    if mode != "none":
        traj.extras[ROLLOUT_IS_WEIGHT] = w
        names["weight_mean"] = "rollout_is_weight_mean"
        names["capped_frac"] = "rollout_is_truncated_frac" if mode == "token_truncate" else "rollout_is_masked_frac"
    n = float((traj.response_mask != 0).sum())
    sums = reduce_floats(strategy, [n] + [float(stats[k]) * n for k in names], "sum")
    return {name: total / max(sums[0], 1.0) for name, total in zip(names.values(), sums[1:])}


def online_step_builder(method: OnlineMethod, reward_fn: RewardFn | None,
                        make_engine: Callable[[Context], Any] = default_engine) -> Callable[[Context], StepFn]:
    """The online step: rollout -> reward (when a reward function is given) -> (old log-probs,
    compared with the engine's: ``rollout_mismatch``) -> ``method.prepare`` -> for each epoch and mini-batch an
    :func:`harness.update.accumulate_update` with ``method.loss`` on the method's views."""
    if reward_fn is None and method.needs_reward:
        raise ValueError(f"{type(method).__name__} needs a verifiable reward: set `reward` in the config")

    def build(ctx: Context) -> StepFn:
        cfg: OnlineConfig = ctx.cfg  # type: ignore[assignment]
        engine = make_engine(ctx)
        recompute = recompute_old_logp(engine, ctx)
        if cfg.rollout_is != "none" and not recompute and ctx.strategy.is_main:
            logger.info("rollout_is=%s: the engine's log-probs are the trainer's own, so the weights are 1 "
                        "and nothing is reweighted", cfg.rollout_is)
        method.setup(ctx)
        model = ctx.policy.model
        forward = forward_fn(ctx, method.views)

        def step(i: int, samples: list[Sample]) -> dict[str, float]:
            seed = step_seed(cfg.seed, i, ctx.strategy.rank)
            torch.manual_seed(seed)
            model.eval()
            t0 = time.perf_counter()
            getattr(engine, "wake_up", lambda: None)()  # vLLM sleep mode: memory back before the sync
            engine.sync_weights(model)
            sampling = SamplingParams(n=cfg.num_generations, temperature=cfg.temperature, top_p=cfg.top_p,
                                      max_new_tokens=cfg.max_new_tokens, seed=seed)
            with autocast(ctx):
                traj = engine.generate(samples, sampling)
            getattr(engine, "sleep", lambda: None)()  # vLLM sleep mode: its GPU memory free for the update
            t_gen = time.perf_counter() - t0
            if reward_fn is not None:
                traj.rewards = reward_fn(traj).to(torch.float32).to(traj.response_ids.device)
            metrics: dict[str, float] = {}
            if recompute:
                rollout_logp = traj.old_logp  # the engine's: kept for the mismatch metrics / rollout IS
                with torch.no_grad():
                    traj.old_logp = policy_logprobs(ctx, traj, grad=False).detach()
                metrics.update(rollout_mismatch(traj, rollout_logp, cfg, ctx.strategy))
            with autocast(ctx):
                metrics.update(method.prepare(traj, ctx, i))
            model.train()
            updates: list[dict[str, float]] = []
            for _ in range(cfg.ppo_epochs):
                for idx in split_rows(len(traj), cfg.mini_batches_per_step):
                    updates.append(accumulate_update(
                        model, ctx.optimizer, ctx.strategy, select_rows(traj, idx), forward,
                        lambda fwd, mb, norm: method.loss(fwd, mb, norm, i), cfg.micro_batch_size,
                        cfg.max_grad_norm, max_len=cfg.max_new_tokens, combine=method.combine))
            model.eval()
            rewards = traj.rewards
            summary = reduce_floats(ctx.strategy, [float(len(traj)), float(traj.response_mask.sum()),
                                                   float(rewards.sum()) if rewards is not None else 0.0], "sum")
            metrics["response_length"] = float(summary[1] / summary[0])
            if rewards is not None:
                metrics["reward_mean"] = float(summary[2] / summary[0])
            for k in updates[0]:
                metrics[k] = sum(u[k] for u in updates) / len(updates)
            metrics["loss_first_update"] = updates[0]["loss"]
            metrics["old_logp_recomputed"] = float(recompute)
            metrics["time_generate_s"] = round(t_gen, 4)
            return metrics

        return step

    return build


# ----------------------------------------------------------------------------------------------
# The SFT loop


def run_online(method: OnlineMethod, cfg: OnlineConfig, out_dir: str | Path, *,
               load_data: Callable[[], list[Sample]], reward_fn: RewardFn | None, desc: str,
               stop_after: int | None = None, **hooks: Any) -> Path | None:
    """Run (or resume) ``method`` with :func:`online_step_builder` through :func:`run_training`,
    ``cfg.prompts_per_step`` prompts a step: the body every online method's ``train`` shares.
    ``hooks``: ``make_engine`` goes to the step builder, the rest (``load_policy``, ...) to
    ``run_training``."""
    builder_kw = {k: hooks.pop(k) for k in ("make_engine",) if k in hooks}
    step = online_step_builder(method, reward_fn, **builder_kw)
    return run_training(cfg, out_dir, load_data=load_data, build_step=step, samples_per_step=cfg.prompts_per_step,
                        stop_after=stop_after, desc=desc, **hooks)


def sft_step_builder(encode: Callable[[Context, list[Sample]], Trajectories], loss_fn: LossFn) -> Callable[[Context], StepFn]:
    """The SFT step: encode (prompt, target response) rows into trajectories, one accumulated
    update; ``loss_fn`` gets the policy's forward under ``cfg.view``."""

    def build(ctx: Context) -> StepFn:
        cfg = ctx.cfg
        model = ctx.policy.model
        forward = forward_fn(ctx, (cfg.view,))

        def step(i: int, samples: list[Sample]) -> dict[str, float]:
            batch = encode(ctx, samples)
            model.train()
            out = accumulate_update(model, ctx.optimizer, ctx.strategy, batch, forward, loss_fn,
                                    cfg.micro_batch_size, cfg.max_grad_norm)
            model.eval()
            return out

        return step

    return build
