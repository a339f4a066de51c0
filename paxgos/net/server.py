"""Run one Paxgos node: build its store, core, host and Tornado application, then serve.

``python -m paxgos node --id I --peers URL,URL,...`` lands here; so does every process the
local supervisor (``paxgos.cluster``) starts.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import tornado.web
from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets

from paxgos.core import Config, Node
from paxgos.net.auth import PeerAuth, SecretError, read_secret, secret_path
from paxgos.net.fastpath import NodeDelegate
from paxgos.net.faults import FaultFlags, FaultInjector
from paxgos.net.guard import ConnectionGuard, NodeServer, raise_fd_limit
from paxgos.net.handlers import NotFoundHandler, routes
from paxgos.net.host import PEER_TIMEOUT, REQUEST_TIMEOUT, NodeHost
from paxgos.net.lane import Lane
from paxgos.net.transport import configure_peer_client
from paxgos.storage import MemoryStore, SQLiteStore, StorageError, Store

log = logging.getLogger("paxgos.net")

SWITCH_INTERVAL = 0.0005
GC_THRESHOLD = 50_000


@dataclass
class NodeOptions:
    """Everything one node needs to run."""

    node_id: int
    urls: list[str]
    storage: str = "sqlite"
    data_dir: str = "paxgos-data"
    cluster_id: str = ""  # required with sqlite: there is no shared default
    fresh: bool = False
    db_max_pages: int | None = None
    faults: FaultFlags = field(default_factory=FaultFlags)
    request_timeout: float = REQUEST_TIMEOUT
    peer_timeout: float = PEER_TIMEOUT
    # The protocol's tunables default to the core's (``paxgos.core.Config``).
    window: int = Config.window
    max_batch: int = Config.max_batch
    pipeline_batch: int = Config.pipeline_batch
    min_batch: int = Config.min_batch
    linger: float = Config.linger
    linger_fill: float = Config.linger_fill
    thrifty: bool = Config.thrifty
    election_timeout: float = Config.election_timeout
    #: The cluster secret's file (``None``: ``DATA_DIR/secret``); see ``paxgos.net.auth``.
    secret_file: str | None = None
    #: Run with no secret: peer messages and controls unauthenticated.
    insecure: bool = False
    #: HTTPS: this node's certificate and key (PEM), and the CA its peers' certificates must
    #: be signed by (then protocol messages need a client certificate).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: How the fan-out reaches peers: "lane", "pooled" or "curl" (``paxgos.net.transport``).
    peer_client: str = "lane"
    #: The asyncio event loop the node runs on: "uvloop" or "asyncio" (``run``).
    event_loop: str = "uvloop"


class StartupError(Exception):
    """The node cannot start (port taken, bad store); a one-line reason for the user."""


#: The event loops ``run`` (and ``--event-loop``) knows.
EVENT_LOOPS = ("asyncio", "uvloop")


def run(options: NodeOptions, exit_with_parent: bool = False) -> None:
    """Serve the node until it is stopped, on the event loop ``options.event_loop`` names:
    asyncio's own, or uvloop's (libuv's, in C; Tornado runs on any asyncio loop)."""
    main = serve(options, exit_with_parent=exit_with_parent)
    if options.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            main.close()
            raise StartupError(
                "--event-loop uvloop needs uvloop (pip install uvloop; it has no Windows build): "
                "install it or pass --event-loop asyncio"
            ) from None
        uvloop.run(main)
    elif options.event_loop == "asyncio":
        asyncio.run(main)
    else:
        main.close()
        raise StartupError(f"unknown event loop {options.event_loop!r}")


def store_path(data_dir: str | Path, node_id: int) -> Path:
    """Where node ``node_id`` keeps its SQLite file under ``data_dir``."""
    return Path(data_dir) / f"node-{node_id}" / "paxgos.db"


def cluster_id_path(data_dir: str | Path) -> Path:
    """The file under ``data_dir`` that names the cluster its node files belong to (the local
    supervisor writes it; a node started by hand on the same directory reads it)."""
    return Path(data_dir) / "cluster-id"


def stored_cluster_id(data_dir: str | Path) -> str | None:
    """The cluster id kept in ``cluster_id_path(data_dir)``, or ``None`` if there is none."""
    try:
        return cluster_id_path(data_dir).read_text().strip() or None
    except OSError:  # missing or unreadable: the store's own check names the id if it matters
        return None


def open_store(options: NodeOptions) -> Store:
    """The node's store, as ``--storage`` asks (``--fresh`` first deletes a SQLite file)."""
    if options.storage == "memory":
        return MemoryStore()
    if options.storage != "sqlite":
        raise StartupError(f"unknown storage {options.storage!r}")
    if not options.cluster_id:
        raise StartupError("no cluster id: pass --cluster-id NAME (the same on every node)")
    path = store_path(options.data_dir, options.node_id)
    if options.fresh:
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    try:
        return SQLiteStore(
            path, options.cluster_id, options.node_id, max_pages=options.db_max_pages
        )
    except StorageError as exc:
        raise StartupError(str(exc)) from None


def peer_auth(options: NodeOptions) -> PeerAuth:
    """The node's ``PeerAuth``: its secret, or none under ``--insecure``; ``StartupError`` if
    it has neither."""
    if options.insecure:
        return PeerAuth(None)
    path = options.secret_file or secret_path(options.data_dir)
    if options.secret_file is None and not Path(path).exists():
        raise StartupError(
            f"no cluster secret: {path} does not exist; pass --secret-file FILE (the "
            "supervisor writes DATA_DIR/secret), or --insecure to run unauthenticated"
        )
    try:
        return PeerAuth(read_secret(path))
    except SecretError as exc:
        raise StartupError(str(exc)) from None


def server_tls(options: NodeOptions) -> ssl.SSLContext | None:
    """The HTTPS context the node serves with (``None``: plain HTTP); ``StartupError`` for a
    certificate or key that cannot be loaded."""
    if options.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.tls_cert, options.tls_key)
        if options.tls_ca is not None:
            context.load_verify_locations(options.tls_ca)
            # Clients (curl, Locust) may come without a certificate; a peer message needs one
            # (``paxgos.net.fastpath``); a certificate that is presented must verify.
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate, key or CA: {exc}") from None
    return context


