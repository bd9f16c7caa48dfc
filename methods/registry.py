"""Every training method by name, and the command line all trainers share.

``METHODS[name].train(overrides, out_dir, profile, *, validator=None)`` runs (or resumes) a
method and returns its final model directory (``save_pretrained`` format, loadable with
harness.models.load_model); the reproduce pipeline calls it. ``validator`` (a
harness.validation.ValidatorFactory, e.g. evals.validation.benchmark_validator) is injected by the
caller and accepted by the methods marked ``validates`` (methods do not import evals). Methods not implemented yet are listed (``implemented=False``) so
recipes can name them.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.config import ConfigError, load_config, parse_overrides
from harness.cli_errors import run_reporting_errors
from harness.errors import UnknownNameError

TrainFn = Callable[..., Path]
"""``(overrides, out_dir, profile, *, validator=None) -> final model directory``."""


@dataclass
class MethodSpec:
    name: str
    paper: str
    implemented: bool
    description: str
    train: TrainFn | None = None
    validates: bool = False
    """Its trainer measures validation accuracy during training when given a ``validator``."""
    trains: bool = True
    """False for a stage that only generates (no optimizer state): pre-flight counts its model once."""
    reference: bool = False
    """It keeps a frozen reference copy of the student (PTD-PO): pre-flight counts it as frozen."""


def load_method_config(cls: type, profiles: dict[str, dict[str, Any]], profile: str,
                       config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """``cls`` from the profile's defaults ⊕ ``config_file`` ⊕ ``overrides`` (strictly validated)."""
    if profile not in profiles:
        raise ConfigError(f"profile {profile!r}: known profiles are {sorted(profiles)}")
    return load_config(cls, config_file, overrides, base=profiles[profile])


def _trainer(package: str, config_cls: str) -> TrainFn:
    """``train(overrides, out_dir, profile)`` of ``methods.<package>`` (imported on first use)."""

    def train(overrides: dict, out_dir: Path, profile: str = "smoke", *, validator: Any = None) -> Path:
        cfg_mod = importlib.import_module(f"methods.{package}.config")
        trainer = importlib.import_module(f"methods.{package}.trainer")
        cfg = load_method_config(getattr(cfg_mod, config_cls), cfg_mod.PROFILES, profile, None, overrides)
        final = trainer.train(cfg, Path(out_dir), **({"validator": validator} if validator is not None else {}))
        assert final is not None
        return final

    return train


def _entry(module: str, fn: str) -> TrainFn:
    """``module.fn`` as a registry trainer, imported on first use."""

    def train(overrides: dict, out_dir: Path, profile: str = "smoke", *, validator: Any = None) -> Path:
        kw = {"validator": validator} if validator is not None else {}
        return getattr(importlib.import_module(module), fn)(overrides, Path(out_dir), profile, **kw)

    return train


