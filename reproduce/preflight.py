"""Pre-flight of a paper-profile run: what it needs, checked before anything starts.

* **Sources**: every hub model (stage inits, teachers, published checkpoints evaluated as rows)
  and data set (training sets, benchmarks) the planned stages and evaluations use is a local path,
  in the Hugging Face cache, or found on the hub (one ``model_info`` / ``dataset_info`` call with
  a short timeout; after the first connection failure the hub is taken as unreachable and not
  asked again).
* **GPUs**: a paper-profile stage trains on GPUs; none visible is a problem.
* **Memory**: per-GPU model-state memory of each training stage (student weights, gradients and
  AdamW state, plus the frozen teacher) against the smallest visible GPU, for the stage's strategy.
* **Disk**: room in the run directory for each stage's last checkpoint and final weights.

Each problem is one line; ``run_table`` raises :class:`PreflightError` with all of them (the CLI
prints them and exits 2). ``reproduce ... --dry-run`` prints :func:`memory_table`.

Memory model (model states only; activations, the KV cache and a colocated vLLM's share are
*not* counted and come on top): mixed-precision AdamW keeps 16 bytes a trainable parameter
(bf16 weights 2 + bf16 gradients 2 + fp32 master weights, first and second moments 12), the
frozen bf16 teacher 2 bytes a parameter. Per GPU with N ranks: DDP / single 16 P; ZeRO-2 (optimizer
state and gradients sharded) 2 P + 14 P / N; ZeRO-3 / FSDP2 (everything sharded) 16 P / N. The
teacher: 2 P_T / N under ZeRO-3 / FSDP2, sharded like the student (``TrainConfig.shard_frozen``,
default on; docs/scale_out.md), else 2 P_T on every GPU (DDP, ZeRO-2, which shards no
parameters, or ``shard_frozen: false``). The student's share is DeepSpeed's own accounting
(``estimate_zero2_model_states_mem_needs`` / ``..._zero3_...``, without their CPU-offload cases).
Parameter counts come from the model's ``config.json`` (local path or cache), instantiated on the
meta device, so nothing is downloaded and no memory is used; without the config, the size the hub
id states in its name (``-3B-``), marked nominal (Qwen2.5-VL-3B has ~3.8B parameters: nominal
sizes can be low by a quarter).
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from harness.errors import ConfigError

__all__ = ["PreflightError", "Need", "needs", "locate", "param_count", "state_bytes", "memory_table", "scale_text", "preflight"]

GIB = 1024 ** 3
TRAIN_BYTES, FROZEN_BYTES = 16, 2   # mixed-precision AdamW per trainable parameter; bf16 frozen teacher


class PreflightError(ConfigError):
    """The run cannot start: one line per problem."""


@dataclass(frozen=True)
class Need:
    kind: str   # "model" or "dataset"
    id: str
    why: str    # the first stage / row / benchmark that needs it


def needs(plan, table_id: str, rows: Optional[list[str]] = None) -> list[Need]:
    """Hub models and data sets the runnable stages and evaluations of ``table_id`` use, in order."""
    from harness.data.training_sets import TRAINING_SETS

    from evals.benchmarks import REGISTRY
    out: dict[tuple[str, str], Need] = {}

    def add(kind: str, ident: Optional[str], why: str) -> None:
        if ident and (kind, ident) not in out:
            out[(kind, ident)] = Need(kind, ident, why)

    for st in plan.stages_for(table_id, rows):
        if not st.implemented:
            continue
        for role, src in (("init", st.init), ("teacher", st.teacher or {})):
            add("model", src.get("hub"), f"stage {st.id} ({role})")
        if st.data:
            spec = TRAINING_SETS.get(st.data)
            add("dataset", spec.hub_id if spec else st.data, f"stage {st.id} (data)")
    for model in plan.models_for(table_id, rows):
        add("model", model.source.get("hub"), f"model {model.id}")
    for ev in plan.evals_for(table_id, rows):
        for name in ev.benchmarks:
            bench = REGISTRY.get(name)
            add("dataset", getattr(bench, "hf_id", None), f"benchmark {name}")
    return list(out.values())


def _cached(kind: str, ident: str) -> bool:
    from huggingface_hub import constants

    folder = f"{'models' if kind == 'model' else 'datasets'}--{ident.replace('/', '--')}"
    return (Path(constants.HF_HUB_CACHE) / folder).is_dir()


class _Hub:
    """Asks the hub whether ids exist; remembers an unreachable hub after the first failure."""

    def __init__(self, timeout: float):
        self.timeout, self.down = timeout, None if not _offline() else "HF_HUB_OFFLINE is set"

    def check(self, need: Need) -> Optional[str]:
        if self.down:
            return f"not in the local cache and the hub cannot be asked ({self.down})"
        from huggingface_hub import HfApi
        from huggingface_hub.utils import RepositoryNotFoundError
        api = HfApi()
        ask = api.model_info if need.kind == "model" else api.dataset_info
        try:
            ask(need.id, timeout=self.timeout)
        except RepositoryNotFoundError:
            return "not found on the hub (or gated: log in with `hf auth login`)"
        except Exception as e:  # noqa: BLE001 - connection errors of every library in between
            self.down = f"unreachable: {type(e).__name__}"
            return f"not in the local cache and the hub is {self.down}"
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def locate(need: Need, hub: "_Hub") -> Optional[str]:
    """None when ``need`` is available (a local path, cached, or on the hub), else the reason."""
    if Path(need.id).expanduser().exists() or _cached(need.kind, need.id):
        return None
    if need.id.startswith(("/", ".", "~")):
        return "no such local path"
    return hub.check(need)


def param_count(model_id: str) -> Optional[int]:
    """Parameters of ``model_id`` (tied weights once) from its config alone, or None when the
    config is neither a local path nor in the cache."""
    import torch
    import transformers

    try:
        cfg = transformers.AutoConfig.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError):
        return None
    auto = (transformers.AutoModelForImageTextToText if getattr(cfg, "vision_config", None) is not None
            else transformers.AutoModelForCausalLM)
    with torch.device("meta"):
        model = auto.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def state_bytes(student: int, teacher: int, strategy: str, world: int, trains: bool = True,
                shard_frozen: bool = True) -> float:
    """Per-GPU model-state bytes (module docstring) of a stage training ``student`` parameters with
    a frozen ``teacher`` (0: none) under ``strategy`` (a ``TrainConfig.distributed`` name) on
    ``world`` ranks, the teacher sharded under zero3 / fsdp when ``shard_frozen``; a stage that
    only generates (``trains=False``) holds its model's bf16 weights on each GPU."""
    if not trains:
        return FROZEN_BYTES * (student + teacher)
    n = max(1, world)
    frozen = FROZEN_BYTES * teacher
    if strategy == "zero2":
        train = 2 * student + (TRAIN_BYTES - 2) * student / n
    elif strategy in ("zero3", "fsdp"):
        train = TRAIN_BYTES * student / n
        frozen = frozen / n if shard_frozen else frozen
    else:
        train = TRAIN_BYTES * student
    return train + frozen


