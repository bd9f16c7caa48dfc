"""Child process of ``harness.rewards``: math-verify equivalence, one JSON request per line.

Run as a plain script (no ``harness`` import) by ``harness.rewards._Worker``. Protocol on
stdin/stdout: the worker prints ``{"ready": true}`` once its imports are done, then answers each
request line ``{"gold": str, "pred": str}`` with ``{"equal": bool}`` and each ``{"extract": str}``
(a whole response) with ``{"answer": str | null}``: the text math-verify's own extraction (its
LaTeX and expression configs, as a plain ``parse(response)`` call) finds as the final answer. The parent enforces the
time limit by killing this process; math-verify's own signal-based timeouts are switched off
(``parsing_timeout=None``, ``timeout_seconds=None``).

Safety: math-verify parses LaTeX with latex2sympy2_extended (an ANTLR grammar, no eval). Its
plain-expression path calls ``sympy.parse_expr`` (which evaluates Python code) on matches of a
regex made of digits and operators only; here that call is additionally replaced by one that
rejects any input with other characters, so no name can ever reach ``eval``. The address space
is capped (``RLIMIT_AS``) so a huge expression fails with MemoryError instead of swapping.
"""
import json
import logging
import os
import re
import signal
import sys

_SAFE_EXPR = re.compile(r"[0-9.\s+\-*/()]*")
# one comma between digit runs, not a thousands separator (which has exactly three digits after it)
_COMMA_DECIMAL = re.compile(r"[-+]?\d{1,40},(?:\d{1,2}|\d{4,40})")


def _install_guards(memory_mb: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns this process's lifetime
    if memory_mb > 0:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)  # math-verify logs a warning per disabled timeout


def _guard_parse_expr() -> None:
    import math_verify.parser as mv_parser

    original = mv_parser.parse_expr_cached

    def parse_expr_digits_only(expr: str):
        if not _SAFE_EXPR.fullmatch(expr):
            raise ValueError("refusing to parse a non-arithmetic expression")
        return original(expr)

    mv_parser.parse_expr_cached = parse_expr_digits_only


def main() -> None:
    memory_mb = int(os.environ.get("VLMREPRO_VERIFY_MEMORY_MB", "2048"))
    # Replies go to a private copy of stdout; fd 1 goes to stderr so that a stray print in a
    # library cannot corrupt the protocol.
    reply = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    _install_guards(memory_mb)

    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    _guard_parse_expr()
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]

    def parsed(answer: str):
        # Each side is a bare answer: read it as one math environment first, raw text second.
        body = answer.strip().strip("$")
        return parse(f"${body}$", configs, parsing_timeout=None) or parse(
            answer, configs, parsing_timeout=None
        )

    def equal(gold: str, pred: str) -> bool:
        g, p = parsed(gold), parsed(pred)
        if g and p and verify(g, p, timeout_seconds=None):
            return True
        body = pred.strip().strip("$").strip()
        if _COMMA_DECIMAL.fullmatch(body):  # "3,5": math-verify's plain-text reading is 3.5
            p = parse(body, configs, parsing_timeout=None)
            return bool(g and p and verify(g, p, timeout_seconds=None))
        return False

    def extract(response: str):
        found = parse(response, configs, parsing_timeout=None)
        return str(found[1]) if len(found) >= 2 else None

    reply.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = None
        try:
            req = json.loads(line)
            if "extract" in req:
                out = {"answer": extract(str(req["extract"]))}
            else:
                out = {"equal": equal(str(req["gold"]), str(req["pred"]))}
        except BaseException:  # noqa: BLE001 - any failure means "not verified" / no answer
            out = {"answer": None} if isinstance(req, dict) and "extract" in req else {"equal": False}
        reply.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
