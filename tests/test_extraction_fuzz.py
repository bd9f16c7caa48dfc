"""Fuzz test of issue 17 (slow suite): >= 10,000 generated responses (nested and unclosed braces,
huge exponents, 100k-character strings, Unicode, code-like text, long whitespace runs) through
every extraction and verification entry point: no exception (raised, or logged by ``verify``'s
safety net); and linear time shown as CPU-time ratios: doubling each pathological input at most
triples an entry point's CPU time.

Run with ``-s`` to see the max latency of each entry point over the corpus. The math-verify worker
path (one IPC round trip per call, a process restart per timeout) gets a capped sample.
"""
from __future__ import annotations

import logging
import random
import time

import pytest

from cputime import doubling_times
from evals import scoring
from evals.benchmarks import REGISTRY
from harness import answers, rewards
from harness.types import Sample

pytestmark = pytest.mark.slow

N_RESPONSES = 10_000
N_HUGE = 24                 # 100k-character responses among them
N_WORKER = 60               # responses that go all the way to the math-verify worker
MAX_RATIO = 3.0

FRAGMENTS = [
    "\\boxed{", "}", "{", "\\fbox{", "\\boxed {", "\\\\", "\\{", "\\}", "$", "$$", "\\(", "\\)", "\\[", "\\]",
    "answer", "Answer:", "the answer is", "**Answer:**", "final answer =", "option", "choice is", "(B)", "B.",
    "A, C", " and ", "<answer>", "</answer>", "<think>", "</think>", "\\text{", "\\mathrm{", "\\frac{1}{2}",
    "\\dfrac", "\\left(", "\\right)", "1,000", "3.14159", "-0.5", "50%", "\\%", "°", "^\\circ", "x = 3", "12 cm",
    "10^{10^{10^{10}}}", "9" * 400, "1e99999", "2^{2^{2^{100}}}", "\\sqrt{", "\\infty", "nan", "inf",
    "def f(x):\n    return {'a': [1, 2]}\n", "for (i = 0; i < n; i++) { s += a[i]; }", "if x: {", "\\begin{pmatrix}",
    "é", "日本語", "\u202e", "\u0301", "\U0001F600", "\ud800", "\x00", "\u2212", "\u00a0", "\u3000",
    " ", "\n", "\t", "     ", "\n\n\n", "yes", "No", "(", ")", "[", "]", ":", ".", "!", "*", "**",
]


def random_response(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:  # nested boxes, possibly unclosed or unbalanced
        k = rng.randint(1, 300)
        inner = rng.choice(["5", "B", "\\frac{1}{2}", "", "{", "x" * rng.randint(0, 50)])
        return "\\boxed{" * k + inner + "}" * rng.randint(0, k + 2)
    if kind < 0.25:  # brace soup
        return "".join(rng.choice("{}\\ab ") for _ in range(rng.randint(1, 3000)))
    if kind < 0.35:  # long whitespace runs around markers
        ws = rng.choice([" ", "\t", "\n", "\u00a0", " \n"]) * rng.randint(100, 5000)
        return rng.choice(["Pick option", "answer", "The answer is", "\\boxed", "choice"]) + ws + rng.choice(
            ["1", "B", ":", "(C)", "", "is"])
    if kind < 0.45:  # Unicode noise
        return "".join(chr(rng.randint(1, 0x2FFFF)) for _ in range(rng.randint(1, 400)))
    if kind < 0.50:  # letter lists
        return rng.choice(["A", "(A)"]) + "".join(
            rng.choice([" A", ", B", " and C", "/D", " ", "(E)"]) for _ in range(rng.randint(1, 60))) + rng.choice(
            ["", "!", "?", "."])
    return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 120)))


