"""Validation during training, injected by the caller (methods never import evals).

A *validator factory* (``ValidatorFactory``) takes a method's config and returns ``make_validator``:
``Context -> (() -> float)``, built once per run when the step function is built, then called to
measure the current policy (e.g. greedy accuracy in percent on a benchmark,
``evals.validation.benchmark_validator``). ``with_validation`` wraps an online step builder so that
the step metrics carry the measurement. Composition roots pick the factory: the reproduce pipeline
passes ``evals.validation.benchmark_validator``; a method's CLI resolves one by name through the
``vlmrepro.validators`` entry points (``load_validator``), which keeps ``import evals`` out of
``methods/``.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from harness.trainer import Context, StepFn

Validate = Callable[[], float]
MakeValidator = Callable[["Context"], Validate]
ValidatorFactory = Callable[[Any], MakeValidator]
"""``cfg -> make_validator``, e.g. ``evals.validation.benchmark_validator``."""

VALIDATORS_GROUP = "vlmrepro.validators"

__all__ = ["MakeValidator", "VALIDATORS_GROUP", "Validate", "ValidatorFactory", "load_validator", "with_validation"]


def with_validation(build_step: Callable[["Context"], "StepFn"], make_validator: MakeValidator, every: int,
                    steps: int) -> Callable[["Context"], "StepFn"]:
    """Wrap an online step builder so that steps log ``val_acc`` every ``every`` steps and at the
    last (``steps``), and the first step (index 0) also ``val_acc_step0``, measured before its
    update. ``every <= 0``: ``build_step`` unchanged (no validation, the validator is never built)."""
    if every <= 0:
        return build_step

    def build(ctx: "Context") -> "StepFn":
        step = build_step(ctx)
        validate = make_validator(ctx)

        def wrapped(i: int, samples: list) -> dict[str, float]:
            before = {"val_acc_step0": validate()} if i == 0 else {}
            metrics = step(i, samples)
            if (i + 1) % every == 0 or i + 1 == steps:
                metrics["val_acc"] = validate()
            metrics.update(before)
            return metrics

        return wrapped

    return build


def load_validator(name: str) -> ValidatorFactory:
    """The validator factory registered as ``name`` in the ``vlmrepro.validators`` entry points
    (pyproject.toml; ``benchmark`` = ``evals.validation:benchmark_validator``)."""
    found = {ep.name: ep for ep in entry_points(group=VALIDATORS_GROUP)}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(
            f"no validator {name!r} in the {VALIDATORS_GROUP!r} entry points (registered: {known}); "
            f"they come from the installed package's metadata: reinstall it (pip install -e .) or set val_every=0")
    return found[name].load()
