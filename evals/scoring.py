"""Answer families shared by the benchmarks: how a final answer is extracted from a response and
checked against the gold answer.

- ``choice``: option letters (``\\boxed{B}``, ``(B)``, ``B. 12``, the option's text, "the answer is B");
  several gold letters (``"A, C"``) must all be given, and nothing else.
- ``numeric``: a number, with units / thousands separators / ``%`` / ``\\frac`` tolerated;
  compared at the benchmark's precision (decimal places) when it gives one, else with a small
  relative tolerance; non-numeric golds fall back to math-verify.
- ``math``: free-form math, equivalence by math-verify (``harness.rewards.verify``) with a timeout.
- ``yes_no``: yes / no.
- ``anls``: average normalised Levenshtein similarity over the gold answers (InfographicVQA).
- ``text``: normalised exact match (numbers compared as numbers).
- ``vlm_choice``, ``vlm_yorn``, ``mathvista``, ``mathvision``, ``dynamath``, ``mathverse``:
  VLMEvalKit's own rule functions (``evals.vlmeval_families``) for the benchmarks it scores by rule.

Extraction is rule-based (the offline default). The final answer is the *last* ``\\boxed{}`` (or
``Answer:`` line) as returned by ``harness.rewards.extract_answer``; for free-form math
(``numeric``, ``math``, ``mathverse``) a response without one falls back to math-verify's own
extraction (``mathverify_answer``), as the rewards do; no answer scores 0. Nothing
here evaluates model output as code.
"""
from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass
from typing import Callable

from harness.types import Sample

VERIFY_TIMEOUT_S = 5.0
_MAX_TEXT = 20_000          # extraction looks at the tail of very long responses only


def _tail(text: str) -> str:
    return text[-_MAX_TEXT:] if len(text) > _MAX_TEXT else text


def final_answer(response: str) -> str | None:
    """The response's final answer via ``harness.rewards.extract_answer`` (last ``\\boxed{}``...)."""
    from harness.rewards import extract_answer

    ans = extract_answer(_tail(response or ""))
    if ans is None:
        return None
    ans = ans.strip()
    return ans or None


def mathverify_answer(response: str, sample: Sample | None = None) -> str | None:
    """math-verify's own extraction of an unmarked final answer (display math, relations, matrices,
    a trailing number...), in its worker under the verification time limit; None when none."""
    from harness.rewards import mathverify_extract

    return mathverify_extract(_tail(response or ""), timeout_s=VERIFY_TIMEOUT_S)


# ------------------------------------------------------------------ text normalisation
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\s*+\{([^{}]*+)\}")


def strip_latex(s: str) -> str:
    """Remove ``$``, ``\\text{..}`` wrappers, ``\\left``/``\\right``, ``\\!`` spacing and degree marks."""
    s = s.strip().strip("$").strip()
    for _ in range(3):
        s = _LATEX_WRAPPERS.sub(r"\1", s)
    s = re.sub(r"\\(left|right|displaystyle|,|!|;|quad)", "", s)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("°", "").replace("\\%", "%")
    return s.strip()


_DROP_PUNCTUATION = str.maketrans("", "", "".join(ch for ch in string.punctuation if ch not in "-."))


def normalize_text(s: str) -> str:
    s = strip_latex(s).lower()
    s = s.translate(_DROP_PUNCTUATION)
    s = re.sub(r"\s+", " ", s).strip(" .")
    return s


# ------------------------------------------------------------------ numbers
_NUM = r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+−]?\.\d+"
_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\s*\{\s*(" + _NUM + r")\s*\}\s*\{\s*(" + _NUM + r")\s*\}$")
_SLASH = re.compile(r"^(" + _NUM + r")\s*/\s*(" + _NUM + r")$")
_LEAD = re.compile(r"^(?:[a-zA-Z]\w*\s*=\s*)?\$?\s*(" + _NUM + r")\s*(%?)")


def _to_float(tok: str) -> float:
    return float(tok.replace(",", "").replace("−", "-"))


def parse_number(text: str | None) -> float | None:
    """A number from a short final answer: ``"12 cm"``, ``"1,000"``, ``"50%"``, ``"\\frac{1}{2}"``,
    ``"x = 3.5"``, ``"$2.5$ units"``. Returns None when the answer does not start with a number or
    has more than one (``"3, 4"``)."""
    if text is None:
        return None
    s = strip_latex(text).replace(" ", " ")
    if len(s) > 200:
        return None
    m = _FRAC.match(s.replace(" ", ""))
    if m:
        den = _to_float(m.group(3))
        return None if den == 0 else (-1 if m.group(1) == "-" else 1) * _to_float(m.group(2)) / den
    m = _SLASH.match(s)
    if m:
        den = _to_float(m.group(2))
        return None if den == 0 else _to_float(m.group(1)) / den
    m = _LEAD.match(s)
    if not m:
        return None
    rest = s[m.end():].strip()
    if re.search(r"\d", rest):      # "3, 4", "2 and 5", "3x+4": not one number
        return None
    try:
        value = _to_float(m.group(1))
    except ValueError:
        return None
    return value


