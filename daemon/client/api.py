"""One agent's connection to postroom's HTTP API: authenticated calls, the API's error body
turned into `PostroomError`, and downloads from presigned URLs.

Synchronous (httpx), one connection pool per client. Presigned URLs are fetched without the
API key: the URL is the credential, and it may point at another host (S3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from daemon.client.errors import PostroomError

_CHUNK = 1 << 16


def segment(value: str) -> str:
    """`value` as one path segment (an id or an address the caller gave)."""
    return quote(value, safe="@+")


class Api:
    """Calls of the API as one agent."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeout = timeout
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}"},
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def _answer(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer of a call that succeeded; PostroomError for any refusal."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise PostroomError(0, "unreachable", str(e)) from e
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:200]
            raise PostroomError(response.status_code, code, message)
        return response

    def text(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call whose answer is text (its headers too, as `httpx.Response`)."""
        return self._answer(method, path, **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (None when empty); PostroomError for any refusal."""
        response = self._answer(method, path, **kwargs)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise PostroomError(response.status_code, "invalid_response",
                                "the API's answer is not JSON") from None

    def object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call whose answer is a JSON object."""
        answer = self.call(method, path, **kwargs)
        if not isinstance(answer, dict):
            raise PostroomError(0, "invalid_response", f"{method} {path}: not a JSON object")
        return answer

    def upload(self, path: Path, file_name: str, content_type: str) -> dict[str, Any]:
        """`POST /v1/uploads` of the file at `path` as `file_name`: the upload object (201)."""
        try:
            with path.open("rb") as f:
                return self.object("POST", "/v1/uploads",
                                   files={"file": (file_name, f, content_type)})
        except OSError as e:
            raise PostroomError(0, "unreadable_file",
                                f"cannot read {path}: {e.strerror or e}") from e

    def download(self, url: str) -> bytes:
        """The bytes behind a presigned URL."""
        try:
            response = httpx.get(url, timeout=self.timeout)
        except httpx.HTTPError as e:
            raise PostroomError(0, "unreachable", str(e)) from e
        if response.status_code != 200:
            raise PostroomError(response.status_code, "download_failed", response.text[:200])
        return response.content

    def download_to(self, url: str, dest: Path) -> None:
        """The bytes behind a presigned URL, streamed into the file `dest`."""
        try:
            with httpx.stream("GET", url, timeout=self.timeout) as response:
                if response.status_code != 200:
                    raise PostroomError(response.status_code, "download_failed",
                                        response.read()[:200].decode("utf-8", "replace"))
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.HTTPError as e:
            raise PostroomError(0, "unreachable", str(e)) from e
