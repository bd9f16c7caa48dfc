"""Execute a plan: train each stage once, evaluate each model once, then collect the measurements.

Run directory (``--out``)::

    plan.json                       the plan (all tables run into this directory)
    state.json                      outcome of every stage / evaluation (done, failed + error)
    stages/<stage id>-<hash8>/      the trainer's own run directory (config, metrics.jsonl, final/)
    evals/<model id>/<decoding>/<benchmark>/{records.jsonl,summary.json}   (written by evals.run)
    report/<table>.{md,html,json}

Resuming: a stage recorded as done whose final model directory still exists is not retrained;
an unfinished stage is handed back to its trainer, which resumes from its last checkpoint;
evals.run skips the samples already recorded in ``records.jsonl``.
"""
from __future__ import annotations

import functools
import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from harness.jsonl import read_jsonl
from harness.run_dir import atomic_write_text
from reproduce.launch import Launch, run_stage
from reproduce.plan import RUNNABLE, Plan, PlannedEval, PlannedStage, benchmark_available

STATE_FILE = "state.json"

TrainFn = Callable[[dict, Path, str], Path]
EvalFn = Callable[..., dict]


@dataclass
class RunState:
    """What happened to each stage and evaluation of a run directory (``state.json``)."""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: Path) -> "RunState":
        path = Path(out) / STATE_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(stages=data.get("stages", {}), evals=data.get("evals", {}))

    def save(self, out: Path) -> None:
        atomic_write_text(Path(out) / STATE_FILE,
                          json.dumps({"stages": self.stages, "evals": self.evals}, indent=1) + "\n")

    def final(self, stage_dir: str) -> Optional[Path]:
        rec = self.stages.get(stage_dir, {})
        if rec.get("status") == "done" and rec.get("final") and Path(rec["final"]).exists():
            return Path(rec["final"])
        return None


def _smoke_path(kind: str) -> str:
    from harness.models import smoke_model_path
    return str(smoke_model_path(kind))


def _train_ref(src: dict[str, str], state: RunState) -> str:
    """A model reference as a trainer's ``model`` / ``teacher`` setting takes it."""
    kind, value = next(iter(src.items()))
    if kind == "hub":
        return value
    if kind == "smoke":
        return f"smoke:{value}"
    final = state.final(value)
    if final is None:
        raise RuntimeError(f"stage {value} has not finished; it must be trained first")
    return str(final)


def _eval_ref(src: dict[str, str], state: RunState, smoke_path: Callable[[str], str]) -> str:
    kind, value = next(iter(src.items()))
    if kind == "smoke":
        return smoke_path(value)
    return _train_ref(src, state)


def _default_train(method: str) -> TrainFn:
    """The registry's trainer; a method that validates during training (VOLD: Geo3K curves,
    §4.1) gets the benchmark validator of evals injected here (methods do not import evals)."""
    from methods.registry import get_method
    spec = get_method(method)
    if spec.train is None:
        raise RuntimeError(f"method {method!r} has no trainer (implemented={spec.implemented})")
    if spec.validates:
        from evals.validation import benchmark_validator
        return functools.partial(spec.train, validator=benchmark_validator)
    return spec.train


def _default_eval() -> EvalFn:
    import evals
    return evals.run


def stage_overrides(stage: PlannedStage, state: RunState) -> dict[str, Any]:
    """The overrides handed to ``train``: the recipe's settings plus model, data and teacher."""
    overrides = dict(stage.overrides)
    overrides["model"] = _train_ref(stage.init, state)
    if stage.data is not None:  # None: the method's smoke-profile data set
        overrides["data"] = stage.data
    if stage.teacher is not None:
        overrides["teacher"] = _train_ref(stage.teacher, state)
    return overrides


def _log_error(out: Path, name: str, err: BaseException) -> str:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    path = Path(out) / "logs" / f"{name.replace('/', '__')}.err"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"[reproduce] {name} failed: {type(err).__name__}: {err} (traceback in {path})", file=sys.stderr)
    return f"{type(err).__name__}: {err}"


def train_stages(plan: Plan, stages: list[PlannedStage], out: Path, state: RunState, *,
                 train_fn: Optional[Callable[[str], TrainFn]] = None, fail_fast: bool = False,
                 launch: Optional[Launch] = None) -> None:
    """Train each runnable stage not yet done, in order (under torchrun when ``launch`` is
    distributed: ``reproduce.launch``; only the main node records the state)."""
    get_train = train_fn or _default_train
    record = launch is None or launch.is_main_node
    for stage in stages:
        if stage.status != RUNNABLE:
            continue
        if state.final(stage.dir) is not None:
            print(f"[reproduce] stage {stage.id}: done, reusing {state.final(stage.dir)}", file=sys.stderr)
            continue
        upstream = [v for v in (stage.init, stage.teacher or {}) if "stage" in v]
        blocked = [v["stage"] for v in upstream if state.final(v["stage"]) is None]
        if blocked:
            state.stages[stage.dir] = {"status": "blocked", "error": f"upstream stage {blocked[0]} did not finish"}
            state.save(out)
            continue
        print(f"[reproduce] training stage {stage.id} ({stage.method}) -> {out / stage.dir}", file=sys.stderr)
        try:
            if launch is not None and launch.distributed:
                final = run_stage(launch, out, stage.dir)
            else:
                final = get_train(stage.method)(stage_overrides(stage, state), out / stage.dir, plan.profile)
            if final is None or not Path(final).exists():
                raise RuntimeError(f"trainer returned no final model directory ({final!r})")
            state.stages[stage.dir] = {"status": "done", "final": str(final)}
        except Exception as err:  # noqa: BLE001 - recorded, shown in the report, run continues
            if fail_fast:
                raise
            state.stages[stage.dir] = {"status": "failed", "error": _log_error(out, stage.dir, err)}
        if record:
            state.save(out)


