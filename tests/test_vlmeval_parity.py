"""Parity of our scorer with VLMEvalKit's own rule functions (ms-vlmeval 0.0.20), called directly.

For every benchmark VLMEvalKit scores by rule, ``Benchmark.score`` must give what VLMEvalKit's
function gives on the same prediction (``evals.vlmeval_families.prediction``: the explicit final
answer, else the whole response), on three corpora: this issue's kinds of output, >= 200
generations of the smoke model (tests/data/smoke_generations.jsonl) and a slice of the extraction
fuzz corpus. A missing VLMEvalKit fails these tests (it is a CI dependency), it does not skip them.

``agreement()`` also measures how often our score equals VLMEvalKit's rule applied to the *whole*
response (what VLMEvalKit does before asking its judge); ``python tests/test_vlmeval_parity.py``
prints those figures.
"""
from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from pathlib import Path

import pytest

from evals import vlmeval_rules as vr
from evals.benchmarks import REGISTRY
from evals.vlmeval_families import dynamath_type, mathvista_line, prediction
from harness.types import Sample

DATA = Path(__file__).parent / "data" / "smoke_generations.jsonl"
PARITY_BENCHMARKS = ("mmstar", "mmmu_pro", "wemath", "mathvista", "mathvision", "dynamath", "mathverse",
                     "hallusionbench")


class _NoJudge:
    def generate(self, prompt, **kw):
        return ""


def _safe_for_eval(s: str) -> bool:
    """Inputs VLMEvalKit's MathVision ``is_equal`` may ``eval`` in this test: short, no names, no powers."""
    return len(s) < 40 and re.fullmatch(r"[0-9A-Za-z.+\-*/() \\{}^]*", s) is not None and "**" not in s \
        and not re.search(r"[A-Za-z_]{2,}\s*\(", s) and "__" not in s and "^" not in s


def vlmeval_correct(sample: Sample, response: str, whole: bool = False) -> bool | None:
    """VLMEvalKit's own rule, called directly, on ``prediction(response)`` (or the whole response).
    None: the rule is not run here (MathVision's ``eval`` on an unsafe string)."""
    m = vr.modules()
    pred = response.strip() if whole else prediction(response)
    fam = sample.meta.get("family") or REGISTRY[sample.meta["benchmark"]].family
    if fam == "vlm_choice":
        if sample.choices:
            got = m.utils.can_infer(pred, dict(sample.choices))
        else:
            got = m.utils.can_infer_option(pred, {k: k for k in sample.meta.get("letters") or "ABCDE"})
        return bool(got) and got == sample.answer
    if fam == "vlm_yorn":
        return m.yorn.YOrN_Extraction(pred).lower() == sample.answer
    if fam == "mathvista":
        return m.mathvista.post_check(mathvista_line(sample, pred), prefetch=False) is True
    if fam == "dynamath":
        line = {"prediction": pred, "answer": sample.answer, "answer_type": dynamath_type(sample)}
        try:
            return bool(m.dynamath.DynaMath_auxeval(_NoJudge(), line)["correct"])
        except AttributeError:      # VLMEvalKit's own crash on an unparsable free-form reply
            return False
    if fam == "mathvision":
        if sample.choices:
            got = m.utils.can_infer(pred, dict(sample.choices))
            return bool(got) and got == sample.answer
        if not (_safe_for_eval(pred) and _safe_for_eval(sample.answer)):
            return None
        return bool(m.mathv.is_equal(pred, sample.answer))
    if fam == "mathverse":      # VLMEvalKit's rule part: equal text (its judge decides the rest)
        return bool(m.mathverse.post_check_score({"extract": pred, "answer": sample.answer}))
    raise AssertionError(f"no VLMEvalKit rule for family {fam}")


def ours(sample: Sample, response: str) -> bool:
    return bool(REGISTRY[sample.meta["benchmark"]].score(sample, response)["correct"])


