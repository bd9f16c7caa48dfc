"""The hard time limit on in-process extraction (harness.deadline) and the entry points behind it."""
from __future__ import annotations

import re
import signal
import threading
import time

import pytest

import harness.deadline as deadline
import harness.rewards as rewards
from harness.deadline import call_with_deadline
from harness.types import Sample

CATASTROPHIC = re.compile(r"(a+)+$")  # exponential backtracking on "aaa...!"


def _busy(*_args):
    while True:
        pass


def test_a_catastrophic_regex_and_a_busy_loop_are_stopped():
    before = signal.getitimer(signal.ITIMER_REAL)[0]  # pytest-timeout's timer, or 0
    t = time.monotonic()
    assert call_with_deadline(CATASTROPHIC.match, "a" * 40 + "!", timeout_s=0.2, default="late") == "late"
    assert call_with_deadline(_busy, timeout_s=0.2, default=-1) == -1
    assert time.monotonic() - t < 3.0  # unguarded, the regex alone would run for hours
    assert call_with_deadline(len, "abc", timeout_s=1.0) == 3
    after = signal.getitimer(signal.ITIMER_REAL)[0]  # ours disarmed, the caller's re-armed
    assert after == 0 if before == 0 else abs(after - (before - (time.monotonic() - t))) < 0.5


def test_an_outer_timer_is_kept_and_threads_run_unguarded():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    outer = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, when it uses signals
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        assert call_with_deadline(_busy, timeout_s=0.1, default="inner") == "inner"  # ours fires first
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0.5 < left < 0.95  # re-armed with what it had left
        assert call_with_deadline(len, "ab", timeout_s=5.0) == 2  # the outer one is shorter: unguarded
        time.sleep(left + 0.3)
        assert fired == [1]
    finally:
        signal.signal(signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, *outer)
    out = []
    th = threading.Thread(target=lambda: out.append(call_with_deadline(len, "xyz", timeout_s=0.1)))
    th.start()
    th.join()
    assert out == [3]


@pytest.fixture
def slow_extraction(monkeypatch):
    """Every rule-based extraction made pathologically slow; the limit lowered to 0.2 s."""
    monkeypatch.setattr(deadline, "DEFAULT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(rewards, "extract_answer", _busy)
    monkeypatch.setattr(rewards, "last_boxed", _busy)
    monkeypatch.setattr(rewards, "_window", lambda text: _busy())


def test_reward_entry_points_give_up_at_the_limit(slow_extraction):
    t = time.monotonic()
    assert rewards.verify("The answer is \\boxed{4}.", "4", timeout_s=0.2) is False
    assert rewards.exact_match("\\boxed{4}", "4") is False
    assert rewards.format_reward("<think>x</think> \\boxed{4}") == 0.0
    assert time.monotonic() - t < 5.0


def test_benchmark_scoring_gives_up_at_the_limit(monkeypatch):
    from evals import scoring
    from evals.benchmarks import get_benchmark

    bench = get_benchmark("math500")
    monkeypatch.setattr(deadline, "DEFAULT_TIMEOUT_S", 0.2)
    family = scoring.FAMILIES["math"]
    monkeypatch.setitem(scoring.FAMILIES, "math", scoring.Family("math", lambda r, s: _busy(), family.check))
    sample = Sample(id="1", prompt="1+3?", answer="4", meta={"family": "math"})
    t = time.monotonic()
    assert bench.score(sample, "\\boxed{4}") == {"extracted": None, "score": 0.0, "correct": False}
    assert time.monotonic() - t < 5.0