def nominal_params(model_id: str) -> Optional[int]:
    """The size a hub id states in its name (``Qwen2.5-VL-3B-Instruct`` -> 3e9), or None."""
    m = re.search(r"(?<![\d.])(\d{1,3}(?:\.\d)?)[Bb](?![A-Za-z0-9])", model_id.rsplit("/", 1)[-1])
    return int(float(m.group(1)) * 1e9) if m else None


def _root(plan, src: Optional[dict]) -> Optional[str]:
    """The hub id a stage chain starts from (``{"stage": dir}`` -> that stage's init, ...)."""
    seen: set[str] = set()
    while src and "stage" in src and src["stage"] not in seen:
        seen.add(src["stage"])
        st = plan.stages.get(src["stage"])  # keyed by stage directory
        src = st.init if st else None
    return (src or {}).get("hub")


def _spec(st):
    """The stage's ``methods.registry.MethodSpec`` (None for a method the registry lacks)."""
    from methods.registry import METHODS

    return METHODS.get(st.method)


def _trains(st) -> bool:
    spec = _spec(st)
    return spec.trains if spec is not None else True


def _stage_bytes(st, student: int, frozen: int, strategy: str, world: int) -> float:
    """``state_bytes`` of a planned stage: whether it trains, and its ``shard_frozen`` setting."""
    return state_bytes(student, frozen, strategy, world, _trains(st), bool(st.overrides.get("shard_frozen", True)))


def _size(model_id: Optional[str], count: Callable[[str], Optional[int]]) -> tuple[Optional[int], str]:
    """(parameters, how known): from the config, else the size in the name (nominal), else None."""
    if not model_id:
        return None, ""
    exact = count(model_id)
    if exact is not None:
        return exact, ""
    nominal = nominal_params(model_id)
    return nominal, (f"{model_id}: nominal size from its name (config not available offline)" if nominal else
                     f"{model_id}: size unknown (config not available offline)")


def _teacher_model(plan, st) -> Optional[str]:
    """The hub id the stage's frozen teacher is built from: a hub teacher, or the root of a
    teacher stage that trains a model; a teacher stage that only generates (VOLD's traces) is
    data, not a model held in memory."""
    src = st.teacher or {}
    if "stage" in src:
        teacher_stage = plan.stages.get(src["stage"])
        return _root(plan, src) if teacher_stage is not None and _trains(teacher_stage) else None
    return src.get("hub")


def _stage_params(plan, st, count: Callable[[str], Optional[int]]) -> tuple[Optional[int], int, str]:
    """(student params or None, frozen params (0 when none / unknown), notes). Frozen: the teacher
    (``_teacher_model``) plus, for a method that keeps a frozen reference copy of the student
    (``MethodSpec.reference``: PTD-PO), the student's size again."""
    student, n1 = _size(_root(plan, st.init), count)
    teacher, n2 = _size(_teacher_model(plan, st), count)
    spec = _spec(st)
    frozen = (teacher or 0) + (student or 0 if spec is not None and spec.reference else 0)
    return student, frozen, "; ".join(n for n in (n1, n2) if n)