def _agree(sample: Sample, response: str) -> bool | None:
    theirs = vlmeval_correct(sample, response)
    if theirs is None:
        return None
    mine = ours(sample, response)
    if sample.meta.get("family", REGISTRY[sample.meta["benchmark"]].family) == "mathverse":
        return mine or not theirs       # ours adds math-verify where VLMEvalKit asks its judge
    return mine == theirs


# ------------------------------------------------------------------ the shim
def test_shim_keeps_global_state():
    """In a fresh interpreter: loading the rules leaves TLS verification and PIL's pixel limit as
    they were, and imports neither VLMEvalKit's package __init__ nor its API / model modules."""
    import subprocess
    import sys

    code = (
        "import ssl, sys; from PIL import Image\n"
        "ctx, px = ssl._create_default_https_context, Image.MAX_IMAGE_PIXELS\n"
        "from evals import vlmeval_rules as vr; vr.modules()\n"
        "assert ssl._create_default_https_context is ctx, 'ssl default context changed'\n"
        "assert ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED\n"
        "assert Image.MAX_IMAGE_PIXELS == px, 'PIL MAX_IMAGE_PIXELS changed'\n"
        "bad = [m for m in sys.modules if m.startswith(('vlmeval.api', 'vlmeval.vlm', 'vlmeval.tools'))]\n"
        "assert not bad, bad\n"
        "assert not hasattr(sys.modules['vlmeval'], 'load_env'), 'the package __init__ ran'\n"
        "assert vr._installed_version() == vr.VLMEVAL_VERSION\n"
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_vlmeval_is_one_clear_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vlmeval" else real(name, *a))
    vr._root.cache_clear()
    try:
        with pytest.raises(vr.VLMEvalMissing) as e:
            vr._root()
        assert "pip install --no-deps ms-vlmeval==0.0.20" in str(e.value) and "\n" not in str(e.value)
    finally:
        vr._root.cache_clear()


def test_mathv_is_equal_matches_vlmeval_without_eval():
    pairs = [("0.5", "1/2"), ("\\frac{1}{2}", "0.5"), ("2", "2.0000001"), ("3", "4"), ("A", "a"),
             ("\\sqrt{4}", "2"), ("12", "12"), ("(1+2)*3", "9"), ("1e3", "1000"), ("", "0")]
    for a, g in pairs:
        assert vr.mathv_is_equal(a, g) == bool(vr.modules().mathv.is_equal(a, g)), (a, g)
    assert vr.mathv_is_equal("__import__('os').getcwd()", "0") is False


# ------------------------------------------------------------------ this issue's kinds of output
MC = Sample(id="k", prompt="q", answer="B", choices={"A": "3", "B": "12", "C": "7", "D": "1/2"},
            answer_type="multiple_choice", meta={"benchmark": "mmstar"})
MC_KINDS = [
    ("B", True), ("(B)", True), ("\\boxed{B}", True), ("The answer is B.", True),
    ("B, because A and C are wrong", False),          # a one-line reply naming other letters
    ("The answer is B. It is not C.", True),          # the marker holds the answer
    ("B is correct; C is ruled out.", False),         # no marker: two letters stand alone
    ("I compared option A with option B and rejected option B. So C", None),
    ("12", True), ("\\boxed{12}", True), ("7", False), ("Sorry, I can't help with images of people yet.", False),
]
YN = Sample(id="k", prompt="q", answer="yes", meta={"benchmark": "hallusionbench"})
YN_KINDS = [("Yes", True), ("yes.", True), ("Yes, there is no doubt.", False), ("No", False),
            ("\\boxed{Yes}", True), ("The answer is yes. No other reading fits.", True), ("Maybe", False)]


def _mathvista(answer: str, atype: str) -> Sample:
    return Sample(id="k", prompt="q", answer=answer, meta={"benchmark": "mathvista", "family": "mathvista",
                                                           "answer_type": atype})


MV_KINDS = [(_mathvista("12", "integer"), "\\boxed{12}", True), (_mathvista("12", "integer"), "\\boxed{12.0}", False),
            (_mathvista("12", "integer"), "\\boxed{12.4}", False), (_mathvista("3.5", "float"), "\\boxed{3.50}", True),
            (_mathvista("3.5", "float"), "\\boxed{3.51}", False), (_mathvista("1.2", "float"), "1.2", True),
            (_mathvista("[1, 2]", "list"), "\\boxed{[1, 2]}", False)]


@pytest.mark.parametrize("response,expected", MC_KINDS)
def test_issue_kinds_multiple_choice(response, expected):
    theirs = vlmeval_correct(MC, response)
    assert ours(MC, response) == theirs
    if expected is not None:
        assert theirs == expected


@pytest.mark.parametrize("response,expected", YN_KINDS)
def test_issue_kinds_yes_no(response, expected):
    assert ours(YN, response) == vlmeval_correct(YN, response) == expected


@pytest.mark.parametrize("sample,response,expected", MV_KINDS)
def test_issue_kinds_mathvista(sample, response, expected):
    assert ours(sample, response) == vlmeval_correct(sample, response) == expected


def test_mathvista_multiple_choice_is_post_check():
    s = Sample(id="k", prompt="q", answer="B", choices={"A": "3/11", "B": "8/11", "C": "6/11"},
               meta={"benchmark": "mathvista", "family": "mathvista", "answer_type": "text"})
    for resp, exp in [("The correct answer is (B) 8/11.", True), ("\\boxed{8/11}", True), ("\\boxed{C}", False)]:
        assert ours(s, resp) == vlmeval_correct(s, resp) == exp


# ------------------------------------------------------------------ smoke generations
@lru_cache(maxsize=1)
def smoke_corpus() -> list[tuple[Sample, str]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    by_bench: dict[str, dict[str, Sample]] = {}
    for r in rows:
        if r["benchmark"] not in by_bench:
            by_bench[r["benchmark"]] = {s.id: s for s in REGISTRY[r["benchmark"]].load("smoke", smoke_n=r["smoke_n"])}
        out.append((by_bench[r["benchmark"]][r["id"]], r["response"]))
    return out


def test_smoke_generations_parity():
    corpus = smoke_corpus()
    assert len(corpus) >= 200
    assert {s.meta["benchmark"] for s, _ in corpus} >= set(PARITY_BENCHMARKS)
    bad = [(s.id, r[:80]) for s, r in corpus if _agree(s, r) is False]
    assert not bad, bad[:5]


# ------------------------------------------------------------------ the fuzz corpus (a slice)
def fuzz_slice(n: int = 400) -> list[str]:
    from test_extraction_fuzz import random_response

    rng = random.Random(16)
    return [random_response(rng)[:4000] for _ in range(n)]


FUZZ_SAMPLES = [MC, YN, _mathvista("12", "integer"), _mathvista("3.5", "float"),
                Sample(id="k", prompt="q", answer="C", choices={"A": "red", "B": "blue", "C": "green"},
                       meta={"benchmark": "dynamath", "family": "dynamath", "answer_type": "multiple choice"}),
                Sample(id="k", prompt="q", answer="0.5", meta={"benchmark": "dynamath", "family": "dynamath",
                                                               "answer_type": "float"}),
                Sample(id="k", prompt="q", answer="B", meta={"benchmark": "mmmu_pro", "family": "vlm_choice",
                                                             "letters": list("ABCD")})]


def test_fuzz_slice_parity():
    bad = []
    for r in fuzz_slice():
        for s in FUZZ_SAMPLES:
            if _agree(s, r) is False:
                bad.append((s.meta["benchmark"], r[:80]))
    assert not bad, bad[:5]


# ------------------------------------------------------------------ agreement figures
def corpora() -> dict[str, list[tuple[Sample, str]]]:
    return {"issue kinds": [(MC, r) for r, _ in MC_KINDS] + [(YN, r) for r, _ in YN_KINDS]
            + [(s, r) for s, r, _ in MV_KINDS],
            "smoke generations": smoke_corpus(),
            "fuzz slice": [(s, r) for r in fuzz_slice() for s in FUZZ_SAMPLES]}


def agreement(corpus: list[tuple[Sample, str]]) -> dict[str, dict[str, float]]:
    """Per benchmark: n, % parity (ours == VLMEvalKit's rule on our prediction) and % agreement with
    VLMEvalKit's rule on the whole response (what it does before asking its judge)."""
    stats: dict[str, list[int]] = {}
    for s, r in corpus:
        a = _agree(s, r)
        whole = vlmeval_correct(s, r, whole=True)
        st = stats.setdefault(s.meta["benchmark"], [0, 0, 0, 0])
        if a is not None:
            st[0] += 1
            st[1] += int(a)
        if whole is not None:
            st[2] += 1
            st[3] += int(ours(s, r) == whole)
    return {b: {"n": v[0], "parity_%": round(100.0 * v[1] / max(v[0], 1), 1), "n_whole": v[2],
                "whole_%": round(100.0 * v[3] / max(v[2], 1), 1)} for b, v in sorted(stats.items())}


if __name__ == "__main__":
    for name, corpus in corpora().items():
        print(name, json.dumps(agreement(corpus)))


# ------------------------------------------------------------------ metrics
def _records(bench: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for s in REGISTRY[bench].load("smoke", smoke_n=n, seed=seed % 3):
        ok = rng.random() < 0.6
        out.append({"id": s.id, "score": float(ok), "correct": [ok], "meta": dict(s.meta)})
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_wemath_metrics_match_vlmeval(seed):
    import pandas as pd

    wm = vr.modules().wemath
    records = _records("wemath", 40, seed)
    df = pd.DataFrame({"ID": [r["meta"]["problem"] for r in records], "key": [r["meta"]["key"] for r in records],
                       "joker": [r["correct"][0] for r in records], "knowledge concept": "c"})
    merged = {k: wm.evaluate_process_steps_data(df[df["key"].str.contains(f"{k}steps")].copy(), k) for k in (2, 3)}
    n = len(merged[2]) + len(merged[3])
    counts, _ = wm.evaluate_compute_final_scores(wm.evaluate_calculate_metrics(merged[2], merged[3]), total_count=n)
    strict = 100 * (n - 0.5 * counts["InadequateGeneralization"] - counts["RoteMemorization_strict"]
                    - counts["InsufficientKnowledge"]) / n
    loose = 100 * (n - 0.5 * counts["InadequateGeneralization"] - counts["RoteMemorization_loose"]
                   - counts["InsufficientKnowledge"]) / n
    ones = pd.concat([wm.evaluate_evaluate_steps(merged[k], k) for k in (2, 3)])["joker"]
    got = REGISTRY["wemath"].aggregate(records)
    assert got["score_strict"] == pytest.approx(strict)
    assert got["score_loose"] == pytest.approx(loose)
    assert got["IG"] == pytest.approx(100 * counts["InadequateGeneralization"] / n)
    assert got["IK"] == pytest.approx(100 * counts["InsufficientKnowledge"] / n)
    assert got["CM_strict"] == pytest.approx(100 * counts["CompleteMastery_strict"] / n)
    assert got["S1"] == pytest.approx(100 * ones.astype(float).mean())
    assert got["S2"] == pytest.approx(100 * merged[2]["joker_multi"].astype(float).mean())
    assert got["S3"] == pytest.approx(100 * merged[3]["joker_multi"].astype(float).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hallusionbench_metrics_match_vlmeval(seed, tmp_path):
    import pandas as pd

    records = _records("hallusionbench", 32, seed)
    rows = []
    for r in records:
        cat, sub, set_id, fig, q = r["id"].split("/", 1)[1].split("/")
        rows.append({"index": f"{cat}_{sub}_x_{set_id}_{fig}_{q}", "category": cat, "l2-category": sub,
                     "score": bool(r["correct"][0])})
    path = tmp_path / "hallusion.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    table = vr.modules().yorn.Hallusion_rating(str(path))
    overall = table[table["split"] == "Overall"].iloc[0]
    got = REGISTRY["hallusionbench"].aggregate(records)
    assert got["accuracy"] == pytest.approx(overall["aAcc"])
    assert got["figure_acc"] == pytest.approx(overall["fAcc"])
    assert got["question_acc"] == pytest.approx(overall["qAcc"])
