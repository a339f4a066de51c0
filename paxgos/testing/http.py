"""One HTTP request from a test, a benchmark or the nemesis, with the standard library only:
redirects are not followed and HTTP errors are answers, not exceptions, because the tests
assert what a user sees (the 307 and its ``Location``, the 503 and its one-line reason)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_get(
    url: str,
    timeout: float = 10.0,
    json_body: bool = False,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], str]:
    """One HTTP request: status, headers, body; HTTP errors are answers, not exceptions."""
    headers = {**(headers or {}), **({"Accept": "application/json"} if json_body else {})}
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        # An opener per request: from Python 3.12 on, its HTTPS handler fixes the trusted CAs
        # when it is made, and a test may trust another CA (SSL_CERT_FILE) after import.
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()
