"""Optional LLM answer extraction over any OpenAI-compatible chat endpoint (a local vLLM server,
say), as VLMEvalKit does with GPT-4o-mini: the judge only *extracts* the final answer from the
response; the benchmark's own rule then checks it. Rule-based extraction stays the default, and a
judge that fails (network, bad reply) falls back to it for that response; each record names the
extractor that was used.
"""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

from harness.types import Sample

PROMPT = """You extract the final answer from a model's response to a question. Do not solve the question yourself.
Reply with the final answer only, exactly as the response gives it, on one line, after "Extracted answer:".
For a multiple-choice question reply with the option letter(s) only. If the response gives no final answer, reply "Extracted answer: NONE".

Question:
{question}

Model response:
{response}

Extracted answer:"""

_MAX_RESPONSE_CHARS = 12_000


class Judge:
    """``Judge(url).extract(sample, response) -> (answer | None, extractor name)``."""

    def __init__(self, url: str, model: str = "gpt-4o-mini", api_key: str | None = None,
                 timeout_s: float = 30.0, retries: int = 2, max_tokens: int = 64):
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions" if self.url.endswith("/v1") else "/v1/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout_s, self.retries, self.max_tokens = timeout_s, retries, max_tokens
        self.name = f"llm:{model}"
        self.failures = 0

    def request(self, prompt: str) -> str:
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
        return str(payload["choices"][0]["message"]["content"] or "")

    def extract(self, sample: Sample, response: str) -> tuple[str | None, str]:
        """The judge's extracted answer, or (None, "rule") when the judge could not be used."""
        prompt = PROMPT.format(question=sample.prompt, response=(response or "")[-_MAX_RESPONSE_CHARS:])
        for attempt in range(self.retries + 1):
            try:
                text = self.request(prompt)
                return parse_reply(text), self.name
            except (urllib.error.URLError, TimeoutError, OSError, KeyError, IndexError, TypeError,
                    ValueError):
                if attempt < self.retries:
                    time.sleep(0.2 * (attempt + 1))
        self.failures += 1
        return None, "rule"


def parse_reply(text: str) -> str | None:
    """The answer in a judge reply (``"Extracted answer: B"`` or just ``"B"``); NONE -> None."""
    m = re.search(r"extracted answer\s*[:：]\s*(.*)", text, flags=re.I | re.S)
    ans = (m.group(1) if m else text).strip().splitlines()
    ans = ans[0].strip() if ans else ""
    if not ans or ans.upper() in ("NONE", "N/A", "NULL"):
        return None
    return ans[:500]
