"""Command-line parsing for every Paxgos command; ``python -m paxgos`` and ``paxgos`` call ``main``.

- ``paxgos [--nodes N] [--starting-port P] [node options]``: a local cluster, one process per
  node (``paxgos.cluster``);
- ``paxgos node --id I --peers URL,URL,... [node options]``: one node, e.g. on its own host;
- ``paxgos dashboard --peers URL,URL,... [--secret-file F]``: the dashboard of running nodes
  (``paxgos.dashboard.server``; the supervisor serves its own).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from paxgos import __version__
from paxgos.cluster import run_cluster
from paxgos.dashboard.server import run_standalone
from paxgos.net.faults import FaultFlags
from paxgos.net.host import TICK_INTERVAL
from paxgos.net.server import EVENT_LOOPS, NodeOptions, StartupError, run
from paxgos.net.transport import PEER_CLIENTS

_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ms|s)?")


def duration(text: str) -> float:
    """A duration in seconds from ``500ms``, ``2s``, ``1.5s`` or a bare number of milliseconds
    (the demo's unit)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 500ms or 2s")
    number = float(match.group(1))
    return number if match.group(2) == "s" else number / 1000


def seconds(value: float) -> str:
    """A duration as ``duration`` reads it back: ``4ms``, ``5s``."""
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"


#: A node's defaults, stated once (``NodeOptions``, which takes the protocol's from
#: ``paxgos.core.Config``); the options below show and use them.
NODE = NodeOptions(node_id=0, urls=[])


def positive(text: str) -> int:
    """A whole number of at least 1 (batch sizes, the window)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


#: The shortest election timeout that can work: heartbeats go every fifth of it, and the host
#: ticks every TICK_INTERVAL, so a heartbeat must be at least one tick.
MIN_ELECTION_TICKS = 5


def election_timeout(text: str) -> float:
    value = duration(text)
    low = MIN_ELECTION_TICKS * TICK_INTERVAL
    if value < low:
        raise argparse.ArgumentTypeError(
            f"{text!r} is below {seconds(low)}: heartbeats go every fifth of the election "
            f"timeout and the node ticks every {seconds(TICK_INTERVAL)}"
        )
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1")
    return value


def percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage between 0 and 100")
    return value


def add_node_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by a single node and the local cluster (which passes them on)."""
    parser.add_argument(
        "--storage",
        choices=["sqlite", "memory"],
        default=NODE.storage,
        help="where node state lives: sqlite (durable, default) or memory (NOT durable)",
    )
    parser.add_argument(
        "--data-dir",
        default=NODE.data_dir,
        help="directory of the nodes' SQLite files, node-<id>/paxgos.db "
        f"(default ./{NODE.data_dir})",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete existing node data and start empty"
    )
    parser.add_argument(
        "--db-max-pages",
        type=positive,
        default=None,
        metavar="N",
        help="fault injection: cap the SQLite file at N pages to simulate a full disk",
    )
    parser.add_argument(
        "--failure-rate",
        type=percent,
        default=NODE.faults.failure_rate,
        metavar="P",
        help="percent of protocol messages a node answers only after --timeout "
        f"(default {NODE.faults.failure_rate:g})",
    )
    parser.add_argument(
        "--timeout",
        type=duration,
        default=NODE.faults.timeout,
        metavar="D",
        help="delay of a 'failed' answer under --failure-rate "
        f"(default {seconds(NODE.faults.timeout)}; bare numbers are ms)",
    )
    parser.add_argument(
        "--endpoint-random-cap",
        type=duration,
        default=NODE.faults.random_cap,
        metavar="D",
        help="delay every protocol answer by a random time up to D "
        f"(default {seconds(NODE.faults.random_cap)})",
    )
    parser.add_argument(
        "--request-timeout",
        type=duration,
        default=NODE.request_timeout,
        metavar="D",
        help="how long /propose waits for a majority before answering 504 "
        f"(default {seconds(NODE.request_timeout)})",
    )
    parser.add_argument(
        "--peer-timeout",
        type=duration,
        default=NODE.peer_timeout,
        metavar="D",
        help=f"per-request timeout of messages to peers (default {seconds(NODE.peer_timeout)})",
    )
    parser.add_argument(
        "--election-timeout",
        type=election_timeout,
        default=NODE.election_timeout,
        metavar="D",
        help="a follower that hears no leader for a random 1-2x this starts an election; an "
        "acceptor that heard one within it refuses other candidates; a leader that hears no "
        "majority within it steps down; heartbeats go every fifth of it "
        f"(default {seconds(NODE.election_timeout)}; at least "
        f"{seconds(MIN_ELECTION_TICKS * TICK_INTERVAL)})",
    )
    parser.add_argument(
        "--window",
        type=positive,
        default=NODE.window,
        help=f"Accept batches in flight at once (default {NODE.window})",
    )
    parser.add_argument(
        "--max-batch",
        type=positive,
        default=NODE.max_batch,
        help=f"most values per Accept batch (default {NODE.max_batch})",
    )
    parser.add_argument(
        "--pipeline-batch",
        type=positive,
        default=NODE.pipeline_batch,
        help="a batch beyond the first in flight waits to hold as many values as those in "
        f"flight, or this many (default {NODE.pipeline_batch})",
    )
    parser.add_argument(
        "--min-batch",
        type=positive,
        default=NODE.min_batch,
        help="with no batch in flight, a smaller one waits up to --linger for the clients "
        "just answered to propose again: a lone client does not wait "
        f"(default {NODE.min_batch}; 1 never waits)",
    )
    parser.add_argument(
        "--linger",
        type=duration,
        default=NODE.linger,
        metavar="D",
        help=f"longest wait of a batch smaller than --min-batch (default {seconds(NODE.linger)})",
    )
    parser.add_argument(
        "--linger-fill",
        type=fraction,
        default=NODE.linger_fill,
        metavar="F",
        help="a small batch waits only while the recent arrival rate promises at least this "
        "share of the answered clients still to come within --linger, e.g. 0.5 for clients "
        f"that think between requests (default {NODE.linger_fill:g}: whatever the rate)",
    )
    parser.add_argument(
        "--thrifty",
        choices=("on", "off"),
        default="on" if NODE.thrifty else "off",
        help="on: the leader sends each round to the majority's fastest peers only, and to the "
        "others when they are late (thrifty Paxos; the others catch up from the commit index); "
        f"off: to every peer (default {'on' if NODE.thrifty else 'off'})",
    )
    parser.add_argument(
        "--peer-client",
        choices=PEER_CLIENTS,
        default=NODE.peer_client,
        help="HTTP client of the fan-out to peers: lane (default; requests written and answers "
        "read straight on kept-alive sockets, https peers as pooled), pooled (Tornado's "
        "AsyncHTTPClient interface on kept-alive IOStreams) or curl (Tornado's "
        "CurlAsyncHTTPClient; needs pycurl: pip install 'paxgos[curl]')",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=NODE.event_loop,
        help="the event loop a node runs on: uvloop (default; libuv's, installed with paxgos "
        "except on Windows) or asyncio (the standard library's)",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve HTTPS with this certificate (PEM) and present it to peers; peer URLs are "
        "then https://",
    )
    parser.add_argument("--tls-key", default=None, metavar="FILE", help="the key of --tls-cert")
    parser.add_argument(
        "--tls-ca",
        default=None,
        metavar="FILE",
        help="CA bundle (PEM) that peers' certificates must be signed by, as etcd's "
        "--peer-trusted-ca-file with --peer-client-cert-auth: protocol messages need a client "
        "certificate from it; clients may connect without one",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run with no cluster secret: peer messages and fault controls are NOT "
        "authenticated (anyone who reaches a port can forge protocol messages)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="debug logs every phase of every round",
    )


def node_options(args: argparse.Namespace, node_id: int, urls: list[str]) -> NodeOptions:
    return NodeOptions(
        node_id=node_id,
        urls=urls,
        storage=args.storage,
        data_dir=args.data_dir,
        cluster_id=args.cluster_id,
        fresh=args.fresh,
        db_max_pages=args.db_max_pages,
        faults=FaultFlags(args.failure_rate, args.timeout, args.endpoint_random_cap),
        request_timeout=args.request_timeout,
        peer_timeout=args.peer_timeout,
        window=args.window,
        max_batch=args.max_batch,
        pipeline_batch=args.pipeline_batch,
        min_batch=args.min_batch,
        linger=args.linger,
        linger_fill=args.linger_fill,
        thrifty=args.thrifty == "on",
        election_timeout=args.election_timeout,
        secret_file=args.secret_file,
        insecure=args.insecure,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        peer_client=args.peer_client,
        event_loop=args.event_loop,
    )


def passthrough(args: argparse.Namespace) -> list[str]:
    """The node options of ``args`` as command-line words, for the supervisor's children."""
    words = [
        "--storage",
        args.storage,
        "--failure-rate",
        str(args.failure_rate),
        "--timeout",
        f"{args.timeout}s",
        "--endpoint-random-cap",
        f"{args.endpoint_random_cap}s",
        "--request-timeout",
        f"{args.request_timeout}s",
        "--peer-timeout",
        f"{args.peer_timeout}s",
        "--window",
        str(args.window),
        "--max-batch",
        str(args.max_batch),
        "--pipeline-batch",
        str(args.pipeline_batch),
        "--min-batch",
        str(args.min_batch),
        "--linger",
        f"{args.linger}s",
        "--linger-fill",
        str(args.linger_fill),
        "--thrifty",
        args.thrifty,
        "--peer-client",
        args.peer_client,
        "--event-loop",
        args.event_loop,
        "--election-timeout",
        f"{args.election_timeout}s",
        "--log-level",
        args.log_level,
    ]
    words += ["--data-dir", args.data_dir, "--cluster-id", args.cluster_id]
    for flag, value in (
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
        ("--tls-ca", args.tls_ca),
    ):
        if value is not None:
            words += [flag, str(Path(value).resolve())]
    if args.insecure:
        words.append("--insecure")
    else:
        words += ["--secret-file", args.secret_file]
    if args.fresh:
        words.append("--fresh")
    if args.db_max_pages is not None:
        words += ["--db-max-pages", str(args.db_max_pages)]
    return words


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    # One access-log line per request would drown everything under load; keep errors only.
    if level != "debug":
        logging.getLogger("tornado.access").setLevel(logging.WARNING)


def node_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paxgos node", description="Run one Paxgos node (acceptor, learner, proposer)."
    )
    parser.add_argument("--version", action="version", version=f"paxgos {__version__}")
    parser.add_argument("--id", type=int, required=True, help="this node's index in --peers")
    parser.add_argument(
        "--peers",
        required=True,
        help="comma-separated base URLs of every node in id order, this one included",
    )
    parser.add_argument(
        "--cluster-id",
        default=None,
        help="name of the cluster, the same on every node; a data file of another cluster is "
        "refused (default: the one in DATA_DIR/cluster-id, which the supervisor writes)",
    )
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="FILE",
        help="the cluster secret, the same file on every node, mode 0600: it signs peer "
        "messages and unlocks the fault controls (default: DATA_DIR/secret, which the "
        "supervisor writes)",
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this node goes away (used by the supervisor)",
    )
    add_node_options(parser)
    return parser


