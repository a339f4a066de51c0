"""A headless Firefox driven over WebDriver BiDi, the W3C protocol Firefox serves itself.

Playwright drives Chromium here; its Firefox support needs either its own patched build (which
cannot be downloaded on this machine) or commands newer than Debian's Firefox ESR knows, and
geckodriver is not packaged.  Firefox speaks WebDriver BiDi over a WebSocket with no driver in
between, so this module starts ``firefox-esr --remote-debugging-port 0`` with a fresh profile and
talks to it with Tornado's WebSocket client: navigate, evaluate JavaScript (a test clicks and
reads the page that way), wait for a condition, take a screenshot, collect the page's errors.

    with Firefox(binary, tmp_path) as firefox:
        firefox.navigate(url)
        firefox.wait_for("!!document.querySelector('#ready')")
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


class BidiError(Exception):
    """Firefox answered a command with an error, or did not start."""


class Firefox:
    """One headless Firefox process and its BiDi session (a context manager)."""

    def __init__(self, binary: str, workdir: Path, start_timeout: float = 30.0):
        self.binary = binary
        self.profile = workdir / "firefox-profile"
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.loop = asyncio.new_event_loop()
        self.ws: WebSocketClientConnection | None = None
        self.ids = itertools.count(1)
        self.context = ""
        #: JavaScript errors the page raised (``log.entryAdded`` of type javascript).
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Firefox:
        self.profile.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--no-remote", "--profile", str(self.profile),
             "--remote-debugging-port", "0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            url = self._listening_url()
            self.ws = self.loop.run_until_complete(self._connect(url + "/session"))
            self.command("session.new", {"capabilities": {}})
            self.command("session.subscribe", {"events": ["log.entryAdded"]})
            tree = self.command("browsingContext.getTree", {})
            self.context = tree["contexts"][0]["context"]
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _listening_url(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise BidiError(f"firefox exited with {self.proc.returncode} before listening")
            found = LISTENING.search(line)
            if found:
                return found.group(1)
        raise BidiError(f"firefox did not listen within {self.start_timeout}s")

    async def _connect(self, url: str) -> WebSocketClientConnection:
        return await websocket_connect(url)  # on this object's loop, which runs it

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.command("session.end", {}, timeout=5.0)
            except Exception:
                pass  # it is stopped below either way
            self.ws.close()
            self.ws = None
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        self.loop.close()

    # --- the protocol ---------------------------------------------------------------------------

    def command(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> Any:
        """Send one command; its result (events that arrive meanwhile are kept)."""
        return self.loop.run_until_complete(
            asyncio.wait_for(self._command(method, params), timeout)
        )

    async def _command(self, method: str, params: dict[str, Any]) -> Any:
        assert self.ws is not None
        ident = next(self.ids)
        await self.ws.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            raw = await self.ws.read_message()
            if raw is None:
                raise BidiError(f"{method}: the connection closed")
            message = json.loads(raw)
            if message.get("type") == "event":
                self._event(message)
            elif message.get("id") == ident:
                if message.get("type") == "error":
                    raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def _event(self, message: dict[str, Any]) -> None:
        self.events.append(message)
        entry = message.get("params", {})
        if message.get("method") == "log.entryAdded" and entry.get("type") == "javascript":
            if entry.get("level") == "error":
                self.errors.append(str(entry.get("text")))

    # --- what a test does -----------------------------------------------------------------------

    def navigate(self, url: str) -> None:
        self.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (primitives only)."""
        result = self.command(
            "script.evaluate",
            {
                "expression": expression,
                "target": {"context": self.context},
                "awaitPromise": True,
            },
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BidiError(f"{expression!r} threw: {details.get('text')}")
        value = result["result"]
        return value.get("value")

    def wait_for(self, condition: str, timeout: float = 15.0) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout}s: {condition}")
            time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.command("browsingContext.captureScreenshot", {"context": self.context})
        path.write_bytes(base64.b64decode(data["data"]))
