"""An embedder that asks an OpenAI-compatible ``/embeddings`` endpoint over HTTP.

OpenAI, Azure OpenAI, Ollama, vLLM and LM Studio all answer
``POST {base_url}/embeddings`` with ``{"model": ..., "input": [texts]}`` by
``{"data": [{"index": i, "embedding": [...]}, ...]}``.
"""

from __future__ import annotations

import email.utils
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import httpx

from anchorline.errors import ConfigurationError, IndexUnavailable

from ...retry import RetryPolicy
from .environment import DEFAULT_EMBEDDER_URL

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: The vector length of OpenAI's own models, so that opening a pipeline needs no call.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
#: Retries of one ``embed`` call; what still fails waits in the index outbox, with its backoff.
DEFAULT_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.5, max_backoff=8.0, deadline=30.0)
_RETRIED_STATUS = frozenset({408, 409, 429})
_HINTS = {
    401: "; check ${key}",
    403: "; check ${key}",
    404: "; check the base URL and the model name",
}


class HttpEmbedder:
    """Embeds texts with a model served behind an OpenAI-compatible HTTP API.

    ``base_url`` is the API root (``https://api.openai.com/v1``,
    ``http://localhost:11434/v1`` for Ollama); the key is read from the
    environment variable ``api_key_env`` (none is sent if it is unset).
    ``dimension`` is the vector length: given, known for OpenAI's models, or
    learned from one call the first time it is read. Texts go ``batch_size``
    per request; each request may take ``timeout`` seconds. A 429, a 5xx, a
    timeout or a connection error is retried under ``retry`` (a Retry-After
    header is honoured if it fits in the retry deadline), but not a refused connection
    or a host name that does not resolve, which fail at once; then
    :class:`~anchorline.errors.IndexUnavailable` names the URL and the
    status, and the indexer keeps the work in its outbox.

    ``name`` (``openai:<model>`` unless given) names the index collection.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_EMBEDDER_URL,
        api_key_env: str = DEFAULT_KEY_ENV,
        dimension: int | None = None,
        batch_size: int = 128,
        timeout: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        name: str | None = None,
    ) -> None:
        if not model:
            raise ConfigurationError("model: empty; name the embedding model to ask for")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url: {base_url!r} is not an http:// or https:// URL")
        if dimension is not None and dimension < 1:
            raise ConfigurationError(f"dimension: must be at least 1, got {dimension}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size: must be at least 1, got {batch_size}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout: must be positive, got {timeout}")
        self.model = model
        self.url = base_url.rstrip("/") + "/embeddings"
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.timeout = timeout
        self.retry = retry
        self.name = name or f"openai:{model}"
        self._dimension = dimension or KNOWN_DIMENSIONS.get(model)
        self._client = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"HttpEmbedder({self.model!r}, url={self.url!r})"

    @property
    def dimension(self) -> int:
        """The vector length; the first read asks the server if it was not given."""
        if self._dimension is None:
            self._dimension = len(self._request(["dimension"])[0])
        return self._dimension

    @dimension.setter  # the Embedder protocol declares a plain attribute
    def dimension(self, value: int) -> None:
        self._dimension = value

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors += self._request(list(texts[start : start + self.batch_size]))
        expected = self.dimension
        for vector in vectors:
            if len(vector) != expected:
                raise ConfigurationError(
                    f"embedder {self.name!r}: {self.url} returned vectors of {len(vector)}"
                    f" numbers, not the dimension {expected}; give dimension={len(vector)}"
                )
        return vectors

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _request(self, texts: list[str]) -> list[list[float]]:
        """One batch, retried; its vectors in the order of ``texts``."""
        body = {"model": self.model, "input": texts}
        give_up = time.monotonic() + self.retry.deadline
        attempt = 0
        while True:
            attempt += 1
            pause: float | None = None
            response_seen = False
            try:
                response = self._client.post(self.url, json=body, headers=self._headers())
            except httpx.TimeoutException:
                problem = f"gave no answer within {self.timeout}s"
            except httpx.TransportError as e:
                problem = f"could not be reached ({type(e).__name__}: {' '.join(str(e).split())})"
                hopeless = _cannot_connect(e)
                if hopeless is not None:  # waiting does not mend it: said at once
                    raise IndexUnavailable(
                        f"embedder: {self.url} {problem}: {hopeless} (not retried)"
                    ) from None
            else:
                response_seen = True
                if response.is_success:
                    return self._vectors(response, len(texts))
                problem = f"status {response.status_code}{_detail(response)}"
                if response.status_code not in _RETRIED_STATUS and response.status_code < 500:
                    hint = _HINTS.get(response.status_code, "").format(key=self.api_key_env)
                    raise IndexUnavailable(f"embedder: {self.url} answered {problem}{hint}")
                pause = _retry_after(response)
                if pause is not None:
                    problem += f", retry after {pause:g}s"
            if pause is None:
                pause = self.retry.backoff(attempt)
            if attempt >= self.retry.max_attempts or time.monotonic() + pause > give_up:
                said = f"answered {problem}" if response_seen else problem
                raise IndexUnavailable(
                    f"embedder: {self.url} {said} (gave up after {attempt} attempt(s))"
                ) from None
            time.sleep(pause)

    def _vectors(self, response: httpx.Response, count: int) -> list[list[float]]:
        try:
            data: Any = response.json()["data"]
            ordered = sorted(data, key=lambda d: d["index"])
            vectors = [[float(x) for x in d["embedding"]] for d in ordered]
        except (ValueError, KeyError, TypeError) as e:
            raise IndexUnavailable(
                f"embedder: {self.url} answered status {response.status_code} without the"
                f" embeddings format ({type(e).__name__}: {e})"
            ) from None
        if len(vectors) != count:
            raise IndexUnavailable(
                f"embedder: {self.url} returned {len(vectors)} embeddings for {count} texts"
            )
        return vectors


def _cannot_connect(error: BaseException) -> str | None:
    """What to check if ``error`` comes of a host name that does not resolve or a
    connection refused (retrying soon would fail the same); else ``None``."""
    seen: set[int] = set()
    causes: list[BaseException] = [error]
    while causes:
        cause = causes.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "check that the server runs there, and the URL's port"
        if isinstance(cause, socket.gaierror):
            return "check the URL's host name, and the network"
        linked = (cause.__cause__, cause.__context__, *cause.args)
        causes += [c for c in linked if isinstance(c, BaseException)]
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """The pause a Retry-After header asks for (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> str:
    """The server's own error message, on one short line, if it gave one."""
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        return ""
    if not isinstance(message, str) or not message:
        return ""
    text = " ".join(message.split())
    return f": {text[:200]}"
