"""The dashboard on a real supervisor cluster: its page and stream over HTTP, its actions, its
refusals; and the page itself in headless Chromium (Debian's ``chromium``, driven by Playwright
pointed at it) and headless Firefox (Debian's ``firefox-esr``, over WebDriver BiDi), which stall,
propose and kill from the page and check what it shows.

The browser tests skip, saying why, where a browser or Playwright is missing (``.ci/run``
installs them where it can).  They take 10-40 s each and run with the default suite; they are
marked ``browser`` (``pytest -m browser`` runs them alone, ``-m "not browser"`` leaves them out).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from supervised import Supervisor

from paxgos.testing.http import http_get

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def board(tmp_path: Path) -> Iterator[Callable[..., tuple[Supervisor, str]]]:
    """Start a supervisor of ``nodes`` (5) with its dashboard on a free port; its URL."""
    started: list[Supervisor] = []

    def start(nodes: int = 5) -> tuple[Supervisor, str]:
        sup = Supervisor(tmp_path, "--dashboard-port", "0", nodes=nodes)
        started.append(sup)
        sup.up()
        url = sup.wait_for(r"paxgos: dashboard: (http://127\.0\.0\.1:\d+/dashboard)").group(1)
        return sup, url

    try:
        yield start
    finally:
        for sup in started:
            sup.close()


def snapshots(url: str, count: int, timeout: float = 10.0) -> Iterator[dict[str, Any]]:
    """The first ``count`` snapshots of the page's stream (Server-Sent Events)."""
    with urllib.request.urlopen(url + "/stream", timeout=timeout) as stream:
        seen = 0
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith('data: {"n"'):
                yield json.loads(line[len("data: ") :])
                seen += 1
                if seen == count:
                    return