def huge_response(rng: random.Random) -> str:
    base = random_response(rng)
    return (base * (100_000 // max(1, len(base)) + 1))[:100_000]


def corpus() -> list[str]:
    rng = random.Random(17)
    out = [huge_response(rng) for _ in range(N_HUGE)]
    out += [random_response(rng) for _ in range(N_RESPONSES - N_HUGE)]
    return out


MC = Sample(id="f", prompt="q", answer="B", choices={"A": "3", "B": "12", "C": "7", "D": "1/2"},
            meta={"multi_answer": True})
NUM = Sample(id="f", prompt="q", answer="0.5", meta={"precision": 2})
TXT = Sample(id="f", prompt="q", answer="yes", meta={"answers": ["yes", "yeah"]})
YN = Sample(id="f", prompt="q", answer="yes", meta={"benchmark": "hallusionbench"})
MV = Sample(id="f", prompt="q", answer="12", meta={"family": "mathvista", "answer_type": "integer"})
MVIS = Sample(id="f", prompt="q", answer="1/2", meta={"family": "mathvision"})
DM = Sample(id="f", prompt="q", answer="0.5", meta={"family": "dynamath", "answer_type": "float"})
NOOPT = Sample(id="f", prompt="q", answer="B", meta={"family": "vlm_choice", "letters": list("ABCD")})

# name -> response -> anything; every in-process entry point (verify on its fast path: timeout_s=0)
ENTRY_POINTS = {
    "answers.last_boxed": answers.last_boxed,
    "answers.extract_answer": answers.extract_answer,
    "answers.extract_choice": answers.extract_choice,
    "answers.match_choice_text": lambda r: answers.match_choice_text(r, MC.choices),
    "answers.normalize_answer": answers.normalize_answer,
    "rewards.verify(letter)": lambda r: rewards.verify(r, "B", timeout_s=0, choices=MC.choices),
    "rewards.verify(number)": lambda r: rewards.verify(r, "1,000", timeout_s=0),
    "rewards.verify(r, gold=r)": lambda r: rewards.verify("\\boxed{5}", r, timeout_s=0),
    "rewards.exact_match": lambda r: rewards.exact_match(r, "5"),
    "rewards.format_reward": lambda r: rewards.format_reward(r),
    "scoring.final_answer": scoring.final_answer,
    "scoring.parse_number": scoring.parse_number,
    "scoring.letters_in_answer": lambda r: scoring.letters_in_answer(r, MC),
    "scoring.normalize_text": scoring.normalize_text,
    "scoring.choice": lambda r: scoring.FAMILIES["choice"].extract(r, MC),
    "scoring.numeric": lambda r: scoring.FAMILIES["numeric"].extract(r, NUM),
    "scoring.yes_no": lambda r: scoring.check_yes_no(scoring.extract_yes_no(r, TXT) or "", TXT),
    "scoring.anls": lambda r: scoring.check_anls(scoring.extract_short(r, TXT) or "", TXT),
    "scoring.text": lambda r: scoring.check_text(scoring.extract_short(r, TXT) or "", TXT),
    "scoring.check_choice": lambda r: scoring.check_choice(r, MC),
    "benchmark.score(mmstar)": lambda r: REGISTRY["mmstar"].score(MC, r),
    # VLMEvalKit's rule functions (evals.vlmeval_families)
    "benchmark.score(hallusionbench)": lambda r: REGISTRY["hallusionbench"].score(YN, r),
    "benchmark.score(mathvista)": lambda r: REGISTRY["mathvista"].score(MV, r),
    "benchmark.score(mathvision)": lambda r: REGISTRY["mathvision"].score(MVIS, r),
    "benchmark.score(dynamath)": lambda r: REGISTRY["dynamath"].score(DM, r),
    "benchmark.score(mmmu_pro, no options)": lambda r: REGISTRY["mmmu_pro"].score(NOOPT, r),
}


@pytest.fixture
def no_logged_failures(caplog):
    caplog.set_level(logging.ERROR)
    yield
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, failures[0].getMessage()


def test_fuzz_every_entry_point_raises_nothing(no_logged_failures):
    responses = corpus()
    assert len(responses) >= 10_000 and max(map(len, responses)) == 100_000
    worst: dict[str, float] = {}
    for name, fn in ENTRY_POINTS.items():
        slowest = 0.0
        for r in responses:
            t0 = time.process_time()
            try:
                fn(r)
            except Exception as e:  # noqa: BLE001 - the assertion names the input
                pytest.fail(f"{name} raised {type(e).__name__}: {e} on {r[:200]!r} ({len(r)} chars)")
            slowest = max(slowest, time.process_time() - t0)
        worst[name] = slowest
    print("\nmax CPU seconds per call over", len(responses), "responses:")
    for name, t in sorted(worst.items(), key=lambda kv: -kv[1]):
        print(f"  {name:32s} {t * 1000:8.1f} ms")


def test_fuzz_math_verify_path_returns_within_its_limit(no_logged_failures, monkeypatch):
    """Capped: each call may cost a worker round trip (and a restart after a timeout)."""
    monkeypatch.setattr(scoring, "VERIFY_TIMEOUT_S", 1.0)
    rng = random.Random(7)
    responses = [random_response(rng) for _ in range(N_WORKER)] + [
        "\\boxed{2^{2^{2^{2^{100}}}}}", "\\boxed{10^{10^{10^{10}}}}", "\\boxed{" + "9" * 3000 + "}",
        "\\boxed{\\frac{1}{2}", "\\boxed{x^{" + "{" * 200 + "}"]
    math = Sample(id="f", prompt="q", answer="\\frac{1}{2}")
    worst = 0.0
    for r in responses:
        t0 = time.perf_counter()
        rewards.verify(r, "\\frac{1}{2}", timeout_s=1.0)
        scoring.FAMILIES["math"].check(scoring.final_answer(r) or "x", math)
        worst = max(worst, time.perf_counter() - t0)
    print(f"\nmath-verify path: {len(responses)} responses, max wall {worst:.2f} s for two 1 s-limited calls "
          f"(worker start-up included); stats {rewards.verifier_stats()}")
    assert worst < 2 * (1.0 + rewards.STARTUP_TIMEOUT_S)


# pathological inputs of n characters (n <= MAX_SCAN_CHARS / 2, so doubling is still scanned in full)
PATHOLOGICAL = {
    "nested boxes": lambda n: "\\boxed{" * (n // 8) + "5" + "}" * (n // 8),
    "unclosed boxes": lambda n: "\\boxed{" * (n // 7),
    "open braces": lambda n: "\\boxed{" + "{" * n,
    "option + spaces": lambda n: "Pick option" + " " * n + "1",
    "answer markers + spaces": lambda n: ("answer" + " " * 40 + "x ") * (n // 48),
    "letter list": lambda n: "A" + " A" * (n // 2) + "!",
    "text wrappers": lambda n: "\\text{" * (n // 6),
    "escapes": lambda n: "\\" * n,
    "digits": lambda n: "\\boxed{" + "9" * n + "}",
    "whitespace": lambda n: " \n\t" * (n // 3),
}
SIZE = 10_000


# the top-level entry points (each reaches the helpers the others test one by one)
TIMED = ["answers.last_boxed", "answers.extract_answer", "answers.extract_choice", "answers.match_choice_text",
         "rewards.verify(letter)", "rewards.verify(number)", "rewards.exact_match", "rewards.format_reward",
         "scoring.letters_in_answer", "scoring.numeric", "scoring.text", "benchmark.score(mmstar)"]


# Below this CPU time per call (at 2n = 20k characters, <= 50 ns a character) a call is too fast for
# its ratio to mean anything (allocator steps dominate); a quadratic scan is far above it.
FLOOR_S = 0.001


@pytest.mark.parametrize("gen", sorted(PATHOLOGICAL))
def test_doubling_a_pathological_input_at_most_triples_the_cpu_time(gen):
    times = {name: doubling_times(ENTRY_POINTS[name], PATHOLOGICAL[gen], SIZE, trials=3, limit=MAX_RATIO,
                                  min_total_s=0.02) for name in TIMED}
    ratios = {name: t2 / t1 for name, (t1, t2) in times.items()}
    worst = max(ratios, key=ratios.get)
    print(f"\n{gen}: worst ratio {ratios[worst]:.2f} ({worst}: {times[worst][0] * 1e3:.2f} -> "
          f"{times[worst][1] * 1e3:.2f} ms); slowest at 2n: "
          f"{max(t2 for _, t2 in times.values()) * 1e3:.2f} ms")
    bad = {k: round(ratios[k], 2) for k, (_, t2) in times.items() if ratios[k] > MAX_RATIO and t2 > FLOOR_S}
    assert not bad
