"""VLMEvalKit's own scoring rules (``ms-vlmeval==0.0.20``), loaded without its package ``__init__``.

``import vlmeval`` runs a heavy ``__init__`` (it imports torch, reads a ``.env`` file and disables
TLS certificate verification process-wide). This module instead registers bare package objects
for ``vlmeval``, ``vlmeval.dataset`` and ``vlmeval.dataset.utils`` (right ``__path__``, no code
run) and imports only the light submodules that hold the rules: ``vlmeval.smp``, ``vlmeval.utils``
(matching), ``vlmeval.dataset.utils.{multiple_choice, mathvista, mathverse, mathv, logicvista,
yorn, wemath}`` and ``vlmeval.dataset.dynamath``. Their imports that are heavy or need a network
(``build_judge`` -> ``vlmeval.api``) are not loaded: ``vlmeval.dataset.utils.build_judge`` is set
to a function that raises (our judge is ``evals.judge``); nothing else is stubbed. Global state
that their import touches (``ssl``'s default context, ``PIL.Image.MAX_IMAGE_PIXELS``, which
``vlmeval.smp.vlm`` raises to 1e9) is restored afterwards.

Functions here are thin, typed wrappers that call VLMEvalKit's code unchanged. The one rule not
called is MathVision's ``is_equal``: it ``eval``s the model's answer, so ``mathv_is_equal`` is a
re-implementation without ``eval`` (the parity test compares the two on safe inputs).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import re
import ssl
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from harness.errors import ConfigError

VLMEVAL_VERSION = "0.0.20"
INSTALL_HINT = (f"VLMEvalKit's rules need ms-vlmeval=={VLMEVAL_VERSION}: run "
                f"`pip install --no-deps ms-vlmeval=={VLMEVAL_VERSION} validators sty timeout-decorator` "
                "(README: Install)")
_BARE = ("vlmeval", "vlmeval.dataset", "vlmeval.dataset.utils")
_RULE_MODULES = ("vlmeval.smp", "vlmeval.utils", "vlmeval.dataset.utils.multiple_choice",
                 "vlmeval.dataset.utils.mathvista", "vlmeval.dataset.utils.mathverse",
                 "vlmeval.dataset.utils.mathv", "vlmeval.dataset.utils.logicvista",
                 "vlmeval.dataset.utils.yorn", "vlmeval.dataset.utils.wemath", "vlmeval.dataset.dynamath")


class VLMEvalMissing(ConfigError):
    """ms-vlmeval (or one of the light packages its rule modules import) is not installed."""


def _no_build_judge(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("VLMEvalKit's build_judge is not loaded here; the judge is evals.judge")


@lru_cache(maxsize=1)
def _root() -> Path:
    spec = importlib.util.find_spec("vlmeval")
    if spec is None or not spec.submodule_search_locations:
        raise VLMEvalMissing(INSTALL_HINT)
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=1)
def modules() -> types.SimpleNamespace:
    """The rule modules, as ``ns.mathvista``, ``ns.yorn``, ... (loaded once)."""
    root = _root()
    from PIL import Image

    saved_ctx, saved_pixels = ssl._create_default_https_context, Image.MAX_IMAGE_PIXELS
    try:
        for name in _BARE:
            if name not in sys.modules:
                mod = types.ModuleType(name)
                mod.__path__ = [str(root.joinpath(*name.split(".")[1:]))]  # type: ignore[attr-defined]
                mod.__package__ = name
                sys.modules[name] = mod
        sys.modules["vlmeval.dataset.utils"].build_judge = _no_build_judge  # type: ignore[attr-defined]
        loaded = {}
        for name in _RULE_MODULES:
            try:
                loaded[name.rsplit(".", 1)[-1]] = importlib.import_module(name)
            except ImportError as e:
                raise VLMEvalMissing(f"{INSTALL_HINT}; importing {name} failed: {e}") from None
        version = _installed_version()
        if version != VLMEVAL_VERSION:
            raise VLMEvalMissing(f"ms-vlmeval {version} is installed; {INSTALL_HINT}")
    finally:
        ssl._create_default_https_context = saved_ctx
        Image.MAX_IMAGE_PIXELS = saved_pixels
    return types.SimpleNamespace(**loaded)


def _installed_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ms-vlmeval")
    except PackageNotFoundError:
        return None


def available() -> bool:
    """Whether the rules load (no exception)."""
    try:
        modules()
        return True
    except VLMEvalMissing:
        return False


# ------------------------------------------------------------------ option matching
def can_infer(answer: str, choices: dict[str, str]) -> str | None:
    """``vlmeval.utils.can_infer``: the option letter (or ``"Z"``: refused) ``answer`` names, else None."""
    got = modules().utils.can_infer(str(answer), {k: str(v) for k, v in choices.items()})
    return got or None


# ------------------------------------------------------------------ yes / no
def yorn_extraction(text: str) -> str:
    """``YOrN_Extraction``: ``"Yes"`` / ``"No"`` when only that word occurs, else ``"Unknown"``."""
    return modules().yorn.YOrN_Extraction(str(text))


# ------------------------------------------------------------------ MathVista
def mathvista_line(answer: str, question_type: str, answer_type: str, choices: list[str] | None,
                   prediction: str, res: str | None = None, question: str = "") -> dict[str, Any]:
    """A MathVista row as VLMEvalKit's functions read it. ``choices`` become the ``repr`` of a list
    of strings, which ``post_check`` ``eval``s: a literal we write, never model output."""
    opts = [str(c) for c in (choices or [])]
    option = next((chr(65 + i) for i, c in enumerate(opts) if c == str(answer)), None)
    return {"answer": str(answer), "question_type": question_type, "answer_type": answer_type,
            "choices": repr(opts), "answer_option": option, "prediction": prediction,
            "res": prediction if res is None else res, "question": question}


def mathvista_post_check(line: dict[str, Any], prefetch: bool = False) -> Any:
    """``mathvista.post_check``: prefetch -> the answer found in the prediction (or False);
    else whether ``line["res"]`` (an extracted answer) is right."""
    return modules().mathvista.post_check(line, prefetch=prefetch)


# ------------------------------------------------------------------ MathVerse
def mathverse_post_check(extract: str, answer: str) -> bool:
    """``post_check_score``: the extracted answer equals the gold answer as stripped text."""
    return bool(modules().mathverse.post_check_score({"extract": extract, "answer": answer}, prefetch=False))


# ------------------------------------------------------------------ MathVision
_SAFE_ARITH = re.compile(r"[0-9.+\-*/() e]{1,64}")


def _arith(s: str) -> float | None:
    """The value of a short arithmetic expression (digits, ``+-*/().``) without ``eval``."""
    if not _SAFE_ARITH.fullmatch(s) or "**" in s or "//" in s:
        return None
    tokens = re.findall(r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|[-+*/()]", s)
    if "".join(tokens) != s.replace(" ", ""):
        return None
    pos = 0

    def expr() -> float:
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]; pos += 1
            v = v + term() if op == "+" else v - term()
        return v

    def term() -> float:
        nonlocal pos
        v = factor()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]; pos += 1
            v = v * factor() if op == "*" else v / factor()
        return v

    def factor() -> float:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError
        t = tokens[pos]; pos += 1
        if t in "+-":
            return factor() if t == "+" else -factor()
        if t == "(":
            v = expr()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise ValueError
            pos += 1
            return v
        if t in "*/)":
            raise ValueError
        return float(t)

    try:
        v = expr()
        return v if pos == len(tokens) else None
    except (ValueError, ZeroDivisionError, RecursionError, OverflowError):
        return None


def mathv_is_equal(asw: str, gt_asw: str) -> bool:
    """MathVision's ``is_equal`` without ``eval``: equal as lower-cased stripped text; or both are
    arithmetic expressions (what its ``eval`` accepts without names) with values within 1e-6; or
    both parse with ``latex2sympy`` to something whose ``str`` is such an expression (its second
    ``eval``: ``sqrt(4)`` has a name, so it fails there, as here)."""
    a, g = str(asw).lower().strip(), str(gt_asw).lower().strip()
    if a == g:
        return True
    if _close(_arith(g), _arith(a)):
        return True
    if not (_latex_safe(a) and _latex_safe(g)):
        return False
    from harness.deadline import call_with_deadline

    return bool(call_with_deadline(_latex_close, g, a, timeout_s=5.0, default=False))


# sympy evaluates what latex2sympy builds: no towers of powers, big exponents or factorials here
_LATEX_UNSAFE = re.compile(r"\^\s*+\{?\s*+[-+]?\d{4}|!|\d{40}")


def _latex_safe(s: str) -> bool:
    return len(s) <= 200 and s.count("^") <= 1 and not _LATEX_UNSAFE.search(s)


def _latex_close(g: str, a: str) -> bool:
    try:
        from latex2sympy2_extended import latex2sympy

        return _close(_arith(str(latex2sympy(g)).lower()), _arith(str(latex2sympy(a)).lower()))
    except Exception:  # noqa: BLE001 - not comparable means not equal (as in VLMEvalKit)
        return False


def _close(x: float | None, y: float | None) -> bool:
    return x is not None and y is not None and math.isfinite(x - y) and abs(x - y) < 1e-6


def mathv_prompt(question: str, prediction: str, choices: list[str] | None) -> str:
    line = {"question": question, "prediction": prediction, "choices": repr([str(c) for c in choices or []])}
    return modules().mathv.build_mathv_gpt4_prompt(line)


# ------------------------------------------------------------------ DynaMath
class _NoJudge:
    """A judge that never answers: VLMEvalKit's rule path alone (its parse of the prediction)."""

    def generate(self, prompt: str, **kw: Any) -> str:
        return ""


def dynamath_auxeval(prediction: str, answer: str, answer_type: str,
                     judge: Callable[[str], str] | None = None) -> dict[str, Any]:
    """``DynaMath_auxeval``: ``{"parse", "extracted", "correct"}``. Without ``judge`` an unparsable
    prediction is not sent anywhere (it scores as VLMEvalKit scores a judge that returns nothing)."""
    model: Any = _NoJudge()
    if judge is not None:
        model = types.SimpleNamespace(generate=lambda prompt, **kw: judge(prompt))
    line = {"prediction": str(prediction), "answer": str(answer), "answer_type": answer_type}
    try:
        return modules().dynamath.DynaMath_auxeval(model, line)
    except AttributeError:  # free-form with an unparsable JSON reply: short_answer is None there
        return {"parse": False, "extracted": None, "correct": False}
