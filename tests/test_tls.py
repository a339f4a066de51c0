"""TLS between real node processes: HTTPS for clients and peers, peers verified against the
cluster's CA (``--tls-cert/--tls-key/--tls-ca``), with certificates made in the test
(``trustme``)."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from paxgos.cluster import free_ports
from paxgos.net.auth import SIGNATURE, PeerAuth
from paxgos.testing.procs import LocalNodes

trustme = pytest.importorskip("trustme", reason="the TLS tests make certificates with trustme")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A cluster CA with one certificate for 127.0.0.1 (server and client use), and a second,
    foreign CA with a certificate of its own."""
    files: dict[str, Path] = {}
    for name in ("ours", "theirs"):
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        files[f"{name}-ca"] = tmp_path / f"{name}-ca.pem"
        ca.cert_pem.write_to_path(str(files[f"{name}-ca"]))
        files[f"{name}-cert"] = tmp_path / f"{name}-cert.pem"
        cert.cert_chain_pems[0].write_to_path(str(files[f"{name}-cert"]))
        files[f"{name}-key"] = tmp_path / f"{name}-key.pem"
        cert.private_key_pem.write_to_path(str(files[f"{name}-key"]))
    return files


@pytest.fixture
def tls_nodes(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalNodes]:
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ours-ca"]))  # this process trusts the CA
    urls = [f"https://127.0.0.1:{port}" for port in free_ports("127.0.0.1", 3)]
    tls = ["--tls-cert", str(pki["ours-cert"]), "--tls-key", str(pki["ours-key"])]
    nodes = LocalNodes(3, tmp_path / "run", [*tls, "--tls-ca", str(pki["ours-ca"])], urls=urls)
    try:
        yield nodes.start()
    finally:
        nodes.close()


def https(
    url: str,
    context: ssl.SSLContext,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_tls_cluster_commits_over_https_and_every_node_learns(tls_nodes: LocalNodes) -> None:
    client = ssl.create_default_context()  # trusts the test CA (SSL_CERT_FILE); no client cert
    for value in (7, 8, 9):
        code, body = https(tls_nodes.urls[0] + f"/propose/{value}", client)
        assert code == 200 and body.endswith(f"Value {value}\n"), body
    tls_nodes.wait_converged(at_least=3)
    for i in range(3):
        assert [v for _, v in tls_nodes.history(i)][-3:] == [7, 8, 9]


def test_peer_messages_need_a_client_certificate_of_the_cluster_ca(
    tls_nodes: LocalNodes, pki: dict[str, Path]
) -> None:
    before = tls_nodes.status(1)
    body = b'{"type":"accept","sender":0,"ballot":[900,0],"first":1,"values":[666],"commit":0}'
    signature = PeerAuth(tls_nodes.secret.encode() if tls_nodes.secret else None).sign_request(
        "POST", "/accept", body
    )
    signed = {SIGNATURE: signature, "Content-Type": "application/json"}
    # The secret alone is not enough: no client certificate.
    code, text = https(tls_nodes.urls[1] + "/accept", ssl.create_default_context(), body, signed)
    assert code == 401 and "client certificate" in text, text
    # A certificate from another CA fails the handshake.
    foreign = ssl.create_default_context()
    foreign.load_cert_chain(pki["theirs-cert"], pki["theirs-key"])
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        https(tls_nodes.urls[1] + "/accept", foreign, body, signed)
    # Plain HTTP to a TLS port gets nowhere.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(tls_nodes.urls[1].replace("https", "http") + "/status", timeout=5)
    after = tls_nodes.status(1)
    assert after["promised"] == before["promised"] and after["ballot"] == before["ballot"]
    assert 666 not in [v for _, v in tls_nodes.history(1)]
