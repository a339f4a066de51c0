"""The commands a user types: the local supervisor, a single node, and what they print."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paxgos.testing.http import http_get
from paxgos.testing.procs import LocalNodes

NODE_LINE = re.compile(r"node (\d+)  (http://127\.0\.0\.1:\d+)  (leader|follower)  \(pid (\d+)\)")


def start_supervisor(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The supervisor, run in ``cwd`` (a test's tmp_path) so its default ./paxgos-data is there."""
    return subprocess.Popen(
        [sys.executable, "-m", "paxgos", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )  # fmt: skip


def read_node_lines(proc: subprocess.Popen[str], count: int, timeout: float = 15.0) -> list[str]:
    """The supervisor's output up to its "nodes up" line."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "nodes up" in line:
            return lines
    raise AssertionError(f"supervisor did not come up: {''.join(lines)}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone in all but name; its parent (the supervisor) reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def finish(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_supervisor_runs_a_cluster_and_stops_every_node_on_sigterm(tmp_path: Path) -> None:
    proc = start_supervisor(tmp_path, "--nodes", "2", "--starting-port", "0")
    try:
        lines = read_node_lines(proc, 3)
        text = "".join(lines)
        assert "--nodes 2 is too few" in text and "using 3" in text
        nodes = [NODE_LINE.search(line) for line in lines]
        found = [m for m in nodes if m]
        assert [m.group(1) for m in found] == ["0", "1", "2"]
        assert [m.group(3) for m in found] == ["leader", "follower", "follower"]
        code, _, body = http_get(found[0].group(2) + "/propose/5")
        assert code == 200 and body.startswith("CommandID: "), body
        pids = [int(m.group(4)) for m in found]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - started < 5.0
        assert proc.returncode == 0
        assert not [pid for pid in pids if alive(pid)]
        rest = proc.stdout.read() if proc.stdout else ""
        assert "node 0 | " in rest  # node logs are shown, prefixed with the node id
    finally:
        finish(proc)


def test_supervisor_stops_a_sigstopped_node_too(tmp_path: Path) -> None:
    proc = start_supervisor(tmp_path, "--nodes", "3", "--starting-port", "0")
    try:
        lines = read_node_lines(proc, 3)
        pids = [int(m.group(4)) for m in map(NODE_LINE.search, lines) if m]
        os.kill(pids[2], signal.SIGSTOP)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        assert time.monotonic() - started < 5.5
        assert not [pid for pid in pids if alive(pid)]
    finally:
        finish(proc)


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "paxgos", "--nodes", "3", "--starting-port", str(port)],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert output == f"paxgos: port {port} is already in use", output


def test_single_node_command_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        peers = ",".join([url, "http://127.0.0.1:1", "http://127.0.0.1:2"])
        result = subprocess.run(
            [sys.executable, "-m", "paxgos", "node", "--id", "0", "--peers", peers,
             "--cluster-id", "c1", "--insecure"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("Address already in use"), result.stderr


PEERS = ["--peers", "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3"]


def run_node(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paxgos", "node", "--id", "0", *PEERS, *args],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip


def test_a_node_needs_a_cluster_id_and_a_secret(tmp_path: Path) -> None:
    """No shared default cluster id, and no unauthenticated node unless asked for."""
    result = run_node(tmp_path, "--insecure")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "paxgos node 0: no cluster id: pass --cluster-id NAME (the same on every node), "
        "or keep one in paxgos-data/cluster-id"
    )
    result = run_node(tmp_path, "--cluster-id", "c1")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "paxgos node 0: no cluster secret: paxgos-data/secret does not exist; pass "
        "--secret-file FILE (the supervisor writes DATA_DIR/secret), or --insecure to run "
        "unauthenticated"
    )
    assert not (tmp_path / "paxgos-data" / "node-0").exists()  # refused before any file
    loose = tmp_path / "loose"
    loose.write_text("x" * 64)
    loose.chmod(0o644)
    result = run_node(tmp_path, "--cluster-id", "c1", "--secret-file", str(loose))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"paxgos node 0: secret file {loose} is readable by others (mode 644); "
        f"run: chmod 600 {loose}"
    )
    loose.chmod(0o600)
    loose.write_text("short")
    result = run_node(tmp_path, "--cluster-id", "c1", "--secret-file", str(loose))
    assert result.stderr.strip().endswith("holds fewer than 32 characters"), result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--id", "5", "--peers", "http://a:1,http://b:2,http://c:3"], "--id must be between"),
        (["--id", "0", "--peers", "http://a:1"], "at least 3 nodes"),
        (
            [
                "--id",
                "0",
                "--peers",
                "http://a:1,http://b:2,http://c:3",
                "--election-timeout",
                "60ms",
            ],
            "'60ms' is below 100ms: heartbeats go every fifth of the election timeout",
        ),
    ],
)
def test_single_node_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paxgos", "node", *args],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_debug_log_follows_the_phases(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(3, ["--log-level", "debug"])
    code, _, body = nodes.get(0, "/propose/99")
    assert code == 200
    nodes.wait_converged(timeout=5, at_least=1)
    leader_log = nodes.log_path(0).read_text()
    for phrase in (
        "prepare ballot 1.0",
        "promise for 1.0",
        "leading with ballot 1.0",
        "accept ballot 1.0 slots 1..1",
        "chosen under 1.0 (majority",
        "learned slots 1..1",
    ):
        assert phrase in leader_log, phrase
    follower_log = nodes.log_path(1).read_text()
    assert "accepted slots 1..1 under ballot 1.0 from node 0" in follower_log
    assert "learned slots 1..1" in follower_log


@pytest.mark.parametrize(
    ("args", "loop"), [([], "uvloop"), (["--event-loop", "asyncio"], "asyncio")]
)
def test_nodes_run_on_uvloop_by_default_and_on_asyncio_when_asked(
    make_nodes: Callable[..., LocalNodes], args: list[str], loop: str
) -> None:
    nodes = make_nodes(3, args)
    code, _, body = nodes.get(0, "/propose/41")
    assert code == 200, body
    nodes.wait_converged(timeout=5, at_least=1)
    for i in range(3):
        assert [value for _, value in nodes.history(i)] == [41]
        started = re.findall(r"node \d listening on .*", nodes.log_path(i).read_text())
        assert len(started) == 1 and started[0].endswith(f"event loop {loop})"), started


def test_default_log_is_quiet_under_load(make_nodes: Callable[..., LocalNodes]) -> None:
    nodes = make_nodes(3)
    for value in range(50):
        assert nodes.get(0, f"/propose/{value}")[0] == 200
    lines = nodes.log_path(0).read_text().splitlines()
    assert len(lines) < 10, lines


def test_supervisor_reuses_its_data_dir_and_fresh_starts_empty(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    for fresh, expect_listed in ((False, False), (False, True), (True, False)):
        args = ["--nodes", "3", "--starting-port", "0", "--data-dir", data]
        proc = start_supervisor(tmp_path, *args, *(["--fresh"] if fresh else []))
        try:
            lines = read_node_lines(proc, 3)
            assert any(f"node data in {Path(data).resolve()}" in line for line in lines)
            resumed = [line for line in lines if "resuming cluster" in line]
            assert bool(resumed) == expect_listed, lines
            if resumed:
                identity = (Path(data) / "cluster-id").read_text().strip()
                assert resumed[0].startswith(
                    f"paxgos: resuming cluster {identity} (3 nodes): up to "
                )
            url = next(m.group(2) for m in map(NODE_LINE.search, lines) if m)
            listed = "val 4242" in http_get(url + "/")[2]
            assert listed == expect_listed
            if not listed:
                assert http_get(url + "/propose/4242")[0] == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)  # every node stopped: the next run may open their files
            finish(proc)


def run_supervisor(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The supervisor run to its end (it refuses to start in these tests)."""
    return subprocess.run(
        [sys.executable, "-m", "paxgos", "--starting-port", "0", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd,
    )  # fmt: skip


def test_supervisor_refuses_data_of_another_size_or_without_its_identity(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = start_supervisor(
        tmp_path, "--nodes", "3", "--starting-port", "0", "--data-dir", str(data)
    )
    try:
        read_node_lines(proc, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        finish(proc)
    assert sorted(p.name for p in data.iterdir()) == [
        "cluster-id", "cluster-size", "node-0", "node-1", "node-2", "secret",
    ]  # fmt: skip
    result = run_supervisor(tmp_path, "--nodes", "5", "--data-dir", str(data))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"paxgos: {data} holds a 3-node cluster; run it with --nodes 3, or pass --fresh to start "
        "a new one (majorities of different sizes do not overlap)"
    )
    assert not (data / "node-3").exists()
    (data / "cluster-id").unlink()  # lost: it must not be silently replaced
    result = run_supervisor(tmp_path, "--nodes", "3", "--data-dir", str(data))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"paxgos: {data}/cluster-id is missing but {data} holds node data "
        "(node-0/paxgos.db...); restore the file, or pass --fresh to start empty"
    )
    assert not (data / "cluster-id").exists()


def test_supervisor_on_a_data_dir_it_cannot_write_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the data dir's parent should be: even root cannot
    result = run_supervisor(tmp_path, "--nodes", "3", "--data-dir", str(blocker / "data"))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"paxgos: cannot use data dir {blocker / 'data'}: Not a directory"
    )


def test_version() -> None:
    from paxgos import __version__

    for command in ([], ["node"]):
        result = subprocess.run(
            [sys.executable, "-m", "paxgos", *command, "--version"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0 and result.stdout == f"paxgos {__version__}\n"


def test_defaults_are_stated_once() -> None:
    """The core's Config holds the protocol's defaults; NodeOptions takes them, the command
    line takes NodeOptions', and the supervisor hands its own on to every node unchanged."""
    from dataclasses import MISSING, fields

    from paxgos.cli import cluster_parser, node_options, node_parser, passthrough
    from paxgos.core import Config
    from paxgos.net.server import NodeOptions

    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
    defaults = NodeOptions(0, urls, cluster_id="c", secret_file="s")
    core = {f.name: f.default for f in fields(Config) if f.default is not MISSING}
    shared = core.keys() & {f.name for f in fields(NodeOptions)}
    assert shared >= {"window", "max_batch", "pipeline_batch", "min_batch", "linger"}
    for name in shared:
        assert getattr(defaults, name) == core[name], name
    identity = ["--cluster-id", "c", "--secret-file", "s"]
    node = node_parser().parse_args(["--id", "0", "--peers", ",".join(urls), *identity])
    assert node_options(node, 0, urls) == defaults
    supervisor = cluster_parser().parse_args([])
    supervisor.cluster_id, supervisor.secret_file = "c", "s"
    handed_on = node_parser().parse_args(["--id", "0", "--peers", "x", *passthrough(supervisor)])
    assert node_options(handed_on, 0, urls) == defaults


def test_free_ports_are_below_the_ephemeral_range_and_free() -> None:
    """A port the kernel could give an outgoing connection is never picked (parallel test runs
    lost a node to "Address already in use" that way)."""
    from paxgos.cluster import ephemeral_low, free_ports

    ports = free_ports("127.0.0.1", 8)
    assert len(set(ports)) == 8 and all(1024 <= port < ephemeral_low() for port in ports), ports
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
