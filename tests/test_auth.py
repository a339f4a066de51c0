"""Unit tests of ``paxgos.net.auth``: signatures of peer requests and answers, the bearer token,
the secret file, and the cross-origin rule."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from paxgos.net.auth import MAX_SKEW, PeerAuth, SecretError, foreign, read_secret, write_secret

SECRET = b"s" * 64
BODY = b'{"type":"learn","sender":0,"ballot":[1,0],"commit":3}'


def test_a_signed_request_passes_and_any_change_is_refused() -> None:
    auth = PeerAuth(SECRET)
    signature = auth.sign_request("POST", "/learn", BODY, now=1000.0)
    assert auth.check_request("POST", "/learn", BODY, signature, now=1000.5) is None
    changed = [
        ("POST", "/learn", BODY.replace(b"3", b"4"), signature),  # the body
        ("POST", "/accept", BODY, signature),  # the target
        ("GET", "/learn", BODY, signature),  # the method
        ("POST", "/learn", BODY, signature.replace(signature[:4], "9999", 1)),  # the time
    ]
    for method, target, body, sig in changed:
        assert auth.check_request(method, target, body, sig, now=1000.5) is not None
    other = PeerAuth(b"t" * 64).sign_request("POST", "/learn", BODY, now=1000.0)
    assert "bad signature" in (auth.check_request("POST", "/learn", BODY, other, now=1000.5) or "")
    for missing in (None, "", "garbage", "12.", ".abc", "1" * 40 + ".ab"):
        assert auth.check_request("POST", "/learn", BODY, missing, now=1000.5) is not None


def test_an_old_or_future_signature_is_refused() -> None:
    auth = PeerAuth(SECRET)
    signature = auth.sign_request("POST", "/learn", BODY, now=1000.0)
    assert auth.check_request("POST", "/learn", BODY, signature, now=1000 + MAX_SKEW - 1) is None
    late = auth.check_request("POST", "/learn", BODY, signature, now=1000 + MAX_SKEW + 1)
    assert late is not None and "away from this node's clock" in late
    assert auth.check_request("POST", "/learn", BODY, signature, now=1000 - MAX_SKEW - 1)


def test_an_answer_is_bound_to_its_request() -> None:
    auth = PeerAuth(SECRET)
    first = auth.sign_request("POST", "/learn", BODY, now=1.0)
    second = auth.sign_request("POST", "/learn", BODY, now=2.0)
    answer = b'{"type":"learn_ack"}'
    signed = auth.sign_reply(first, 200, answer)
    assert auth.check_reply(first, 200, answer, signed)
    assert not auth.check_reply(second, 200, answer, signed)  # replayed onto another request
    assert not auth.check_reply(first, 204, answer, signed)
    assert not auth.check_reply(first, 200, answer + b" ", signed)
    assert not auth.check_reply(first, 200, answer, None)


def test_insecure_signs_nothing_and_lets_everything_through() -> None:
    auth = PeerAuth(None)
    assert auth.sign_request("POST", "/learn", BODY) == ""
    assert auth.check_request("POST", "/learn", BODY, None) is None
    assert auth.check_reply("", 200, b"", None)
    assert auth.check_token(None) is None


def test_bearer_token() -> None:
    auth = PeerAuth(SECRET)
    assert auth.check_token(f"Bearer {SECRET.decode()}") is None
    assert auth.check_token(f"bearer {SECRET.decode()}") is None
    assert auth.check_token("Bearer wrong") == "wrong cluster secret"
    for bad in (None, "", "Basic abc", "Bearer", SECRET.decode()):
        assert "needs the cluster secret" in (auth.check_token(bad) or "")


def test_secret_file_is_private_and_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "d" / "secret"
    write_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_secret(path)) == 64
    path.chmod(0o640)
    with pytest.raises(SecretError, match="readable by others"):
        read_secret(path)
    with pytest.raises(SecretError, match="cannot read secret file"):
        read_secret(tmp_path / "missing")
    with pytest.raises(SecretError, match="not a regular file"):
        read_secret(tmp_path)


OWN = "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "origin, site, host",
    [
        (None, None, "127.0.0.1:9000"),  # curl
        (OWN, "same-origin", "127.0.0.1:9000"),  # a page the node serves itself
        (None, "none", "localhost:9000"),  # typed in the address bar
        (None, None, "[::1]:9000"),
        (None, None, None),  # HTTP/1.0 without Host
    ],
)
def test_requests_of_the_node_itself_or_no_browser_pass(
    origin: str | None, site: str | None, host: str | None
) -> None:
    assert foreign(origin, site, host, OWN) is None


@pytest.mark.parametrize(
    "origin, site, host",
    [
        ("http://evil.example", None, "127.0.0.1:9000"),
        ("null", None, "127.0.0.1:9000"),  # a sandboxed frame or a file:// page
        ("http://127.0.0.1:9001", None, "127.0.0.1:9000"),  # another node's port: another origin
        (None, "cross-site", "127.0.0.1:9000"),
        (None, "same-site", "127.0.0.1:9000"),
        (None, None, "evil.example:9000"),  # DNS rebinding
    ],
)
def test_requests_from_another_site_are_refused(
    origin: str | None, site: str | None, host: str | None
) -> None:
    assert foreign(origin, site, host, OWN) is not None


def test_a_node_named_by_host_name_accepts_its_own_name() -> None:
    assert foreign(None, None, "node-1:9000", "http://node-1:9000") is None
    assert foreign(None, None, "node-2:9000", "http://node-1:9000") is not None