def _generation_kwargs(settings: dict[str, Any], ev: PlannedEval) -> dict[str, Any]:
    """``max_new_tokens`` (the profile's cap; multi-turn columns: ``tool_max_new_tokens`` if set),
    ``tool_rounds``, ``device``, ``dtype`` and the vLLM settings of an evaluation, only where set
    (injected evaluators need not know them)."""
    kw: dict[str, Any] = {k: settings[k] for k in ("device", "dtype") if settings.get(k)}
    if kw.get("device") == "auto":
        from evals.cli import resolve_device

        kw["device"] = resolve_device("auto")
    if settings.get("vllm") and settings.get("engine") == "vllm":
        from harness.train_config import VLLMSettings

        kw["vllm"] = VLLMSettings(**settings["vllm"])
    if settings.get("max_new_tokens"):
        kw["max_new_tokens"] = settings["max_new_tokens"]
    if ev.tool_rounds:
        kw["tool_rounds"] = ev.tool_rounds
        if settings.get("tool_max_new_tokens"):
            kw["max_new_tokens"] = settings["tool_max_new_tokens"]
    return kw


def run_evals(plan: Plan, evals: list[PlannedEval], out: Path, state: RunState, *,
              eval_fn: Optional[EvalFn] = None, smoke_path: Callable[[str], str] = _smoke_path,
              fail_fast: bool = False) -> None:
    run = eval_fn or _default_eval()
    # With the real evals, columns naming a benchmark evals lacks are left out of the call (the
    # report says why), so they do not fail the row's other columns. Injected evaluators see all.
    available = (lambda name: True) if eval_fn is not None else benchmark_available
    settings = plan.eval_settings
    for ev in evals:
        model = plan.models[ev.model]
        key = f"{ev.model}/{ev.eval_key}"
        if model.status != RUNNABLE:
            continue
        unfinished = [d for d in model.stages if state.final(d) is None]
        if unfinished:
            state.evals[key] = {"status": "blocked", "error": f"stage {unfinished[-1]} did not finish "
                                f"({state.stages.get(unfinished[-1], {}).get('error', 'not trained')})"}
            state.save(out)
            continue
        benchmarks = [b for b in ev.benchmarks if available(b)]
        if not benchmarks:
            continue
        print(f"[reproduce] evaluating {ev.model} ({ev.eval_key}) on {', '.join(benchmarks)}", file=sys.stderr)
        try:
            run(_eval_ref(model.source, state, smoke_path), benchmarks, out_dir=out / ev.dir,
                limit=settings.get("limit"), engine=settings.get("engine", "hf"),
                source=settings.get("source", "hub"), mode=ev.mode, k=ev.k, temperature=ev.temperature,
                judge_url=settings.get("judge_url"), batch_size=settings.get("batch_size", 8),
                smoke_n=settings.get("smoke_n", 2), **_generation_kwargs(settings, ev),
                **({"system": settings["system"]} if settings.get("system") else {}))
            state.evals[key] = {"status": "done"}
        except Exception as err:  # noqa: BLE001
            if fail_fast:
                raise
            state.evals[key] = {"status": "failed", "error": _log_error(out, ev.dir, err)}
        state.save(out)


def execute(plan: Plan, table_id: str, out: Path, *, rows: Optional[list[str]] = None,
            train_fn: Optional[Callable[[str], TrainFn]] = None, eval_fn: Optional[EvalFn] = None,
            smoke_path: Callable[[str], str] = _smoke_path, fail_fast: bool = False,
            launch: Optional[Launch] = None) -> RunState:
    """Train what ``table_id`` (optionally only ``rows``) needs, then evaluate; returns the state.
    With ``launch`` on a node other than the first, only the training stages run."""
    out = Path(out)
    state = RunState.load(out)
    train_stages(plan, plan.stages_for(table_id, rows), out, state, train_fn=train_fn, fail_fast=fail_fast,
                 launch=launch)
    if launch is not None and not launch.is_main_node:
        return state
    run_evals(plan, plan.evals_for(table_id, rows), out, state, eval_fn=eval_fn, smoke_path=smoke_path,
              fail_fast=fail_fast)
    state.save(out)
    return state


def stage_metrics(plan: Plan, out: Path, stage_dirs: list[str]) -> dict[str, list[dict[str, Any]]]:
    """``metrics.jsonl`` of each stage that has one (learning curves)."""
    curves = {}
    for d in stage_dirs:
        recs = read_jsonl(Path(out) / d / "metrics.jsonl", torn_tail=True, missing_ok=True)
        if recs:
            curves[d] = recs
    return curves


__all__ = ["RunState", "STATE_FILE", "execute", "run_evals", "stage_metrics", "stage_overrides", "train_stages"]
