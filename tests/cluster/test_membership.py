"""The cluster file and the link handshake, without a network: what is accepted, what is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.cluster import handshake
from server.cluster.handshake import Auth, HandshakeRefused
from server.cluster.membership import ClusterFileError, parse_membership
from tests.fuzz.strategies import FUZZ, cbor_values
from tests.server.nodes import ENV

#: maps shaped like an auth message, with fields of any type (the interesting part of the space)
_auth_like = st.fixed_dictionaries(
    {"t": st.sampled_from(["auth", "challenge", "x"])},
    optional={
        "node": st.sampled_from(["n1", "n2", "n9"]) | cbor_values,
        "epoch": st.integers() | cbor_values,
        "digest": st.text(max_size=70) | cbor_values,
        "nonce": st.binary(min_size=31, max_size=33) | cbor_values,
        "mac": st.binary(min_size=31, max_size=33) | cbor_values,
    },
)

GOOD = """
secret = "a long random string, long enough"
[[nodes]]
id = "n1"
url = "http://127.0.0.1:8081"
[[nodes]]
id = "n2"
url = "http://127.0.0.1:8082/"
"""


def test_a_good_file_gives_sorted_members_and_a_digest_that_ignores_order_and_secret():
    a = parse_membership(GOOD, "n2", {})
    assert [(m.id, m.url) for m in a.members] == [
        ("n1", "http://127.0.0.1:8081"),
        ("n2", "http://127.0.0.1:8082"),
    ]
    assert a.me.id == "n2"
    assert [m.id for m in a.peers] == ["n1"]
    reordered = GOOD.replace('"n1"', '"tmp"').replace('"n2"', '"n1"').replace('"tmp"', '"n2"')
    reordered = reordered.replace("8081", "tmp").replace("8082/", "8081").replace("tmp", "8082")
    other_secret = GOOD.replace("long enough", "different, still long")
    assert parse_membership(reordered, "n1", {}).digest == a.digest
    assert parse_membership(other_secret, "n1", {}).digest == a.digest
    assert parse_membership(GOOD.replace("8082", "8083"), "n1", {}).digest != a.digest


def test_the_secret_variable_overrides_the_files_secret():
    membership = parse_membership(GOOD, "n1", {"ACTORS_CLUSTER_SECRET": "from the environment!!"})
    assert membership.secret == b"from the environment!!"
    without = GOOD.replace('secret = "a long random string, long enough"', "")
    assert parse_membership(without, "n1", {"ACTORS_CLUSTER_SECRET": "x" * 16}).secret == b"x" * 16


@pytest.mark.parametrize(
    ("text", "node_id", "problem"),
    [
        ("secret = ", "n1", "not valid TOML"),
        (GOOD, "n9", "node id 'n9' is not in the file"),
        (GOOD, None, "--node-id"),
        (GOOD.replace('id = "n2"', 'id = "n1"'), "n1", "duplicate node id 'n1'"),
        (GOOD.replace("8082/", "8081"), "n1", "duplicate node url"),
        (GOOD.replace('secret = "a long random string, long enough"', ""), "n1", "no secret"),
        (GOOD.replace("a long random string, long enough", "short"), "n1", "shorter than 16 bytes"),
        (GOOD.replace("http://127.0.0.1:8081", "ftp://x"), "n1", "url must look like"),
        (GOOD.replace("http://127.0.0.1:8081", "http://127.0.0.1"), "n1", "url must look like"),
        (GOOD + "\nport = 3\n", "n1", "unknown key 'port'"),
        ('secret = "0123456789abcdefgh"\n', "n1", "no [[nodes]]"),
        (GOOD.replace('id = "n1"', "id = 1"), "n2", "id must be a non-empty string"),
    ],
)
def test_a_bad_file_is_refused_with_one_line_naming_the_problem(text, node_id, problem):
    with pytest.raises(ClusterFileError) as raised:
        parse_membership(text, node_id, {})
    message = str(raised.value)
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "flags", "problem"),
    [
        (GOOD, ["--node-id", "n7"], "node id 'n7' is not in the file"),
        (GOOD.replace('id = "n2"', 'id = "n1"'), ["--node-id", "n1"], "duplicate node id"),
        ("not toml [", ["--node-id", "n1"], "not valid TOML"),
    ],
)
def test_actors_serve_stops_at_start_with_exit_2_and_one_line(tmp_path: Path, text, flags, problem):
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(text)
    argv = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")]
    done = subprocess.run(
        [*argv, "--cluster", str(cluster), *flags], capture_output=True, env=ENV, timeout=30
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert problem in lines[0]
    assert done.stdout == b""  # nothing was bound


def _auth(membership_text: str, me: str, challenge: bytes, **changes: object) -> bytes:
    m = parse_membership(membership_text, me, {})
    nonce = handshake.new_nonce()
    peer = "n1" if me == "n2" else "n2"
    mac = handshake.dial_mac(m.secret, challenge, nonce, me, peer, m.digest)
    fields = {"node": me, "epoch": m.epoch, "digest": m.digest, "nonce": nonce, "mac": mac, **changes}
    return handshake.auth_message(Auth(**fields))  # type: ignore[arg-type]


def test_the_link_handshake_accepts_a_member_with_the_secret_and_refuses_everything_else():
    acceptor = parse_membership(GOOD, "n1", {})
    challenge = handshake.new_nonce()
    assert handshake.verify_auth(acceptor, challenge, _auth(GOOD, "n2", challenge)).node == "n2"
    wrong_secret = GOOD.replace("long enough", "guessed wrong")
    refusals = {
        "secret": _auth(wrong_secret, "n2", challenge),
        "replay": _auth(GOOD, "n2", handshake.new_nonce()),  # proof over another challenge
        "self": _auth(
            GOOD.replace('"n2"', '"n1x"').replace('"n1"', '"n2"').replace('"n1x"', '"n1"'),
            "n2",
            challenge,
            node="n1",
        ),
        "membership": _auth(GOOD.replace("8082", "9999"), "n2", challenge),
    }
    codes = {}
    for case, message in refusals.items():
        with pytest.raises(HandshakeRefused) as raised:
            handshake.verify_auth(acceptor, challenge, message)
        codes[case] = raised.value.code
    assert codes == {"secret": 4401, "replay": 4401, "self": 4401, "membership": 4409}
    for garbage in (b"", b"\xff", "text", b"\xa1at\x01"):
        with pytest.raises(HandshakeRefused):
            handshake.verify_auth(acceptor, challenge, garbage)


def test_the_acceptors_proof_is_not_the_dialers_replayed():
    args = (b"k" * 32, b"c" * 32, b"n" * 32, "n1", "n2", "d")
    assert handshake.accept_mac(*args) != handshake.dial_mac(*args)


@FUZZ
@given(st.binary(max_size=300) | st.builds(cbor2.dumps, cbor_values) | st.builds(cbor2.dumps, _auth_like))
def test_any_bytes_to_the_link_handshake_are_a_proof_or_a_refusal(data: bytes) -> None:
    """The node-to-node handshake frames (fuzzed): a valid proof, or HandshakeRefused, nothing else."""
    acceptor = parse_membership(GOOD, "n1", {})
    with pytest.raises(HandshakeRefused) as refused:  # no random message is a proof of the secret
        handshake.verify_auth(acceptor, b"c" * 32, data)
    assert refused.value.code in (handshake.AUTH_FAILED, handshake.MEMBERSHIP_DIFFERS)