def until(url: str, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict:
    """The first snapshot that passes ``check``, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    for last in snapshots(url, 10_000, timeout):
        if check(last):
            return last
        assert time.monotonic() < deadline, last
    raise AssertionError(f"no snapshot passed within {timeout}s: {last}")


def act(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST an action as the page does: status and JSON answer."""
    code, _, body = http_get(f"{url}/api/{path}", 30.0, False, "POST", headers or {}, b"")
    try:
        return code, json.loads(body)
    except ValueError:
        return code, {"text": body}


def test_the_supervisor_serves_the_page_its_stream_and_its_actions(
    board: Callable[..., tuple[Supervisor, str]],
) -> None:
    sup, url = board(3)
    code, headers, page = http_get(url)
    assert code == 200 and headers["Content-Type"].startswith("text/html"), page
    for asset in ("dashboard.js", "dashboard.css"):
        assert f"/dashboard/static/{asset}" in page
        code, _, body = http_get(f"{url}/static/{asset}")
        assert code == 200 and len(body) > 1000, asset
    assert "//cdn" not in page and "https://" not in page  # every asset ships in the package
    first = until(url, lambda s: s["leader"] == 0 and all(n["up"] for n in s["nodes"]))
    assert [n["role"] for n in first["nodes"]] == ["leader", "follower", "follower"]
    assert first["controls"] and first["nodes"][1]["process"]["state"] == "running"
    # Faults go through the node's own control, with the secret the page never sees.
    code, answer = act(url, "nodes/1/stall")
    assert code == 200 and answer == {"ok": True, "text": "node 1 stalled", "status": 200}
    assert http_get(sup.urls[1] + "/fault")[2].startswith('{"stalled": true')
    until(url, lambda s: s["nodes"][1]["faults"]["stalled"])
    code, answer = act(url, "nodes/1/heal")
    assert code == 200 and answer["text"] == "node 1 healed"
    code, answer = act(url, "nodes/2/slow?ms=abc")
    assert code == 200 and not answer["ok"] and answer["status"] == 400, answer
    code, answer = act(url, "propose?value=42")
    assert code == 200 and answer["ok"] and answer["status"] == 200, answer
    assert answer["text"] == "CommandID: 1, Value 42"
    code, answer = act(url, "propose?value=12x")
    assert code == 400 and answer["text"].startswith("value '12x' is not a canonical integer")
    shown = until(url, lambda s: s["entries"][:1] == [[1, 42]])
    assert shown["nodes"][0]["commit"] == 1
    # The stream carries the sampled messages with the paper's names, ballots and slots.
    act(url, "propose?value=43")
    kinds = set()
    for snap in snapshots(url, 12):
        kinds |= {(e["kind"], e["from"], e["to"]) for e in snap["events"]}
    assert ("learn", 0, 1) in kinds or ("accept", 0, 1) in kinds, kinds
    # Autopropose: the chart shows commits/s and the leader's p50 and p99.
    code, answer = act(url, "autopropose?count=10")
    assert code == 200 and answer["ok"], answer
    point = until(url, lambda s: bool(s["chart"] and s["chart"]["p99_ms"]), timeout=15.0)
    assert point["chart"]["commits_per_s"] > 0 and 0 < point["chart"]["p50_ms"], point["chart"]
    assert point["autopropose"]["running"] and point["autopropose"]["committed"] > 0
    assert act(url, "autopropose/stop")[1]["text"] == "autopropose stopped"
    # kill -9 from the page: the node stays down, the supervisor says so; restart brings it.
    pid = sup.pids[2]
    code, answer = act(url, "nodes/2/kill")
    assert code == 200 and answer["text"] == (
        f"node 2 (pid {pid}) killed with SIGKILL; it stays down until restarted"
    )
    sup.wait_for(r"node 2 stays down until restarted from the dashboard")
    until(url, lambda s: s["nodes"][2]["process"]["state"] == "killed" and not s["nodes"][2]["up"])
    code, answer = act(url, "nodes/2/restart")
    assert code == 200 and answer["text"] == "node 2 starting again"
    sup.wait_for(r"node 2 is back \(pid \d+\)")
    until(url, lambda s: s["nodes"][2]["up"] and s["nodes"][2]["process"]["state"] == "running")


def test_the_dashboard_refuses_other_sites_and_unknown_actions(
    board: Callable[..., tuple[Supervisor, str]],
) -> None:
    sup, url = board(3)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Host": "evil.example"},  # DNS rebinding
    ):
        code, answer = act(url, "nodes/1/stall", headers)
        assert code == 403 and answer["text"].startswith("error: "), (headers, answer)
    assert http_get(sup.urls[1] + "/fault")[2].startswith('{"stalled": false')
    code, _, body = http_get(url, headers={"Host": "evil.example:80"})
    assert code == 403 and "is not this node's" in body
    # The page's own origin (and localhost's) is let in.
    port = url.split(":")[2].split("/")[0]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        code, answer = act(url, "nodes/1/heal", {"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert code == 200 and answer["ok"], (origin, answer)
    assert act(url, "nodes/9/stall") == (400, {"ok": False, "text": "no node 9"})
    assert act(url, "nodes/1/explode")[0] == 404
    assert act(url, "autopropose?count=0")[0] == 400
    code, _, _ = http_get(f"{url}/api/propose")  # a GET changes nothing
    assert code == 405


# --- in a real browser --------------------------------------------------------------------------


def followers_to_stall(leader: int, nodes: int = 5) -> list[int]:
    """The two highest-numbered followers of ``leader`` (3 and 4 when node 0 leads)."""
    return [n for n in range(nodes) if n != leader][-2:]


def chromium_page() -> Any:
    """Playwright's sync API and Chromium, or skip saying which is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'paxgos[test]')")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return sync_playwright


@pytest.mark.browser
def test_in_chromium_stall_two_followers_propose_heal_and_kill_the_leader(
    board: Callable[..., tuple[Supervisor, str]], tmp_path: Path
) -> None:
    sync_playwright = chromium_page()
    sup, url = board(5)
    errors: list[str] = []
    with sync_playwright() as playwright:
        executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(url)
            # Node 0 leads first, unless a busy host made it step down: whoever leads will do.
            first = page.wait_for_selector('tr[data-role="leader"]', timeout=15_000)
            lead = int(first.get_attribute("data-node-row") or "-1")
            stalled = followers_to_stall(lead)
            for node in stalled:
                page.click(f'button[data-node="{node}"][data-action="stall"]')
            for node in stalled:  # marked in the table and on the ring
                page.wait_for_selector(f'tr[data-node-row="{node}"][data-stalled="true"]')
                page.wait_for_selector(f'g.node.stalled[data-node="{node}"]')
            cell = f'tr[data-node-row="{stalled[0]}"] td:nth-child(7)'
            assert page.text_content(cell) == "stalled"
            page.fill("#value", "4242")
            page.click("#propose")
            done = page.wait_for_selector('#outcomes li[data-ok="true"] >> text=propose 4242')
            assert "200 OK: CommandID: 1, Value 4242" in (done.text_content() or "")
            page.wait_for_selector('#entries td >> text="4242"')
            assert http_get(sup.urls[lead] + "/")[2] == "History:\nid 1 val 4242\n"
            page.screenshot(path=str(tmp_path / "dashboard-stalled.png"), full_page=True)
            # Heal them (with them stalled and the leader dead, three of five would be gone:
            # no majority could elect anyone), then kill the leader.
            for node in stalled:
                page.click(f'button[data-node="{node}"][data-action="heal"]')
                page.wait_for_selector(f'tr[data-node-row="{node}"][data-stalled="false"]')
            lead = int(page.get_attribute('tr[data-role="leader"]', "data-node-row") or "-1")
            page.click(f'button[data-node="{lead}"][data-action="kill"]')
            page.wait_for_selector(f'g.node.down[data-node="{lead}"]', timeout=10_000)
            page.wait_for_selector('#outcomes li[data-ok="true"] >> text=killed with SIGKILL')
            leader = page.wait_for_selector(
                f'tr.leader:not([data-node-row="{lead}"])[data-role="leader"]', timeout=15_000
            )
            new = int(leader.get_attribute("data-node-row") or "-1")
            assert new in set(range(5)) - {lead}, new
            page.wait_for_selector(f'g.node.leader[data-node="{new}"]')
            assert f"leader: node {new}" in (page.text_content("#summary") or "")
            page.screenshot(path=str(tmp_path / "dashboard-new-leader.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp_path / "dashboard-failure.png"), full_page=True)
            print(f"screenshot of the failure: {tmp_path}/dashboard-failure.png")
            print(sup.text()[-3000:])
            raise
        finally:
            browser.close()
    assert not errors, errors
    assert (tmp_path / "dashboard-new-leader.png").stat().st_size > 10_000
    print(f"screenshots: {tmp_path}/dashboard-stalled.png, dashboard-new-leader.png")


FIREFOX = "/usr/bin/firefox-esr"


def q(selector: str) -> str:
    """A JavaScript expression: the first element matching ``selector``."""
    return f"document.querySelector({json.dumps(selector)})"


def there(selector: str) -> str:
    """A JavaScript expression: whether an element matches ``selector``."""
    return "!!" + q(selector)


def click(selector: str) -> str:
    return q(selector) + ".click()"


def button(node: int, action: str) -> str:
    return f'button[data-node="{node}"][data-action="{action}"]'


def row(node: int, attribute: str) -> str:
    return f'tr[data-node-row="{node}"][{attribute}]'


@pytest.mark.browser
def test_in_firefox_stall_two_followers_propose_heal_and_kill_the_leader(
    board: Callable[..., tuple[Supervisor, str]], tmp_path: Path
) -> None:
    """The Chromium test's steps in Debian's Firefox ESR, over WebDriver BiDi
    (``paxgos.testing.bidi``: Playwright's Firefox needs a build or commands ESR lacks)."""
    binary = FIREFOX if Path(FIREFOX).exists() else shutil.which("firefox")
    if binary is None:
        pytest.skip(f"no Firefox at {FIREFOX} (apt-get install firefox-esr)")
    from paxgos.testing.bidi import Firefox

    sup, url = board(5)
    with Firefox(binary, tmp_path) as firefox:
        try:
            firefox.navigate(url)
            # Node 0 leads first, unless a busy host made it step down: whoever leads will do.
            lead = int(
                firefox.wait_for(q('tr[data-role="leader"]') + "?.getAttribute('data-node-row')")
            )
            stalled = followers_to_stall(lead)
            for node in stalled:
                firefox.evaluate(click(button(node, "stall")))
            for node in stalled:  # marked in the table and on the ring
                firefox.wait_for(there(row(node, 'data-stalled="true"')))
                firefox.wait_for(there(f'g.node.stalled[data-node="{node}"]'))
            cell = q(f'tr[data-node-row="{stalled[0]}"] td:nth-child(7)')
            assert firefox.evaluate(cell + ".textContent") == "stalled"
            firefox.evaluate(q("#value") + ".value = '4242'; " + click("#propose"))
            done = firefox.wait_for(
                "[...document.querySelectorAll('#outcomes li[data-ok=\"true\"]')]"
                ".map(li => li.textContent).find(t => t.includes('propose 4242'))"
            )
            assert "200 OK: CommandID: 1, Value 4242" in done
            firefox.wait_for(
                "[...document.querySelectorAll('#entries td')]"
                ".some(td => td.textContent === '4242')"
            )
            assert http_get(sup.urls[lead] + "/")[2] == "History:\nid 1 val 4242\n"
            firefox.screenshot(tmp_path / "firefox-stalled.png")
            for node in stalled:
                firefox.evaluate(click(button(node, "heal")))
                firefox.wait_for(there(row(node, 'data-stalled="false"')))
            lead = int(
                firefox.evaluate(q('tr[data-role="leader"]') + ".getAttribute('data-node-row')")
            )
            firefox.evaluate(click(button(lead, "kill")))
            firefox.wait_for(there(f'g.node.down[data-node="{lead}"]'), timeout=10)
            new = firefox.wait_for(
                q(f'tr.leader:not([data-node-row="{lead}"])[data-role="leader"]')
                + "?.getAttribute('data-node-row')",
                timeout=15,
            )
            assert int(new) in set(range(5)) - {lead}, new
            firefox.wait_for(there(f'g.node.leader[data-node="{new}"]'))
            assert f"leader: node {new}" in firefox.evaluate(q("#summary") + ".textContent")
            firefox.screenshot(tmp_path / "firefox-new-leader.png")
        except Exception:
            firefox.screenshot(tmp_path / "firefox-failure.png")
            print(f"screenshot of the failure: {tmp_path}/firefox-failure.png")
            print(sup.text()[-3000:])
            raise
        assert not firefox.errors, firefox.errors
    assert (tmp_path / "firefox-new-leader.png").stat().st_size > 10_000
    print(f"screenshots: {tmp_path}/firefox-stalled.png, firefox-new-leader.png")