def numbers_equal(pred: float, gold: float, precision: int | None = None, rel_tol: float = 1e-4,
                  abs_tol: float = 1e-8) -> bool:
    """Equal at ``precision`` decimal places (MathVista's rule) or within a relative tolerance."""
    if precision is not None:
        return round(pred, precision) == round(gold, precision)
    return abs(pred - gold) <= max(abs_tol, rel_tol * abs(gold))


# ------------------------------------------------------------------ families
@dataclass(frozen=True)
class Family:
    name: str
    extract: Callable[[str, Sample], str | None]
    check: Callable[[str, Sample], float]
    pass_mark: float = 1.0
    prepare: Callable[[], object] | None = None   # one-time loading, run outside the extraction deadline
    fallback: Callable[[str, Sample], str | None] | None = None   # when ``extract`` finds no answer


def _letters(sample: Sample) -> list[str]:
    letters = sample.meta.get("letters")
    if letters:
        return list(letters)
    if sample.choices:
        return list(sample.choices)
    return list("ABCDE")


_LETTER_ANSWER = re.compile(r"^\(?\s*([A-Z])(?=$|[\s.:)\]])")
# One way to read each separator (possessive whitespace, the separator then its whitespace):
# no alternative parse to backtrack into, so the match is linear (the old ``\s*(sep)?\s*`` was
# exponential on "A A A ... !").
_LETTER_SET = re.compile(r"^\(?[A-Z]\)?(?:\s*+(?:(?:,|;|and|&|/)\s*+)?\(?[A-Z]\)?)*+$")


def letters_in_answer(ans: str, sample: Sample) -> str | None:
    """Option letter(s) named by a short final answer, as ``"B"`` or ``"A, C"``; else None.

    ``B``, ``(B)``, ``B.``, ``B. 12``, ``B: 12``, ``\\text{B}`` -> ``B``; ``A, C`` -> ``A, C``;
    an answer equal to exactly one option's text (or number) -> that option's letter.
    """
    letters = _letters(sample)
    s = strip_latex(ans)
    s = re.sub(r"^(?:option|choice|answer)\s*+[:：]?\s*+", "", s, flags=re.I).strip()
    if sample.meta.get("multi_answer") and _LETTER_SET.match(s):
        found = sorted(set(re.findall(r"[A-Z]", s)))
        if found and all(x in letters for x in found):
            return ", ".join(found)
    m = _LETTER_ANSWER.match(s)
    if m and m.group(1) in letters:
        rest = s[m.end(1):].strip().lstrip(").:]").strip()
        # "B", "(B)", "B.", "B: 12", "B. 12" name a letter; "A bit more" does not.
        if not rest or s.startswith("(") or re.match(r"^[A-Z]\s*[).:\]]", s):
            return m.group(1)
    if sample.choices:
        target = normalize_text(s)
        hits = [k for k, v in sample.choices.items() if normalize_text(str(v)) == target and target]
        if len(hits) == 1:
            return hits[0]
        num = parse_number(s)
        if num is not None:
            hits = [k for k, v in sample.choices.items()
                    if (pv := parse_number(str(v))) is not None and numbers_equal(num, pv)]
            if len(hits) == 1:
                return hits[0]
    return None


def extract_choice_answer(response: str, sample: Sample) -> str | None:
    ans = final_answer(response)
    if ans is not None:
        got = letters_in_answer(ans, sample)
        if got is not None:
            return got
    from harness.rewards import extract_choice, match_choice_text

    text = _tail(response or "")
    letter = extract_choice(text, "".join(_letters(sample)))
    if letter is None and sample.choices:
        letter = match_choice_text(text, sample.choices)   # VLMEvalKit's can_infer_text
    return letter


def check_choice(ans: str, sample: Sample) -> float:
    got = letters_in_answer(ans, sample) if ans is not None else None
    if got is None:
        return 0.0
    gold = sorted(set(re.findall(r"[A-Z]", sample.answer or "")))
    return float(sorted(set(re.findall(r"[A-Z]", got))) == gold)


def check_numeric(ans: str, sample: Sample) -> float:
    gold = parse_number(sample.answer)
    pred = parse_number(ans)
    if gold is not None and pred is not None:
        prec = sample.meta.get("precision")
        tol = sample.meta.get("abs_tol")
        if tol is not None:
            return float(abs(pred - gold) <= tol)
        return float(numbers_equal(pred, gold, int(prec) if prec is not None else None))
    return check_math(ans, sample)


