"""Nodes on separate "hosts": one Linux network namespace per node, a bridge, and partitions.

``Netns(n)`` builds, and ``close()`` always removes (also when building fails half way)::

    root namespace (the test)     hub namespace <prefix>-hub     node namespace <prefix>-n<i>
    <prefix> 10.199.K.254/24 ── veth ── client ─┐
                                               br0 ── n0 ── veth ── eth0 10.199.K.1/24  node 0
                                                ├──── n1 ── veth ── eth0 10.199.K.2/24  node 1
                                                └──── ...

- ``<prefix>`` is ``pxg<pid>-<seq>``: unique per run (the pid) and per instance in the run.
- Node namespaces have a loopback and one veth to the bridge, no route off their /24: a node
  can only reach the other nodes and the client.  The bridge lives in a namespace of its own
  (the "hub"), so the only change to the host's network while it runs is one veth, ``<prefix>``,
  with one address on a /24 no route or address of the host touches (checked, under a lock so
  that concurrent runs pick different ones).  That veth is how the test process (the clients,
  /status polls, log fetches) reaches the nodes: clients are then in no partition, they can
  talk to both sides, as clients of a real cluster may -- which is what lets a test see what a
  cut-off node answers.  The alternative, running the client in a namespace of its own with
  ``ip netns exec``, would put the recorder in another process for no gain.
- ``cut(a, b)`` loads an nftables ``bridge`` table in the hub that DROPs (silently, as a real
  partition is: no RST, no ICMP) every IPv4 packet from an address of side ``a`` to one of side
  ``b`` and back; each side still talks within itself and to the client.  The rules are loaded
  in one nft transaction, so a cut or a heal lands at one instant for every node.  ``heal()``
  flushes them.  Needs ``nft`` (Debian package ``nftables``) and ``ip`` (``iproute2``), and root.
- Node ``i`` is started with ``exec_prefix(i) + [python, -m, paxgos, node, ...]``;
  ``ip netns exec`` execs the command, so the PID ``Popen`` returns is the node's own (see
  :meth:`Netns.holds`).  :func:`nodes_in` gives a :class:`~paxgos.testing.procs.LocalNodes`
  whose nodes run this way, on their namespace's address.

It lives in the package, next to ``procs`` and ``nemesis`` (which it serves), rather than under
``tests/``: the nemesis and the benchmark can use partitions and separate hosts too, and
``python -m`` tools cannot import from ``tests/``.  It uses only the standard library and the
two commands above.  Leftovers of a run that was killed (its pid gone) are removed by the next
``Netns`` before it builds; ``leftovers()`` lists what of an instance is still there.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paxgos.testing.procs import LocalNodes

NETNS_DIR = Path("/run/netns")
SUBNET_BASE = "10.199"  # 10.199.K.0/24, K the first free one from pid % 256 on
NODE_IF = "eth0"
BRIDGE = "br0"
CLIENT_IF = "client"
TABLE = "paxgos"
STALE = re.compile(r"^pxg(\d+)-\d+(?:-|$)")

_seq = 0
_seq_lock = threading.Lock()


class NetnsError(RuntimeError):
    """A command that builds, cuts or removes the namespaces failed."""


def run(*args: str, input: str | None = None, check: bool = True) -> str:
    """Run a command; its stdout, or :class:`NetnsError` with its stderr."""
    proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {proc.stderr.strip() or f'exit {proc.returncode}'}")
    return proc.stdout


def unavailable() -> str | None:
    """Why namespaces with a bridge and nft rules cannot be made here, or ``None`` if they can.

    Tries it: a throwaway namespace with a bridge and an nft bridge table, removed at once.
    """
    if sys.platform != "linux":
        return f"not Linux ({sys.platform})"
    if os.geteuid() != 0:
        return "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"no `{tool}` command (Debian package {package})"
    name = f"pxg{os.getpid()}-{_next_seq()}-probe"
    try:
        run("ip", "netns", "add", name)
        run("ip", "-n", name, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "netns", "exec", name, "nft", "add", "table", "bridge", TABLE)
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        run("ip", "netns", "del", name, check=False)
    return None


def _next_seq() -> int:
    global _seq
    with _seq_lock:
        _seq += 1
        return _seq - 1


def netns_names() -> list[str]:
    """The named network namespaces (``ip netns list``)."""
    return [line.split()[0] for line in run("ip", "netns", "list").splitlines() if line.strip()]


def link_names(netns: str | None = None) -> list[str]:
    """The network interfaces of the current namespace (or of ``netns``)."""
    where = ["-n", netns] if netns else []
    links = json.loads(run("ip", *where, "-j", "link", "show") or "[]")
    return [link["ifname"] for link in links]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_inside(netns: str) -> None:
    """SIGKILL the processes still in ``netns`` (only ever our own namespaces), by PID."""
    for pid in run("ip", "netns", "pids", netns, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_stale() -> list[str]:
    """Remove namespaces and root links this module made in runs whose process is gone."""
    removed = []
    for name in netns_names():
        match = STALE.match(name)
        if match and not _alive(int(match.group(1))):
            _kill_inside(name)
            run("ip", "netns", "del", name, check=False)
            removed.append(name)
    for name in link_names():
        match = STALE.match(name)
        if match and not _alive(int(match.group(1))):
            run("ip", "link", "del", name, check=False)
            removed.append(name)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network a route (any table) or an address of this namespace covers."""
    nets = []
    for route in json.loads(run("ip", "-4", "-j", "route", "show", "table", "all") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            nets.append(ipaddress.ip_network(dst, strict=False))
    for link in json.loads(run("ip", "-4", "-j", "addr", "show") or "[]"):
        for addr in link.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


class Netns:
    """``count`` node namespaces joined by a bridge; see the module docstring."""

    def __init__(self, count: int):
        if not 1 <= count <= 250:
            raise ValueError("count must be between 1 and 250")
        self.count = count
        self.prefix = f"pxg{os.getpid()}-{_next_seq()}"
        if len(self.prefix) > 15:  # it names the root end of the client veth (IFNAMSIZ)
            raise NetnsError(f"prefix {self.prefix} is too long for an interface name")
        self.hub = f"{self.prefix}-hub"
        self.names = [f"{self.prefix}-n{i}" for i in range(count)]
        self.root_link = self.prefix
        self.addrs: list[str] = []
        self.client_addr = ""
        self.cuts: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    # --- building and removing ----------------------------------------------------------------

    def up(self) -> Netns:
        """Build everything; on any failure remove what was built and re-raise."""
        remove_stale()
        try:
            with _subnet_lock():
                self._pick_subnet()
                self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _pick_subnet(self) -> None:
        used = _used_networks()
        start = os.getpid() % 256
        for k in range(256):
            net = ipaddress.ip_network(f"{SUBNET_BASE}.{(start + k) % 256}.0/24")
            if not any(net.overlaps(u) for u in used):
                hosts = list(net.hosts())
                self.addrs = [str(hosts[i]) for i in range(self.count)]
                self.client_addr = str(hosts[-1])
                return
        raise NetnsError(f"no free /24 in {SUBNET_BASE}.0.0/16 on this host")

    def _build(self) -> None:
        hub = self.hub
        self._add_netns(hub)
        run("ip", "-n", hub, "link", "set", "lo", "up")
        run("ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
            "forward_delay", "0")  # fmt: skip
        run("ip", "-n", hub, "link", "set", BRIDGE, "up")
        for i, name in enumerate(self.names):
            self._add_netns(name)
            port = f"n{i}"
            run("ip", "-n", name, "link", "add", NODE_IF, "type", "veth", "peer", "name", port,
                "netns", hub)  # fmt: skip
            run("ip", "-n", hub, "link", "set", port, "master", BRIDGE, "up")
            run("ip", "-n", name, "addr", "add", f"{self.addrs[i]}/24", "dev", NODE_IF)
            run("ip", "-n", name, "link", "set", NODE_IF, "up")
            run("ip", "-n", name, "link", "set", "lo", "up")
        # The client's veth: its root end is made here, in the current namespace, its other end
        # directly in the hub (it never has a name in another namespace).
        run("ip", "link", "add", self.root_link, "type", "veth", "peer", "name", CLIENT_IF,
            "netns", hub)  # fmt: skip
        run("ip", "-n", hub, "link", "set", CLIENT_IF, "master", BRIDGE, "up")
        run("ip", "addr", "add", f"{self.client_addr}/24", "dev", self.root_link)
        run("ip", "link", "set", self.root_link, "up")
        self._nft(f"add table bridge {TABLE}\n"
                  f"add chain bridge {TABLE} forward "
                  "{ type filter hook forward priority 0; policy accept; }\n")  # fmt: skip

    def _add_netns(self, name: str) -> None:
        run("ip", "netns", "add", name)

    def close(self) -> None:
        """Remove everything (idempotent): the client veth, any process left in a node
        namespace, the namespaces; then wait until nothing is left, else :class:`NetnsError`."""
        run("ip", "link", "del", self.root_link, check=False)
        for name in [*self.names, self.hub]:
            if (NETNS_DIR / name).exists():
                _kill_inside(name)
                run("ip", "netns", "del", name, check=False)
        self.cuts.clear()
        # The kernel frees a namespace (and the veths in it) asynchronously.
        deadline = time.monotonic() + 10.0
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise NetnsError(f"left behind: {', '.join(left)}")

    def leftovers(self) -> list[str]:
        """What of this instance still exists: namespaces (``ip netns list``) and links of
        the current namespace (``ip link``) named after its prefix."""
        mine = [n for n in netns_names() if n == self.prefix or n.startswith(self.prefix + "-")]
        links = [n for n in link_names() if n == self.prefix or n.startswith(self.prefix + "-")]
        return [f"netns {n}" for n in mine] + [f"link {n}" for n in links]

    def __enter__(self) -> Netns:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- nodes --------------------------------------------------------------------------------

    def urls(self, port: int = 9000) -> list[str]:
        """Node ``i``'s base URL, on its namespace's address (where it listens)."""
        return [f"http://{addr}:{port}" for addr in self.addrs]

    def exec_prefix(self, i: int) -> list[str]:
        """The command prefix that runs a command in node ``i``'s namespace (it execs it)."""
        return ["ip", "netns", "exec", self.names[i]]

    def holds(self, i: int, pid: int) -> bool:
        """Whether process ``pid`` runs in node ``i``'s network namespace."""
        try:
            inode = os.stat(NETNS_DIR / self.names[i]).st_ino
            return os.stat(f"/proc/{pid}/ns/net").st_ino == inode
        except OSError:
            return False

    # --- partitions ---------------------------------------------------------------------------

    def cut(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        """Silently drop every packet between the nodes of ``side_a`` and those of ``side_b``
        (both ways); added to the cuts already made, all at once."""
        a, b = tuple(sorted(set(side_a))), tuple(sorted(set(side_b)))
        if not a or not b or set(a) & set(b):
            raise ValueError(f"sides must be non-empty and disjoint: {a} {b}")
        if not set(a) | set(b) <= set(range(self.count)):
            raise ValueError(f"no such node in {a} {b}")
        self.cuts.append((a, b))
        self._load_cuts()

    def heal(self) -> None:
        """Remove every cut (at once)."""
        self.cuts.clear()
        self._load_cuts()

    def _load_cuts(self) -> None:
        lines = [f"flush chain bridge {TABLE} forward"]
        for a, b in self.cuts:
            sa, sb = self._set(a), self._set(b)
            lines.append(f"add rule bridge {TABLE} forward ip saddr {sa} ip daddr {sb} drop")
            lines.append(f"add rule bridge {TABLE} forward ip saddr {sb} ip daddr {sa} drop")
        self._nft("\n".join(lines) + "\n")

    def _set(self, nodes: Sequence[int]) -> str:
        return "{ " + ", ".join(self.addrs[i] for i in nodes) + " }"

    def _nft(self, script: str) -> None:
        run("ip", "netns", "exec", self.hub, "nft", "-f", "-", input=script)

    # --- probing ------------------------------------------------------------------------------

    def probe(
        self, src: int | None, dsts: Iterable[int | str], port: int = 9, timeout: float = 0.5
    ) -> dict[int | str, str]:
        """TCP-connect from node ``src``'s namespace (``None``: this one) to each destination
        (a node index or an address) at once: ``open``, ``refused`` (a RST came back: the
        network passes packets both ways), ``timeout`` (silence: dropped) or an error."""
        targets = list(dsts)
        addrs = [self.addrs[d] if isinstance(d, int) else d for d in targets]
        cmd = [sys.executable, "-c", _PROBE, str(port), str(timeout), *addrs]
        if src is not None:
            cmd = [*self.exec_prefix(src), *cmd]
        out = run(*cmd).split()
        if len(out) != len(targets):
            raise NetnsError(f"probe from {src}: unexpected output {out}")
        return dict(zip(targets, out, strict=True))

    def probe_all(
        self, dsts: Iterable[int | str], port: int = 9, timeout: float = 0.5
    ) -> dict[int, dict[int | str, str]]:
        """:meth:`probe` from every node's namespace at once: by source node."""
        targets = list(dsts)
        with ThreadPoolExecutor(self.count) as pool:
            futures = [
                pool.submit(self.probe, i, targets, port, timeout) for i in range(self.count)
            ]
            return {i: f.result() for i, f in enumerate(futures)}


_PROBE = """
import socket, sys, threading
port, timeout, addrs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
out = [""] * len(addrs)
def one(i):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((addrs[i], port))
        out[i] = "open"
    except ConnectionRefusedError:
        out[i] = "refused"
    except socket.timeout:
        out[i] = "timeout"
    except OSError as e:
        out[i] = "error:" + (e.strerror or type(e).__name__).replace(" ", "_")
    finally:
        s.close()
threads = [threading.Thread(target=one, args=(i,)) for i in range(len(addrs))]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(out))
"""


@contextmanager
def _subnet_lock() -> Iterator[None]:
    """An exclusive lock while a subnet is picked and claimed (by the client veth's address),
    so that concurrent runs pick different ones."""
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with open(lock_dir / "paxgos-netns.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def nodes_in(
    net: Netns, workdir: str | Path, extra_args: list[str] | None = None, port: int = 9000
) -> LocalNodes:
    """A :class:`~paxgos.testing.procs.LocalNodes` whose node ``i`` runs in ``net``'s namespace
    ``i``, listening on its address (not started)."""
    from paxgos.testing.procs import LocalNodes

    return LocalNodes(net.count, workdir, extra_args, urls=net.urls(port), prefix=net.exec_prefix)
