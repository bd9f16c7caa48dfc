"""Final-answer extraction from model responses: pure string functions, linear time, no parsing.

Every pattern here is free of nested or adjacent unbounded quantifiers (whitespace runs are
matched possessively, ``\\s*+``), braces are paired in one pass, and a response longer than
``MAX_SCAN_CHARS`` is read from its tail only, so the time of any entry point is linear in
``min(len(text), MAX_SCAN_CHARS)`` (``tests/test_extraction_fuzz.py`` measures it).

Rules (see ``extract_answer``) follow the conventions of verl / open-r1 (last ``\\boxed{}``) and
VLMEvalKit (option letters, option text). ``harness.rewards`` builds verification on top.
"""
from __future__ import annotations

import re

__all__ = [
    "last_boxed",
    "extract_answer",
    "extract_choice",
    "match_choice_text",
    "normalize_answer",
    "OPTION_LETTERS",
    "MAX_SCAN_CHARS",
]

OPTION_LETTERS = "ABCDEFGHIJ"

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*+\{")
_ESCAPE_OR_BRACE_RE = re.compile(r"\\.|[{}]", re.S)
_ANSWER_RE = re.compile(r"(?i)\banswer\b\**+\s*+(?:is\b\s*+:?|:|=)\s*+\**+\s*+(.*)")
_TRAILING_LETTER_RE = re.compile(r"(?:^|[\s:*])\(([A-Z])\)[\s.!*]*\Z")
_OPTION_WORD_RE = re.compile(r"(?i)\b(?:option|choice)\s*+(?:is\s*+)?:?\s*+\(?([A-Z])\)?(?![\w])")
_OPTION_PREFIX_RE = re.compile(r"(?i)^(?:the\s++)?(?:correct\s++)?(?:option|choice)\s*+(?:is\s*+)?:?\s*+")
_SENTENCE_END_RE = re.compile(r"\.(?=\s|\Z)")
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*+\{([^{}]*+)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\q?quad\b|~")
_PAREN_LETTER_RE = re.compile(r"\(([A-Z])\)")

# A bare response (no marker at all) counts as its own answer when it is this short.
BARE_ANSWER_MAX_CHARS = 64
# Longer responses are read from their last this-many characters (where the final answer is).
MAX_SCAN_CHARS = 100_000


def _window(text: str) -> str:
    return text[-MAX_SCAN_CHARS:] if len(text) > MAX_SCAN_CHARS else text


def _brace_pairs(text: str) -> dict[int, int]:
    """``{index of "{": index of the "}" closing it}`` for every closed group, in one pass.

    Escaped characters (``\\{``, ``\\}``, ``\\\\``) do not count as braces. A group's close is the
    first ``}`` at which the braces opened after it are all closed again, as when scanning from it.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _ESCAPE_OR_BRACE_RE.finditer(text):
        ch = m.group()
        if ch == "{":
            stack.append(m.start())
        elif ch == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last top-level ``\\boxed{...}`` / ``\\fbox{...}``, braces matched.

    A box nested inside another counts as part of it; a box whose whole content is another box
    is unwrapped (``\\boxed{\\boxed{5}}`` -> ``5``). If the last box is never closed (a truncated
    response), there is no boxed answer (None), as in verl's ``last_boxed_only_string``.
    Linear time: braces are paired once; unwrapping only moves two indices inwards.
    """
    if not isinstance(text, str):
        return None
    text = _window(text)
    pairs: dict[int, int] | None = None
    pos, span = 0, None
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            break
        if pairs is None:
            pairs = _brace_pairs(text)
        close = pairs.get(m.end() - 1)
        if close is None:
            return None
        span, pos = (m.end(), close), close + 1
    if span is None or pairs is None:
        return None
    start, end = span
    while True:  # unwrap a box whose whole (stripped) content is another box
        i, j = start, end
        while i < j and text[i].isspace():
            i += 1
        while j > i and text[j - 1].isspace():
            j -= 1
        m = _BOX_RE.match(text, i, j)
        if m is None or pairs.get(m.end() - 1) != j - 1:
            break
        start, end = m.end(), j - 1
    return text[start:end]


def _clean(ans: str) -> str | None:
    """Strip math delimiters, markdown bold and trailing punctuation; ``(B)`` -> ``B``."""
    s = ans.strip()
    for _ in range(4):  # a few nested layers at most
        before = s
        s = s.strip().strip("*").strip()
        if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
            s = s[2:-2]
        s = s.strip("$").strip()
        s = s.rstrip(".,;:").strip()
        if s == before:
            break
    m = _PAREN_LETTER_RE.fullmatch(s)
    if m:
        s = m.group(1)
    return s or None


def _after_answer_marker(text: str) -> str | None:
    """What follows the last "answer is" / "Answer:" / "final answer:" marker, up to sentence end."""
    last = None
    for last in _ANSWER_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = last.group(1).strip()
    if not rest.strip("*").strip():  # "Final answer:\n 5": the answer is on the next line
        tail = text[last.end():].lstrip("\n")
        rest = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "")
    if rest.startswith("$"):
        m = re.match(r"\$+([^$]+)\$+", rest)
        if m:
            return m.group(1)
    if rest.startswith("\\(") and "\\)" in rest:
        return rest[2:rest.index("\\)")]
    if rest.startswith("\\[") and "\\]" in rest:
        return rest[2:rest.index("\\]")]
    end = _SENTENCE_END_RE.search(rest)
    return rest[: end.start()] if end else rest


def extract_answer(text: str) -> str | None:
    """The final answer in a model response, or None when there is none.

    Tried in order, the first rule that yields a non-empty answer wins:

    1. the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces matched;
    2. the content of the last ``<answer>...</answer>``;
    3. the text after the last "the answer is", "Answer:", "final answer:" (also ``**Answer:**``,
       "answer ="), up to the end of its sentence/line; a ``$...$`` right after the marker;
    4. an option letter in parentheses ending the response: "... so we pick (B)." -> ``B``;
    5. the whole response, when it is a single line of at most ``BARE_ANSWER_MAX_CHARS`` chars
       without a (malformed) box: a bare answer such as ``12`` or ``B``.

    The result has surrounding ``$``, ``\\(..\\)``, ``**`` and trailing ``.,;:`` removed (not
    ``!``: a factorial) and a parenthesised capital letter unwrapped (``(B)`` -> ``B``).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = _window(text)
    boxed = last_boxed(text)
    if boxed is not None and (ans := _clean(boxed)):
        return ans
    close = text.rfind("</answer>")
    if close >= 0:
        open_ = text.rfind("<answer>", 0, close)
        if open_ >= 0 and (ans := _clean(text[open_ + len("<answer>"):close])):
            return ans
    marked = _after_answer_marker(text)
    if marked is not None and (ans := _clean(marked)):
        return ans
    m = _TRAILING_LETTER_RE.search(text[-64:])
    if m:
        return m.group(1)
    bare = text.strip()
    if "\n" not in bare and len(bare) <= BARE_ANSWER_MAX_CHARS and not _BOX_RE.search(bare):
        return _clean(bare)
    return None


def _unwrap_text(s: str) -> str:
    for _ in range(3):
        s = _TEXT_WRAPPER_RE.sub(r"\1", s)
    return s


def _letter_tokens(s: str, letters: str) -> str | None:
    """VLMEvalKit ``can_infer_option``: the single option letter standing alone as a token.

    Punctuation ``.()[],:;!*#{}`` splits tokens; with more than one distinct letter, or an "A"
    in a text of more than 3 tokens (likely the article), there is no answer.
    """
    mod = s
    for ch in ".()[],:;!*#{}$\\":
        mod = mod.replace(ch, " ")
    splits = mod.split()
    hits = {c for c in splits if len(c) == 1 and c in letters}
    if len(hits) != 1:
        return None
    if "A" in splits and len(splits) > 3:
        return None
    return hits.pop()


def extract_choice(text: str, letters: str = OPTION_LETTERS) -> str | None:
    """The chosen option letter of a multiple-choice response (VLMEvalKit-like), or None.

    From the extracted final answer (``extract_answer``): a leading letter in any of the forms
    ``B``, ``(B)``, ``B.``, ``B)``, ``B:``, ``B. 12``, ``\\text{B}``, ``Option B``; else the one
    letter standing alone among its tokens. If there is no final answer at all: the letter of the
    "option/choice (is) B" phrases when they all name the same one (a text that mentions several
    options, e.g. rejects option C after choosing B, settles nothing), else VLMEvalKit's token rule
    on the whole text.
    An extracted answer without a letter (e.g. ``12``) gives None: callers that know the
    option texts use ``match_choice_text``.
    """
    if not isinstance(text, str):
        return None
    text = _window(text)
    letters = letters.upper()
    ans = extract_answer(text)
    if ans is not None:
        s = _unwrap_text(ans).strip().strip("*$ ")
        s = _OPTION_PREFIX_RE.sub("", s)
        # no "," after the letter: "A, B" lists two options (VLMEvalKit: no answer)
        # "B; C is ruled out": the named letter, then a clause about another one
        m = re.match(r"\(([A-Z])\)(?![\w])|([A-Z])(?=\Z|[.:;)\]}])", s)
        letter = m and (m.group(1) or m.group(2))
        if letter and letter in letters:
            return letter
        return _letter_tokens(s, letters)
    named = {m.group(1) for m in _OPTION_WORD_RE.finditer(text)}
    if named:
        only = named.pop() if len(named) == 1 else None
        return only if only in letters else None
    return _letter_tokens(text, letters)


def _norm_text(s: str) -> str:
    s = _unwrap_text(s).lower()
    s = re.sub(r"\s+", " ", s).strip().strip("$*").strip()
    return s.rstrip(".,;:!").strip()


def match_choice_text(text: str, choices: dict[str, str]) -> str | None:
    """The option letter whose text the response gives as its answer (VLMEvalKit ``can_infer_text``).

    Compared case-insensitively on the extracted final answer (or the whole text when there is
    none): an exact match with one option's text wins; else the single option whose text occurs
    in it as a whole word/number (``1`` does not occur in ``12``). Ambiguity gives None.
    """
    if not isinstance(text, str) or not choices:
        return None
    text = _window(text)
    opts = {k: _norm_text(str(v)) for k, v in choices.items()}
    opts = {k: v for k, v in opts.items() if v}
    ans = extract_answer(text)
    targets = [_norm_text(ans)] if ans is not None else []
    targets.append(_norm_text(text))
    for target in targets:
        exact = [k for k, v in opts.items() if v == target]
        if len(exact) == 1:
            return exact[0]
        found = [
            k for k, v in opts.items()
            if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w]|\.\d)", target)
        ]
        if len(found) == 1:
            return found[0]
        if found:  # ambiguous in the answer: the whole text will not settle it either
            return None
    return None


def normalize_answer(s: str) -> str:
    """Whitespace/LaTeX normalisation used by exact match.

    Removes ``$``, whitespace, LaTeX spacing (``\\,`` ``\\;`` ``\\!`` ``~`` ``\\quad``),
    ``\\left`` / ``\\right``, text wrappers (``\\text{..}``, ``\\mathrm{..}`` -> content) and
    a trailing period; ``\\dfrac`` / ``\\tfrac`` -> ``\\frac``. Case and everything else kept.
    """
    s = _unwrap_text(s)
    s = _SPACING_RE.sub("", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\s+", "", s).replace("$", "")
    return s.rstrip(".")
