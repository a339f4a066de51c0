"""Who may talk to a node: the cluster secret, peer signatures, the control token, and the
cross-origin rule.

Every member of a cluster holds one secret (``DATA_DIR/secret``, written by the supervisor with
mode 0600, or ``--secret-file``).  With it:

- **Peer messages are signed.** A request between nodes (``POST /prepare``, ``/accept``,
  ``/learn`` and the catch-up ``GET /learn?...``) carries ``Paxgos-Signature: <ms>.<hex>``, an
  HMAC-SHA256 over its method, target, a millisecond timestamp and its body.  Its answer carries
  ``Paxgos-Signature: <hex>``, an HMAC over the request's signature, the status and the body, so
  an answer is bound to the one request it answers and cannot be replayed onto another.  A
  request whose signature is missing, wrong, or older or newer than ``MAX_SKEW`` is refused
  with 401 before it reaches the core; an answer that fails the check is dropped by the
  transport.  A message replayed within the skew window is a duplicate, which Paxos tolerates
  (the network may duplicate and delay any message).  One secret per cluster, as with etcd's
  shared peer token: any member may speak for any member id; per-node identities come with
  TLS client certificates (``--tls-ca``).
- **Runtime controls take the secret as a bearer token** (``Authorization: Bearer <secret>``),
  so that ``curl`` can use them: ``POST /fault/...``.  Over plain HTTP the token crosses the wire
  in the clear; outside 127.0.0.1 use TLS.
- **Browsers from other origins are refused.** A web page may send a simple request to any
  address (``<img src=.../propose/666>``, or a form POST).  A request that a browser marks as
  coming from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``, or an ``Origin``
  that is not the node's own) is refused with 403 on every endpoint that changes anything, and
  so is a ``Host`` that is neither an IP address, ``localhost``, nor the node's own host name
  (DNS rebinding).

``--insecure`` runs without a secret: nothing is signed or checked but the cross-origin rule.
Checks compare in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
import time
from hashlib import sha256
from pathlib import Path

#: The header of a peer request's and a peer answer's signature.
SIGNATURE = "Paxgos-Signature"
#: How far a signed request's timestamp may be from the receiver's clock (seconds).
MAX_SKEW = 60.0
#: The fewest characters a secret may have (``secrets.token_hex(32)`` writes 64).
MIN_SECRET = 32


class SecretError(Exception):
    """The cluster secret cannot be used; the text is a one-line reason."""


def secret_path(data_dir: str | Path) -> Path:
    """Where the supervisor keeps the cluster secret under ``data_dir``."""
    return Path(data_dir) / "secret"


def write_secret(path: Path) -> None:
    """Create a new random secret at ``path`` (mode 0600, never readable by others)."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)


def read_secret(path: str | Path) -> bytes:
    """The secret kept in ``path``, or ``SecretError`` naming what is wrong with the file."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"secret file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretError(
                f"secret file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):o});"
                f" run: chmod 600 {path}"
            )
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    if len(secret) < MIN_SECRET:
        raise SecretError(f"secret file {path} holds fewer than {MIN_SECRET} characters")
    return secret


class PeerAuth:
    """Signs and checks peer messages and control tokens with the cluster secret (``None``:
    insecure, nothing is signed and every check passes)."""

    def __init__(self, secret: bytes | None):
        self.secret = secret

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def _mac(self, data: bytes) -> str:
        assert self.secret is not None
        return hmac.new(self.secret, data, sha256).hexdigest()

    def sign_request(self, method: str, target: str, body: bytes, now: float | None = None) -> str:
        """The signature header's value for a request (``""`` when insecure)."""
        if self.secret is None:
            return ""
        stamp = int((time.time() if now is None else now) * 1000)
        return f"{stamp}.{self._mac(f'{method} {target} {stamp}'.encode() + body)}"

    def check_request(
        self, method: str, target: str, body: bytes, signature: str | None, now: float | None = None
    ) -> str | None:
        """Why a request's signature is refused, or ``None`` if it is good."""
        if self.secret is None:
            return None
        if not signature:
            return f"peer requests must carry a {SIGNATURE} header (the cluster secret's)"
        stamp, _, mac = signature.partition(".")
        if not (stamp.isdigit() and len(stamp) <= 16):
            return f"malformed {SIGNATURE} header"
        expected = self._mac(f"{method} {target} {stamp}".encode() + body)
        if not hmac.compare_digest(mac, expected):
            return "bad signature: this request was not signed with the cluster secret"
        skew = (time.time() if now is None else now) - int(stamp) / 1000
        if abs(skew) > MAX_SKEW:
            return f"signature timestamp {skew:+.0f}s away from this node's clock"
        return None

    def sign_reply(self, request_signature: str, status: int, body: bytes) -> str:
        """The signature header's value for the answer to a request signed so."""
        if self.secret is None:
            return ""
        return self._mac(f"reply {request_signature} {status} ".encode() + body)

    def check_reply(
        self, request_signature: str, status: int, body: bytes, signature: str | None
    ) -> bool:
        """Whether an answer is signed as the answer to the request signed so."""
        if self.secret is None:
            return True
        return signature is not None and hmac.compare_digest(
            signature, self.sign_reply(request_signature, status, body)
        )

    def check_token(self, authorization: str | None) -> str | None:
        """Why an ``Authorization`` header is refused for a runtime control, or ``None``."""
        if self.secret is None:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "this control needs the cluster secret: Authorization: Bearer <secret>"
        if not hmac.compare_digest(token.strip().encode(), self.secret):
            return "wrong cluster secret"
        return None


def certificate_missing(stream: object) -> str | None:
    """Why a connection may not carry peer messages under ``--tls-ca`` (no client certificate
    verified by the CA; the TLS handshake already refused one that does not verify), or
    ``None``."""
    sock = getattr(stream, "socket", None)
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return "peer messages need TLS with a client certificate"
    try:
        if getpeercert():
            return None
    except ValueError:  # handshake not done
        pass
    return "peer messages need a client certificate signed by the cluster's CA"


def _plain_host(host: str) -> str:
    """``host`` of a ``Host`` header, without its port or IPv6 brackets."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def foreign(origin: str | None, fetch_site: str | None, host: str | None, own: str) -> str | None:
    """Why a request that changes state looks like it comes from another site's web page, or
    ``None``.  ``own`` is the node's own origin (``http://127.0.0.1:9000``)."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"cross-site requests are refused (Sec-Fetch-Site: {fetch_site})"
    if origin is not None and origin != own:
        return f"requests from origin {origin[:80]} are refused"
    if host is not None:
        name = _plain_host(host)
        if name and name != "localhost" and name != _plain_host(own.partition("://")[2]):
            try:
                ipaddress.ip_address(name)
            except ValueError:
                return f"Host {name[:80]} is not this node's"
    return None