METHODS: dict[str, MethodSpec] = {s.name: s for s in [
    MethodSpec("sft", "VOLD (arXiv 2510.23497) Eq. 4, stage 1", True,
               "Supervised fine-tuning, cross-entropy on response tokens.", _trainer("sft", "SFTConfig")),
    MethodSpec("grpo", "GRPO (arXiv 2402.03300) with DAPO clip, as VOLD Eq. 2", True,
               "Online RL: group-normalised advantages, clipped surrogate, optional reference KL.",
               _trainer("grpo", "GRPOConfig")),
    MethodSpec("opd", "on-policy distillation (REOPOLD Eq. 3; GKD, Agarwal et al. 2024)", True,
               "Plain on-policy distillation: the teacher scores the student's rollouts in the same context; "
               "sampled-token reward (stop-gradient or not) or GKD's full-vocabulary KL / JSD.",
               _trainer("opd", "OPDConfig")),
    MethodSpec("vold_traces", "VOLD (arXiv 2510.23497) §3.2 / §4.1, stage 0", True,
               "A text-only teacher writes SFT traces (length filter, no answer verification).",
               _entry("methods.vold", "train_traces"), trains=False),
    MethodSpec("vold_sft", "VOLD (arXiv 2510.23497) Eq. 4, stage 1", True,
               "SFT of the student on the teacher's traces, vision tower frozen.",
               _entry("methods.vold", "train_sft")),
    MethodSpec("vold", "VOLD (arXiv 2510.23497) Eqs. 5-6, stage 2", True,
               "GRPO + reward-masked k2 distillation from a text-only teacher LLM on the same rollouts.",
               _entry("methods.vold", "train_rl"), validates=True),
    MethodSpec("reopold", "REOPOLD (arXiv 2603.11137) Eqs. 4-10", True,
               "Relaxed on-policy distillation: the teacher's log-ratio as a token reward, floored at "
               "log(lambda)/(1-lambda), with exploration then entropy-guided token selection.",
               _trainer("reopold", "REOPOLDConfig")),
    MethodSpec("vgs", "VGS (arXiv 2606.00564) Eqs. 13-25", True,
               "Decomposed on-policy distillation with Visual Gradient Steering (standard OPD at gamma = lambda = 0; "
               "language steering, adaptive VGS, GRPO + distillation by alpha).", _trainer("vgs", "VGSConfig")),
    MethodSpec("vgs_teacher", "VGS (arXiv 2606.00564) App. B.1, Table 3", True,
               "The teacher stage: GRPO of the teacher with Table 3's settings.",
               _entry("methods.vgs.trainer", "teacher_stage")),
    MethodSpec("ptdpo", "PTD-PO (arXiv 2606.07000) Eqs. 1-17", True,
               "GRPO / DAPO / GSPO plus top-K JSD (tail bucket) to the frozen reference given a privileged "
               "hint, on failed rollouts of groups below tau.", _trainer("ptdpo", "PTDPOConfig"),
               reference=True),
]}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownNameError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


def method_parser(prog: str, description: str, profiles: Iterable[str], default_out: str) -> argparse.ArgumentParser:
    """The options every trainer CLI shares: ``--profile``, ``--out``, ``--config``, ``--stop-after``
    and ``key=value`` overrides; a method adds its own (e.g. VOLD's ``--stage``)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--profile", default="smoke", choices=sorted(profiles))
    p.add_argument("--out", default=None, help=f"run directory (default {default_out}); rerun to resume")
    p.add_argument("--config", default=None, help="YAML file of settings, over the profile's")
    p.add_argument("--stop-after", type=int, default=None, help="end this session after N total steps (resumable)")
    p.add_argument("overrides", nargs="*", help="key=value settings, over the file's")
    return p


def run_cli(run: Callable[[], Path | None], out: Path, stop_after: int | None, prog: str = "train") -> int:
    """Run a trainer for a CLI: print the final directory (or how to resume); a user mistake (bad
    config or data row, unknown name, ``--out`` a file, no space left, hub unreachable: see
    ``harness.cli_errors``) is one line on stderr and exit code 2."""
    def go() -> int:
        final = run()
        print(final if final is not None else f"stopped after {stop_after} steps; rerun to resume: {out}")
        return 0

    return run_reporting_errors(prog, go)


def cli_main(name: str, cls: type, profiles: dict[str, dict[str, Any]], train: Callable[..., Path | None],
             argv: list[str] | None = None) -> int:
    """``python -m methods.<name> [--profile smoke|paper] [--out DIR] [--config FILE] [key=value ...]``."""
    p = method_parser(f"python -m methods.{name}", f"Train with {name}.", profiles, f"runs/{name}-<profile>")
    args = p.parse_args(argv)
    out = Path(args.out or f"runs/{name}-{args.profile}")

    def run() -> Path | None:
        cfg = load_method_config(cls, profiles, args.profile, args.config, parse_overrides(args.overrides))
        return train(cfg, out, stop_after=args.stop_after)

    return run_cli(run, out, args.stop_after, prog=f"methods.{name}")