def cluster_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paxgos",
        description="Run a local Paxgos cluster, one process per node "
        "('paxgos node --help' runs a single node).",
    )
    parser.add_argument("--version", action="version", version=f"paxgos {__version__}")
    parser.add_argument("--nodes", type=int, default=5, help="cluster size (at least 3; default 5)")
    parser.add_argument(
        "--starting-port",
        type=int,
        default=9000,
        help="port of node 0; node i listens on port+i (0 picks free ports; default 9000)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--restart",
        choices=["on-failure", "no"],
        default="on-failure",
        help="on-failure (default) restarts a node that crashed or was killed, with Docker's "
        "back-off; no leaves it down (the supervisor exits once every node is down)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        metavar="P",
        help="port of the dashboard (default: the one below node 0's, 8999 for 9000; a free "
        "one with --starting-port 0; 0 picks a free one)",
    )
    parser.add_argument(
        "--dashboard-host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address the dashboard serves on (default 127.0.0.1: it can stall and kill nodes)",
    )
    parser.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        help="serve no dashboard",
    )
    add_node_options(parser)
    return parser


def tls_problem(args: argparse.Namespace, urls: Sequence[str]) -> str | None:
    """Why the TLS options do not fit together (or with the URLs), or ``None``."""
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    if args.tls_ca is not None and args.tls_cert is None:
        return "--tls-ca needs --tls-cert and --tls-key (peers present their certificate)"
    scheme = "https" if args.tls_cert else "http"
    wrong = [u for u in urls if not u.startswith(scheme + "://")]
    if wrong:
        return f"with{'' if args.tls_cert else 'out'} --tls-cert every peer URL is {scheme}://"
    return None