def check_math(ans: str, sample: Sample) -> float:
    from harness.rewards import verify

    if normalize_text(ans) == normalize_text(sample.answer or "") and normalize_text(ans):
        return 1.0
    return float(verify("\\boxed{" + ans + "}", sample.answer or "", timeout_s=VERIFY_TIMEOUT_S))


def extract_yes_no(response: str, sample: Sample) -> str | None:
    ans = final_answer(response)
    text = ans if ans is not None else _tail(response or "")[-300:]
    words = re.findall(r"\b(yes|no)\b", text.lower())
    if not words:
        return None
    return words[0] if ans is not None else words[-1]


def check_yes_no(ans: str, sample: Sample) -> float:
    words = re.findall(r"\b(yes|no)\b", ans.lower())
    return float(bool(words) and words[0] == (sample.answer or "").strip().lower())


def extract_short(response: str, sample: Sample) -> str | None:
    ans = final_answer(response)
    if ans is not None:
        return ans
    lines = [ln.strip() for ln in _tail(response or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else None


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def anls(pred: str, golds: list[str], threshold: float = 0.5) -> float:
    """ANLS (Biten et al., 2019): max over golds of 1 - NL distance, zeroed below ``threshold``."""
    p = " ".join(strip_latex(pred).lower().split())[:500]
    best = 0.0
    for g in golds:
        g = " ".join(str(g).lower().split())
        if not g and not p:
            return 1.0
        d = levenshtein(p, g) / max(len(p), len(g), 1)
        best = max(best, 1.0 - d)
    return best if best >= threshold else 0.0


def check_anls(ans: str, sample: Sample) -> float:
    golds = sample.meta.get("answers") or [sample.answer or ""]
    return anls(ans, list(golds))


def check_pixel_reasoner(ans: str, sample: Sample) -> float:
    """Pixel-Reasoner's rule (VerlTool's ``pixel_reasoner`` reward, which its evaluation reports):
    the boxed final answer against each gold answer by math-verify, retried in lower case; correct
    if any gold matches. An exact normalised (case-insensitive) match counts too."""
    from harness.rewards import verify

    golds = [str(g) for g in (sample.meta.get("answers") or [sample.answer or ""])]
    for gold in golds:
        gold = final_answer(gold) or gold if "\\boxed" in gold else gold
        if normalize_text(ans) and normalize_text(ans).lower() == normalize_text(gold).lower():
            return 1.0
        for a, g in ((ans, gold), (ans.lower(), gold.lower())):
            if verify("\\boxed{" + a + "}", g, timeout_s=VERIFY_TIMEOUT_S):
                return 1.0
    return 0.0


def check_text(ans: str, sample: Sample) -> float:
    gold = sample.answer or ""
    pg, pa = parse_number(gold), parse_number(ans)
    if pg is not None and pa is not None:
        return float(numbers_equal(pa, pg))
    return float(normalize_text(ans) == normalize_text(gold) and bool(normalize_text(gold)))


def _vlmeval_families() -> dict[str, Family]:
    from evals import vlmeval_families as vf
    from evals.vlmeval_rules import modules

    fams = {
        "vlm_choice": Family("vlm_choice", vf.extract_vlm_choice, vf.check_vlm_choice),
        "vlm_yorn": Family("vlm_yorn", vf.extract_vlm_yorn, vf.check_vlm_yorn),
        "mathvista": Family("mathvista", vf.extract_prediction, vf.check_mathvista),
        "mathvision": Family("mathvision", vf.extract_prediction, vf.check_mathvision),
        "dynamath": Family("dynamath", vf.extract_prediction, vf.check_dynamath),
        "mathverse": Family("mathverse", lambda r, s: final_answer(r), vf.check_mathverse,
                            fallback=mathverify_answer),
    }
    return {k: dataclasses.replace(f, prepare=modules) for k, f in fams.items()}


FAMILIES: dict[str, Family] = {
    **_vlmeval_families(),
    "choice": Family("choice", extract_choice_answer, check_choice),
    "numeric": Family("numeric", lambda r, s: final_answer(r), check_numeric, fallback=mathverify_answer),
    "math": Family("math", lambda r, s: final_answer(r), check_math, fallback=mathverify_answer),
    "yes_no": Family("yes_no", extract_yes_no, check_yes_no),
    "anls": Family("anls", extract_short, check_anls, pass_mark=0.5),
    "text": Family("text", extract_short, check_text),
    "pixel_reasoner": Family("pixel_reasoner", lambda r, s: final_answer(r), check_pixel_reasoner,
                             fallback=mathverify_answer),
}
