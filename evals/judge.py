"""The LLM judge: VLMEvalKit's extraction / matching protocol per benchmark, over any
OpenAI-compatible chat endpoint (a local vLLM server serving an open model, or GPT-4o-mini with a
key) through ``harness.openai_client.ChatClient`` (429 / 5xx / timeouts retried with backoff).

``Judge.generate(prompt, temperature)`` is the ``model.generate`` VLMEvalKit's protocol functions
call; every call is logged (model, prompt sha256, temperature, raw output, or the error) and the
runner stores the log with the sample's record. A call that still fails after the client's
retries returns VLMEvalKit's own failure text (``FAIL_MSG``), which its protocols treat as a
failed try, so a record is never lost: it is written with the rule score and the judge's errors.
The per-benchmark protocols are in ``evals.judge_protocols``.
"""
from __future__ import annotations

import hashlib
import re
import time
from typing import Any, Callable

from harness.openai_client import ChatClient, EndpointError

FAIL_MSG = "Failed to obtain answer via API."       # VLMEvalKit's failure text (its protocols test for it)

# The generic extraction prompt, for benchmarks VLMEvalKit has no judge protocol for.
PROMPT = """You extract the final answer from a model's response to a question. Do not solve the question yourself.
Reply with the final answer only, exactly as the response gives it, on one line, after "Extracted answer:".
For a multiple-choice question reply with the option letter(s) only. If the response gives no final answer, reply "Extracted answer: NONE".

Question:
{question}

Model response:
{response}

Extracted answer:"""

_MAX_RESPONSE_CHARS = 12_000


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def base_url(url: str) -> str:
    """``http://host:8000``, ``.../v1`` or ``.../v1/chat/completions`` -> the ``.../v1`` base."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


class Judge:
    """``Judge(url, model)``; ``generate(prompt, temperature=0)`` -> the reply text (or ``FAIL_MSG``)."""

    def __init__(self, url: str, model: str = "gpt-4o-mini", api_key: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", timeout_s: float = 60.0, max_retries: int = 6,
                 max_tokens: int = 512, backoff_s: float = 1.0, sleep: Callable[[float], None] = time.sleep):
        self.client = ChatClient(base_url(url), model, api_key_env=api_key_env, api_key=api_key,
                                 timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s, sleep=sleep)
        self.model, self.max_tokens = model, max_tokens
        self.name = f"llm:{model}"
        self.failures = 0
        self.log: list[dict[str, Any]] = []

    def generate(self, prompt: str, temperature: float = 0.0, **kw: Any) -> str:
        entry: dict[str, Any] = {"model": self.model, "prompt_sha": prompt_sha(prompt), "temperature": temperature}
        try:
            raw, _ = self.client.chat([{"role": "user", "content": prompt}], temperature=temperature,
                                      max_tokens=self.max_tokens)
            entry["raw"] = raw
        except EndpointError as e:
            self.failures += 1
            entry["error"], raw = str(e), FAIL_MSG
        self.log.append(entry)
        return raw

    def take_log(self) -> list[dict[str, Any]]:
        """The calls since the last ``take_log`` (one sample's)."""
        out, self.log = self.log, []
        return out

    def extract(self, question: str, response: str) -> str | None:
        """The generic protocol: the answer the judge reads out of ``response`` (None: none / failed)."""
        reply = self.generate(PROMPT.format(question=question, response=(response or "")[-_MAX_RESPONSE_CHARS:]))
        return None if reply == FAIL_MSG else parse_reply(reply)


def parse_reply(text: str) -> str | None:
    """The answer in a judge reply (``"Extracted answer: B"`` or just ``"B"``); NONE -> None."""
    m = re.search(r"extracted answer\s*+[:：]\s*+(.*)", text, flags=re.I | re.S)
    ans = (m.group(1) if m else text).strip().splitlines()
    ans = ans[0].strip() if ans else ""
    if not ans or ans.upper() in ("NONE", "N/A", "NULL"):
        return None
    return ans[:500]