def peer_tls(options: NodeOptions) -> ssl.SSLContext | None:
    """The context the node connects to its peers with: it verifies them against ``--tls-ca``
    (else the system's CAs) and presents the node's own certificate."""
    if options.tls_cert is None:
        return None
    try:
        context = ssl.create_default_context(cafile=options.tls_ca)
        context.load_cert_chain(options.tls_cert, options.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(f"cannot load the TLS certificate, key or CA: {exc}") from None
    return context


def listen(url: str) -> list[socket.socket]:
    """Bind the node's listening socket(s), or ``StartupError`` naming the port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        return bind_sockets(port, host)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def build(options: NodeOptions) -> tuple[NodeHost, tornado.web.Application]:
    """The node's host and application (not yet listening)."""
    config = Config(
        node_id=options.node_id,
        nodes=len(options.urls),
        window=options.window,
        max_batch=options.max_batch,
        pipeline_batch=options.pipeline_batch,
        min_batch=options.min_batch,
        linger=options.linger,
        linger_fill=options.linger_fill,
        thrifty=options.thrifty,
        election_timeout=options.election_timeout,
        seed=int.from_bytes(os.urandom(8), "big"),  # this node's election timer draws
    )
    auth = peer_auth(options)
    store = open_store(options)
    try:
        stored = store.load()
    except StorageError as exc:
        store.close()
        raise StartupError(str(exc)) from None
    node = Node(config, stored)
    try:
        configure_peer_client(
            options.peer_client,
            ca_certs=options.tls_ca,
            client_cert=options.tls_cert,
            client_key=options.tls_key,
        )
    except ValueError as exc:
        store.close()
        raise StartupError(str(exc)) from None
    host = NodeHost(
        node,
        store,
        options.urls,
        FaultInjector(options.faults),
        request_timeout=options.request_timeout,
        peer_timeout=options.peer_timeout,
        auth=auth,
        peer_tls=peer_tls(options),
        peer_lane=options.peer_client == "lane",
    )
    # With a CA, a peer message must come with a certificate signed by it (etcd's
    # --peer-client-cert-auth); the secret is checked as well.
    host.peer_cert_required = options.tls_ca is not None
    app = tornado.web.Application(
        routes(host),
        default_handler_class=NotFoundHandler,
        default_handler_args={"host": host},
    )
    return host, app


async def serve(options: NodeOptions, exit_with_parent: bool = False) -> None:
    """Listen, run until SIGTERM or SIGINT (or, with ``exit_with_parent``, until the parent
    process is gone), then stop cleanly."""
    # The writer thread gives up the GIL at every SQLite step (several per group commit) and
    # must wait for the event loop thread to hand it back; Python's default 5 ms switch
    # interval would add that wait to every fsync, and every fsync to every round.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Every request allocates a few dozen short-lived objects; with the default thresholds the
    # cyclic collector runs hundreds of times a second for almost nothing (reference counting
    # frees them).  Collect young objects less often, and keep start-up objects out of it.
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    gc.freeze()
    raise_fd_limit()
    sockets = listen(options.urls[options.node_id])
    host, app = build(options)
    guard = ConnectionGuard()
    tls = server_tls(options)
    server = NodeServer(NodeDelegate(app, host, guard), guard=guard, ssl_options=tls)
    if tls is None and not host.peer_cert_required:
        server.lane = Lane(host, server)  # the hot requests off the socket (paxgos.net.lane)
    # Tornado arms a header timer for every request read (idle_connection_timeout, at least an
    # hour); at thousands of proposals a second that timer is a measurable share of the CPU.
    # The guard's sweep bounds the same wait (``paxgos.net.guard``).
    server.conn_params.header_timeout = None
    server.add_sockets(sockets)
    guard.start()
    host.start()
    role = "initial leader" if options.node_id == host.node.config.initial_leader else "follower"
    where = (
        "memory" if options.storage == "memory" else store_path(options.data_dir, options.node_id)
    )
    log.info(
        "node %d listening on %s (%s, %d nodes, storage %s, commit index %d, event loop %s)",
        options.node_id, options.urls[options.node_id], role, len(options.urls), where,
        host.node.commit, options.event_loop,
    )  # fmt: skip
    if not host.auth.enabled:
        log.warning(
            "node %d: --insecure: peer messages and fault controls are NOT authenticated; "
            "anyone who reaches this port can forge protocol messages",
            options.node_id,
        )
    if not host.store.durable:
        log.warning(
            "node %d: --storage memory is NOT durable: a restarted node forgets its promises "
            "and accepted values, which can break Paxos safety; use it for demos only",
            options.node_id,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_parent:
        parent = os.getppid()

        def check_parent() -> None:
            if os.getppid() != parent:  # re-parented: the supervisor died without stopping us
                log.warning("node %d: supervisor gone, stopping", options.node_id)
                stop.set()

        PeriodicCallback(check_parent, 500).start()
    await stop.wait()
    log.info("node %d stopping", options.node_id)
    server.stop()
    guard.stop()
    host.stop()