def run_node(argv: Sequence[str]) -> int:
    args = node_parser().parse_args(argv)
    urls = [u.strip().rstrip("/") for u in args.peers.split(",") if u.strip()]
    if len(urls) < 3:
        print("paxgos node: --peers must list at least 3 nodes", file=sys.stderr)
        return 2
    if not 0 <= args.id < len(urls):
        print(f"paxgos node: --id must be between 0 and {len(urls) - 1}", file=sys.stderr)
        return 2
    problem = tls_problem(args, urls)
    if problem:
        print(f"paxgos node: {problem}", file=sys.stderr)
        return 2
    if args.cluster_id is None:  # the id the supervisor kept with this data, if any
        from paxgos.net.server import cluster_id_path, stored_cluster_id

        args.cluster_id = stored_cluster_id(args.data_dir)
        if args.cluster_id is None and args.storage == "sqlite":
            print(
                f"paxgos node {args.id}: no cluster id: pass --cluster-id NAME (the same on "
                f"every node), or keep one in {cluster_id_path(args.data_dir)}",
                file=sys.stderr,
            )
            return 2
    setup_logging(args.log_level)
    try:
        run(node_options(args, args.id, urls), exit_with_parent=args.exit_with_parent)
    except StartupError as exc:
        print(f"paxgos node {args.id}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "node":
        return run_node(argv[1:])
    if argv and argv[0] == "dashboard":
        return run_standalone(argv[1:])
    args = cluster_parser().parse_args(argv)
    return run_cluster(args, passthrough)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
