"""Rewards: answer verification (math-verify equivalence under a hard time limit), format, exact match.

``verify(response, gold)`` asks: is the final answer of ``response`` (``harness.answers.
extract_answer``) equivalent to ``gold`` (plain text or LaTeX)? Three steps:

1. multiple choice: a gold that is a single option letter (``B``, ``(B)``, ``B.``) is compared
   with ``extract_choice(response)`` (or, when ``choices`` are given and the response names no
   letter, with ``match_choice_text``);
2. fast path, in process: equal after ``normalize_answer``, or both plain numbers (thousands
   separators, ``%``, trailing unit words allowed) — decided here, no sympy;
3. everything else goes to math-verify (``parse`` + ``verify``) in a persistent worker
   **subprocess** that is killed when it runs past ``timeout_s``; the call then returns False.

Equivalence conventions (documented decisions):
- Numbers: equal when exactly equal; if either is written with a decimal point, when equal after
  rounding to 6 decimals (math-verify's ``float_rounding=6``): ``0.5 == \\frac{1}{2}``,
  ``1,000 == 1000``, ``-3 == -3.0``.
- Percent (math-verify's convention, kept in the fast path): ``p%`` equals both ``p`` and
  ``p/100``; so ``50% == 50 == 0.5`` when one side carries the ``%``, but ``50 != 0.5``.
- Units are dropped, not compared: ``12 cm == 12``, ``12\\,\\text{cm} == 12`` (and ``12 m == 12 cm``).
- Sets are unordered (``{1,2} == {2,1}``); interval ends matter (``[1,2) != (1,2]``);
  ``x = 3`` equals ``3``; ``\\dfrac``/``\\tfrac`` are ``\\frac``; LaTeX and plain forms compare equal.
- No marked final answer (no box, answer tag or "answer is" marker): math-verify's own extraction
  (``mathverify_extract``: display math, relations, matrices, a trailing number, in the worker
  under the same time limit) supplies it, so unmarked answers score as a plain math-verify call
  scores them. ``3,5`` (one comma, not a thousands separator) also reads as 3.5, as math-verify
  reads it in plain text. No answer at all, or one longer than ``MAX_ANSWER_CHARS``: False. For a letter
  gold, an explicit "option/choice (is) B" also counts as stated; a letter (or option text) that
  merely occurs somewhere in an answer-free response does not.

Time limit: math-verify's own timeouts use ``signal.alarm`` (main thread only, and unable to
stop a long C-level big-integer operation), so they are switched off and the limit is enforced
from outside: the work runs in a worker process (``harness/_verify_worker.py``), the caller
waits at most ``timeout_s`` for its reply, and a late worker is killed (SIGKILL) and replaced.
This holds in any thread and inside multiprocessing workers (daemonic ones included: the worker is
a plain ``subprocess``). ``timeout_s`` bounds the verification itself; a call may additionally
wait (a) once per worker for its start-up (importing math-verify, ~1 s; at most
``STARTUP_TIMEOUT_S``) and (b) for a free worker when ``max_workers`` calls are already running
(each of those ends within its own limit). Nothing is executed: see the worker's docstring.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Context, Decimal
from pathlib import Path

from harness.answers import (
    _OPTION_WORD_RE,
    _window,
    OPTION_LETTERS,
    extract_answer,
    extract_choice,
    last_boxed,
    match_choice_text,
    normalize_answer,
)
from harness.deadline import call_with_deadline

__all__ = [
    "extract_answer",
    "mathverify_extract",
    "extract_choice",
    "match_choice_text",
    "verify",
    "math_reward",
    "format_reward",
    "exact_match",
    "verifier_stats",
    "verifier_workers",
    "shutdown_verifier",
]

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 4000  # longer "answers" are not answers (and would overfill the pipe)
STARTUP_TIMEOUT_S = 60.0
_WORKER_SCRIPT = Path(__file__).with_name("_verify_worker.py")
# Run the worker by path without putting harness/ on its sys.path (harness/types.py would
# shadow the standard library's ``types``); ``-c`` puts only the cwd there, which is removed.
_BOOT = "import sys, runpy; sys.path.pop(0); runpy.run_path(sys.argv[1], run_name='__main__')"


def _default_max_workers() -> int:
    env = os.environ.get("VLMREPRO_VERIFY_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(8, os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------
class _Worker:
    """One ``_verify_worker.py`` subprocess speaking JSON lines."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self._buf = b""
        self.ready = False

    def read_line(self, deadline: float) -> dict | None:
        """The next reply, or None when the deadline passes or the worker dies first."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # EOF: the worker died (e.g. a segfault on a pathological input)
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None

    def send(self, request: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class VerifierStats:
    calls: int = 0  # requests sent to a worker
    timeouts: int = 0  # workers killed for running past the limit
    failures: int = 0  # workers that died or failed to start
    started: int = 0  # worker processes started


class _Pool:
    """Up to ``max_workers`` workers, checked out by one call at a time; thread-safe."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.idle: list[_Worker] = []
        self.busy = 0
        self.cond = threading.Condition()
        self.stats = VerifierStats()

    def _acquire(self) -> _Worker:
        with self.cond:
            while not self.idle and self.busy + len(self.idle) >= self.max_workers:
                self.cond.wait()
            self.busy += 1
            if self.idle:
                return self.idle.pop()
        try:
            worker = _Worker()
        except BaseException:
            with self.cond:
                self.busy -= 1
                self.cond.notify()
            raise
        with self.cond:
            self.stats.started += 1
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self.cond:
            self.busy -= 1
            if healthy:
                self.idle.append(worker)
            self.cond.notify()

    def equal(self, gold: str, pred: str, timeout_s: float) -> bool:
        reply = self.ask({"gold": gold, "pred": pred}, timeout_s)
        return bool(reply and reply.get("equal"))

    def ask(self, request: dict, timeout_s: float) -> dict | None:
        """The worker's reply to ``request``, or None (failed to start, died, or ran past ``timeout_s``)."""
        worker = self._acquire()
        healthy = False
        try:
            if not worker.ready:
                hello = worker.read_line(time.monotonic() + max(STARTUP_TIMEOUT_S, timeout_s))
                if not hello or not hello.get("ready"):
                    self._count("failures")
                    logger.error("math-verify worker failed to start (is math-verify installed?)")
                    return None
                worker.ready = True
            self._count("calls")
            if not worker.send(request):
                self._count("failures")
                return None
            reply = worker.read_line(time.monotonic() + timeout_s)
            if reply is None:
                alive = worker.proc.poll() is None
                self._count("timeouts" if alive else "failures")
                if alive:
                    logger.warning("verify: math-verify ran past %.1fs; worker killed", timeout_s)
                return None
            healthy = True
            return reply
        finally:
            self._release(worker, healthy)

    def _count(self, name: str) -> None:
        with self.cond:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def shutdown(self) -> None:
        with self.cond:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.kill()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool(_default_max_workers())
        return _POOL


