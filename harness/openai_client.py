"""One retrying client for OpenAI-compatible chat endpoints (vLLM's ``vllm serve`` OpenAI server,
hosted APIs with an OpenAI-compatible route), for offline generation jobs (PTD-PO's hints) and
the evaluation judge.

``chat(messages) -> str`` posts to ``{base_url}/chat/completions`` and returns the first choice's
message content. Transient failures are retried with exponential backoff and jitter: HTTP 429
and 5xx (a ``Retry-After`` header is honoured), timeouts and connection errors; any other HTTP
error (a bad request, a wrong key) is raised at once as :class:`EndpointError`. After
``max_retries`` retries the last error is raised. The standard library only (urllib): nothing
to install, and a response is parsed as JSON, never evaluated.
"""
from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from harness.errors import ConfigError, RunError

__all__ = ["ChatClient", "EndpointError", "image_part"]

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EndpointError(RunError):
    """The endpoint refused the request (``status``: the HTTP status, None for a network error).
    A ``RunError``: a command line reports it as one line."""

    def __init__(self, message: str, status: Optional[int] = None, retryable: bool = False):
        super().__init__(message)
        self.status, self.retryable = status, retryable


def image_part(image: Any, fmt: str = "PNG") -> dict[str, Any]:
    """An OpenAI ``image_url`` content part holding ``image`` (a PIL image) as a data URL."""
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/{fmt.lower()};base64,{data}"}}


@dataclass
class ChatClient:
    base_url: str
    """e.g. ``http://localhost:8000/v1`` (vLLM's OpenAI-compatible server)."""
    model: str
    api_key_env: Optional[str] = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key (sent as a Bearer token when set)."""
    timeout_s: float = 600.0
    """Per request; long thinking generations take minutes."""
    max_retries: int = 8
    backoff_s: float = 1.0
    """First wait; doubled after each retry, with full jitter, capped at ``backoff_max_s``."""
    backoff_max_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    seed: Optional[int] = None
    """Seeds the jitter (tests)."""
    api_key: Optional[str] = field(default=None, repr=False)
    """The key itself (takes precedence over ``api_key_env``); never printed."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.max_retries < 0 or self.timeout_s <= 0:
            raise ConfigError("max_retries must be >= 0 and timeout_s > 0")
        self._rng = random.Random(self.seed)
        self.stats = {"requests": 0, "retries": 0}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + "/chat/completions"
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=self._headers(), method="POST")
        self.stats["requests"] += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            retry_after = e.headers.get("Retry-After") if e.headers else None
            err = EndpointError(f"{url}: HTTP {e.code} {e.reason}", e.code, e.code in RETRY_STATUS or e.code >= 500)
            err.retry_after = retry_after  # type: ignore[attr-defined]
            raise err from None
        except (socket.timeout, TimeoutError) as e:
            raise EndpointError(f"{url}: timed out after {self.timeout_s:g} s", None, True) from e
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            raise EndpointError(f"{url}: {getattr(e, 'reason', e)}", None, True) from e
        try:
            return json.loads(body)
        except ValueError as e:
            raise EndpointError(f"{url}: the response is not JSON", None, True) from e

    def _wait(self, attempt: int, err: EndpointError) -> float:
        retry_after = getattr(err, "retry_after", None)
        if retry_after is not None:
            try:
                return min(float(retry_after), self.backoff_max_s)
            except ValueError:
                pass
        return self._rng.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** attempt))

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """The endpoint's JSON response to ``messages`` (``params``: max_tokens, temperature, ...)."""
        payload = {"model": self.model, "messages": messages, **params}
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(payload)
            except EndpointError as err:
                if not err.retryable or attempt == self.max_retries:
                    raise
                self.stats["retries"] += 1
                self.sleep(self._wait(attempt, err))
        raise AssertionError("unreachable")

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> tuple[str, str]:
        """``(content, finish_reason)`` of the first choice. A response without one is an
        :class:`EndpointError` (retried like a 5xx: servers under load return such bodies)."""
        for attempt in range(self.max_retries + 1):
            data = self.complete(messages, **params)
            try:
                choice = data["choices"][0]
                content = choice["message"]["content"]
                if not isinstance(content, str):
                    raise TypeError
                return content, str(choice.get("finish_reason") or "")
            except (KeyError, IndexError, TypeError):
                if attempt == self.max_retries:
                    raise EndpointError(f"{self.base_url}: no message content in the response", None, True)
                self.stats["retries"] += 1
                self.sleep(self._wait(attempt, EndpointError("empty", None, True)))
        raise AssertionError("unreachable")