def memory_table(plan, table_id: str, rows: Optional[list[str]] = None, worlds: Iterable[int] = (1, 8),
                 count: Callable[[str], Optional[int]] = param_count) -> str:
    """Per-GPU model-state memory (GiB) of each training stage under each strategy and rank count."""
    from tabulate import tabulate

    worlds = list(worlds)
    body = []
    for st in plan.stages_for(table_id, rows):
        if not st.implemented:
            continue
        student, teacher, note = _stage_params(plan, st, count)
        cells = ["?"] * (3 * len(worlds)) if student is None else [
            f"{_stage_bytes(st, student, teacher, s, n) / GIB:.1f}" for s in ("ddp", "zero2", "zero3")
            for n in worlds]
        note = "generation only (no optimizer state)" + (f"; {note}" if note else "") if not _trains(st) else note
        body.append([st.id, st.overrides.get("distributed", "auto") if _trains(st) else "-",
                     f"{student / 1e9:.2f}B" if student else "?", f"{teacher / 1e9:.2f}B" if teacher else "-",
                     *cells, note])
    heads = [f"{s} x{n}" for s in ("DDP", "ZeRO-2", "ZeRO-3/FSDP2") for n in worlds]
    return ("Per-GPU model states, GiB (bf16 weights + AdamW 16 B / trainable param, frozen teacher or reference 2 B / param, "
            "sharded under ZeRO-3/FSDP2 with shard_frozen (the default); activations, KV cache and vLLM not included):\n"
            + tabulate(body, headers=["stage", "recipe strategy", "student", "frozen", *heads, "note"], tablefmt="simple"))


def scale_text(scale, paper: str, table_id: str) -> str:
    """The recipe's published hardware and the launch that matches it (``reproduce --dry-run``)."""
    if scale is None:
        return f"{paper}: the recipe states no hardware (scale:); each stage runs under its own `distributed`."
    methods = "".join(f"; {m} stages: {s}" for m, s in sorted(scale.per_method.items()))
    return (f"Published hardware: {scale.hardware}. Recipe strategy: {scale.distributed}{methods}"
            + (f" ({scale.source})" if scale.source else "") + ".\n"
            + f"Launch on that hardware: reproduce {table_id} --paper {paper} --profile paper {scale.launch_flags()}"
            + (" (the same command on every node, a shared --out)" if scale.nnodes > 1 else ""))


def _gpus() -> list[int]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]


def preflight(plan, table_id: str, out: Path, rows: Optional[list[str]] = None, *, timeout: float = 5.0,
              gpus: Optional[list[int]] = None, count: Callable[[str], Optional[int]] = param_count,
              disk_free: Optional[int] = None, launch=None) -> list[str]:
    """Every problem of running ``table_id`` of ``plan`` into ``out``, one line each ([] = go).
    ``launch`` (``reproduce.launch.Launch``): the stages run on ``nproc_per_node`` GPUs of each of
    ``nnodes`` nodes (default: one process on the visible GPUs)."""
    problems: list[str] = []
    hub = _Hub(timeout)
    for need in needs(plan, table_id, rows):
        why = locate(need, hub)
        if why:
            problems.append(f"{need.kind} {need.id} ({need.why}): {why}")
    stages = [st for st in plan.stages_for(table_id, rows) if st.implemented]
    gpus = _gpus() if gpus is None else gpus
    if stages and not gpus:
        problems.append(f"no CUDA GPU visible: the paper profile trains {len(stages)} stage(s) on GPUs "
                        "(try --profile smoke on a CPU)")
    world = len(gpus)
    if launch is not None:
        world = launch.nproc_per_node * launch.nnodes
        if gpus and launch.nproc_per_node > len(gpus):
            problems.append(f"--nproc-per-node {launch.nproc_per_node} but {len(gpus)} GPU(s) visible on this node")
    need_disk = 0.0
    for st in stages:
        student, teacher, _ = _stage_params(plan, st, count)
        if student is None:
            continue
        if _trains(st):
            need_disk += (TRAIN_BYTES + FROZEN_BYTES) * student  # last resumable checkpoint + final bf16 weights
        strategy = str(st.overrides.get("distributed", "ddp"))
        per_gpu = _stage_bytes(st, student, teacher, "ddp" if strategy in ("auto", "single") else strategy, world)
        if gpus and per_gpu > min(gpus):
            problems.append(f"stage {st.id}: model states need ~{per_gpu / GIB:.1f} GiB a GPU under "
                            f"{strategy} on {world} GPU(s), the smallest has {min(gpus) / GIB:.1f} GiB "
                            "(set distributed: zero2 / zero3 / fsdp, or more GPUs)")
    root = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    free = shutil.disk_usage(root).free if disk_free is None else disk_free
    if need_disk > free:
        problems.append(f"{out}: ~{need_disk / GIB:.0f} GiB needed for checkpoints, {free / GIB:.0f} GiB free")
    return problems