def _forget_pool_after_fork() -> None:
    """A forked child must not share its parent's worker pipes (nor a lock held at fork time)."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_after_fork)


def shutdown_verifier() -> None:
    """Stop the idle worker processes (they are restarted on demand)."""
    if _POOL is not None:
        _POOL.shutdown()


atexit.register(shutdown_verifier)


def verifier_workers() -> int:
    """How many math-verify worker processes may run at once (``VLMREPRO_VERIFY_WORKERS``, default
    the CPU count up to 8): callers with many answers to check can keep that many calls in flight."""
    return _pool().max_workers


def verifier_stats() -> VerifierStats:
    """Counters of this process's worker pool (a copy)."""
    s = _pool().stats
    return VerifierStats(s.calls, s.timeouts, s.failures, s.started)


# --------------------------------------------------------------------------------------------
# Fast path
# --------------------------------------------------------------------------------------------
_NUMBER_RE = re.compile(
    r"(?P<num>[-+]?(?:\d{1,3}(?:,\d{3}){1,12}|\d{1,40})(?:\.\d{1,40})?|[-+]?\.\d{1,40})"
    r"\s*+(?P<pct>%|percent\b)?"
    r"(?:\s*+(?:\^\{?\\circ\}?|°|\\circ|"  # degrees
    r"(?<=\s)[a-zA-Z]{1,12}(?:\^\{?\d\}?)?(?:/[a-zA-Z]{1,6})?|"  # "12 m", "3 cm^2", "5 m/s"
    r"[a-zA-Z]{2,12}(?:\^\{?\d\}?)?(?:/[a-zA-Z]{1,6})?))?"  # "12cm" (one glued letter: "2x", no)
)
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|mathrm|mbox)\s*+\{([^{}]*+)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_ROUND = Decimal("1e-6")
_CONTEXT = Context(prec=120)  # exact for the <= 80-digit numbers the regex admits


@dataclass(frozen=True)
class _Num:
    value: Decimal
    percent: bool
    has_point: bool


def _as_number(ans: str) -> _Num | None:
    """A plain number with optional thousands separators, percent sign and unit; else None."""
    s = ans.strip().strip("$").replace("\\%", "%").replace("\u2212", "-").replace("{,}", ",")
    s = _TEXT_WRAPPER_RE.sub(r" \1", s)  # "12\,\text{cm}" -> "12 cm"
    s = " ".join(_SPACING_RE.sub(" ", s).split())
    m = _NUMBER_RE.fullmatch(s)
    if m is None:
        return None
    num = m.group("num").replace(",", "")
    return _Num(Decimal(num), bool(m.group("pct")), "." in num)


def _numbers_equal(a: _Num, b: _Num) -> bool:
    def same(x: Decimal, y: Decimal, rounded: bool) -> bool:
        if rounded:
            return x.quantize(_ROUND, context=_CONTEXT) == y.quantize(_ROUND, context=_CONTEXT)
        return x == y

    rounded = a.has_point or b.has_point
    if a.percent == b.percent:
        return same(a.value, b.value, rounded)
    pct, plain = (a, b) if a.percent else (b, a)
    return same(pct.value, plain.value, rounded) or same(_CONTEXT.divide(pct.value, 100), plain.value, True)


_GOLD_LETTER_RE = re.compile(r"\(?([A-Z])\)?[.:]?")


def _gold_answer(gold: str) -> str:
    boxed = last_boxed(gold) if "\\boxed" in gold or "\\fbox" in gold else None
    return (boxed if boxed is not None else gold).strip().strip("$").strip()


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def verify(
    response: str,
    gold: str,
    timeout_s: float = 5.0,
    *,
    choices: dict[str, str] | None = None,
    letters: str = OPTION_LETTERS,
) -> bool:
    """Is the final answer of ``response`` equivalent to ``gold``? Never raises, never hangs.

    See the module docstring for the rules and the time limit. ``choices`` (letter -> option
    text) lets a multiple-choice response that states the option's text instead of its letter
    count. ``timeout_s`` <= 0 disables the math-verify step (fast path only).
    """
    try:
        return _verify(response, gold, timeout_s, choices, letters)
    except Exception:  # noqa: BLE001 - a reward must never crash the trainer
        logger.exception("verify failed; scoring the response as incorrect")
        return False


def _verify(response, gold, timeout_s, choices, letters) -> bool:
    decided = call_with_deadline(_decide, response, gold, choices, letters, timeout_s=timeout_s, default=False)
    if not isinstance(decided, tuple):
        return bool(decided)
    gold_ans, pred = decided
    if pred is None:  # no marked final answer: math-verify's own extraction of the response
        pred = mathverify_extract(response, timeout_s)
        if pred is None:
            return False
        decided = call_with_deadline(_decide_answer, pred, gold_ans, timeout_s=timeout_s, default=False)
        if not isinstance(decided, tuple):
            return bool(decided)
    if len(pred) > MAX_ANSWER_CHARS or len(gold_ans) > MAX_ANSWER_CHARS or timeout_s <= 0:
        return False
    return _pool().equal(gold_ans, pred, float(timeout_s))


def mathverify_extract(response: str, timeout_s: float = 5.0) -> str | None:
    """The final answer math-verify's own extraction finds in ``response`` (``parse`` with its
    LaTeX and expression configs: the last ``\\boxed{}``, a "final answer is" phrase, the last
    math environment, display math, a trailing number...), as text; None when it finds none or
    runs past ``timeout_s`` (the worker is then killed). Never raises."""
    if not isinstance(response, str) or not response.strip() or timeout_s <= 0:
        return None
    try:
        reply = _pool().ask({"extract": _window(response)}, float(timeout_s))
    except Exception:  # noqa: BLE001 - a reward must never crash the trainer
        logger.exception("math-verify extraction failed")
        return None
    ans = reply.get("answer") if reply else None
    return ans if isinstance(ans, str) and ans.strip() and len(ans) <= MAX_ANSWER_CHARS else None


def _decide(response, gold, choices, letters) -> bool | tuple[str, str]:
    """Everything of ``verify`` but math-verify (in-process, under the caller's deadline): True /
    False, or ``(gold answer, predicted answer)`` for math-verify when they differ as text and as
    numbers."""
    if not isinstance(response, str) or gold is None:
        return False
    response = _window(response)
    gold_ans = _gold_answer(str(gold))
    if not gold_ans:
        return False
    letter = _GOLD_LETTER_RE.fullmatch(gold_ans)
    if letter and letter.group(1) in letters.upper():
        if extract_answer(response) is None and not _OPTION_WORD_RE.search(response):
            return False  # no stated answer: a letter merely mentioned in the reasoning does not count
        chosen = extract_choice(response, letters)
        if chosen is None and choices:
            chosen = match_choice_text(response, choices)
        return chosen == letter.group(1)

    pred = extract_answer(response)
    if pred is None:
        return gold_ans, None  # the caller asks math-verify's own extraction
    return _decide_answer(pred, gold_ans)


def _decide_answer(pred: str, gold_ans: str) -> bool | tuple[str, str]:
    """An extracted answer against the gold answer: True / False when decided as text or as plain
    numbers, else ``(gold answer, predicted answer)`` for math-verify."""
    if normalize_answer(pred) == normalize_answer(gold_ans):
        return True
    if pred.lower() == gold_ans.lower() and pred.replace(" ", "").isalpha():
        return True  # words: "Yes" == "yes"
    a, b = _as_number(pred), _as_number(gold_ans)
    if a is not None and b is not None:
        return _numbers_equal(a, b)
    return gold_ans, pred


def math_reward(
    response: str,
    gold: str,
    timeout_s: float = 5.0,
    *,
    choices: dict[str, str] | None = None,
) -> float:
    """1.0 when ``verify(response, gold)``, else 0.0 (math-verify equivalence reward)."""
    return 1.0 if verify(response, gold, timeout_s, choices=choices) else 0.0


def exact_match(response: str, gold: str) -> bool:
    """Strict match of the last ``\\boxed{}`` content with ``gold`` (see ``_exact_match``), under
    the extraction deadline (``harness.deadline``): False when it runs past it."""
    return bool(call_with_deadline(_exact_match, response, gold, default=False))


def _exact_match(response: str, gold: str) -> bool:
    """Strict match of the last ``\\boxed{}`` content with ``gold`` after ``normalize_answer``.

    VOLD's reward (binary exact match of the boxed answer, docs/methods/vold.md V11): no equivalence, no
    fallback to other answer forms; a response without a closed box never matches. A gold given
    with its own ``\\boxed{}`` is unwrapped first.
    """
    if not isinstance(response, str) or gold is None:
        return False
    boxed = last_boxed(response)
    if boxed is None:
        return False
    target = normalize_answer(_gold_answer(str(gold)))
    return bool(target) and normalize_answer(boxed) == target


def format_reward(
    response: str,
    think_tag: str | None = "think",
    *,
    opened_in_prompt: bool = False,
) -> float:
    """1.0 when the response is well formed, else 0.0 (the rules: ``_format_reward``), under the
    extraction deadline (``harness.deadline``): 0.0 when it runs past it."""
    return float(call_with_deadline(lambda: _format_reward(response, think_tag, opened_in_prompt=opened_in_prompt),
                                    default=0.0))


def _format_reward(
    response: str,
    think_tag: str | None = "think",
    *,
    opened_in_prompt: bool = False,
) -> float:
    """1.0 when the response is well formed, else 0.0.

    With ``think_tag="think"`` (``"reason"`` for the VGS prompt): the response is, up to
    surrounding whitespace, ``<think>R</think>`` followed by text that contains a closed,
    non-empty ``\\boxed{...}``; R is non-blank; each tag occurs exactly once and nothing
    follows the answer's text but more text (no further tags). With ``opened_in_prompt=True``
    the chat template already emitted ``<think>``, so the response must not repeat it and only
    ``R</think>...`` is required. With ``think_tag=None``: just a closed, non-empty boxed answer.
    """
    if not isinstance(response, str):
        return 0.0
    text = response.strip()
    if think_tag is not None:
        open_tag, close_tag = f"<{think_tag}>", f"</{think_tag}>"
        n_open, n_close = text.count(open_tag), text.count(close_tag)
        if n_close != 1 or n_open != (0 if opened_in_prompt else 1):
            return 0.0
        if not opened_in_prompt:
            if not text.startswith(open_tag):
                return 0.0
            text = text[len(open_tag):]
        reasoning, text = text.split(close_tag, 1)
        if not reasoning.strip():
            return 0.0
    boxed = last_boxed(text)
    return 1.0 if boxed is not None and boxed.strip() else 0.0
