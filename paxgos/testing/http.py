"""One HTTP request from a test, a benchmark or the nemesis, with the standard library only:
redirects are not followed and HTTP errors are answers, not exceptions, because the tests
assert what a user sees (the 307 and its ``Location``, the 503 and its one-line reason)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_openers: dict[tuple[str | None, str | None], urllib.request.OpenerDirector] = {}


def _opener() -> urllib.request.OpenerDirector:
    """The opener for the CAs trusted now.  From Python 3.12 on, an opener's HTTPS handler
    loads the trusted CAs when it is made (tens of milliseconds of CPU: an opener per request
    made the suite take twice as long on 3.12 and 3.13), and a test may trust another CA by
    setting ``SSL_CERT_FILE`` after import: so one opener per setting of the variables that
    name them."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    opener = _openers.get(key)
    if opener is None:
        opener = _openers[key] = urllib.request.build_opener(_NoRedirect)
    return opener


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
        with _opener().open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()
