"""What a file-membership node starts from, and which applied memberships it accepts (no processes:
the saved state is a real file in a temporary data folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cluster.applied import Applied, sign, verify
from server.cluster.file_member import STATE_FILE, FileMember
from server.cluster.membership import ClusterFileError, Member, Membership, parse_membership

SECRET = "file-member-secret-0123456789"
N1, N2, N3 = (Member(f"n{i}", f"http://127.0.0.1:{8080 + i}") for i in (1, 2, 3))


def cluster_file(*members: Member, epoch: int | None = None, node: str = "n1") -> Membership:
    lines = [f'secret = "{SECRET}"'] + ([f"epoch = {epoch}"] if epoch is not None else [])
    for m in members:
        lines += ["[[nodes]]", f'id = "{m.id}"', f'url = "{m.url}"']
    return parse_membership("\n".join(lines), node, {})


def save(
    data_dir: Path, applied: Applied, secret: str = SECRET, settled: dict[str, int] | None = None
) -> None:
    state = {
        "membership": applied.document(),
        "mac": sign(secret.encode(), applied),
        "settled": settled or {},
    }
    (data_dir / STATE_FILE).write_text(json.dumps(state))


def test_without_a_saved_change_the_node_starts_from_its_file(tmp_path: Path) -> None:
    member = FileMember(cluster_file(N1, N2), tmp_path)
    membership = member.start()
    assert (membership.epoch, [m.id for m in membership.members]) == (1, ["n1", "n2"])
    assert not member.changed


def test_a_saved_change_wins_over_an_older_file_and_a_newer_file_waits_for_its_signed_change(
    tmp_path: Path,
) -> None:
    change = Applied(3, (N1, N2, N3), frozenset(), (N1, N2), frozenset())
    save(tmp_path, change, settled={"n2": 3})
    member = FileMember(cluster_file(N1, N2), tmp_path)
    membership = member.start()
    assert (membership.epoch, [m.id for m in membership.members]) == (3, ["n1", "n2", "n3"])
    assert member.settled == {"n2": 3}
    ahead = FileMember(cluster_file(N1, epoch=7), tmp_path)
    assert ahead.start().epoch == 3  # only a signed change is adopted, from the peers


def test_a_file_with_other_members_under_the_saved_epoch_stops_the_node(tmp_path: Path) -> None:
    save(tmp_path, Applied(2, (N1, N2, N3), frozenset(), (N1, N2), frozenset()))
    with pytest.raises(ClusterFileError, match="both epoch 2 but list other nodes"):
        FileMember(cluster_file(N1, N2, epoch=2), tmp_path).start()


def test_a_node_that_left_does_not_start_again_on_its_old_folder(tmp_path: Path) -> None:
    save(tmp_path, Applied(4, (N2, N3), frozenset(), (N1, N2, N3), frozenset({"n1"})))
    with pytest.raises(ClusterFileError, match="left the cluster at epoch 4"):
        FileMember(cluster_file(N1, N2, N3), tmp_path).start()


def test_a_saved_change_signed_with_another_secret_stops_the_node(tmp_path: Path) -> None:
    save(tmp_path, Applied(2, (N1, N2), frozenset(), (N1,), frozenset()), secret="another-secret-0123456789")
    with pytest.raises(ClusterFileError, match="not signed with this cluster's secret"):
        FileMember(cluster_file(N1, N2), tmp_path).start()


def test_a_signed_document_is_accepted_only_whole_and_well_formed() -> None:
    key = SECRET.encode()
    change = Applied(2, (N1, N2), frozenset({"n2"}), (N1, N2), frozenset())
    assert verify(key, change.document(), sign(key, change)) == change
    tampered = change.document() | {"leaving": []}
    with pytest.raises(ClusterFileError, match="not signed"):
        verify(key, tampered, sign(key, change))
    for bad, why in [
        (Applied(2, (N1,), frozenset({"n1"}), (N1,), frozenset()), "every member is leaving"),
        (Applied(1, (N1,), frozenset(), (N1,), frozenset()), "epoch must be an integer of at least 2"),
        (Applied(2, (N1,), frozenset(), (N1, N2), frozenset(), frozenset({"n1"})), "discarded must list"),
    ]:
        with pytest.raises(ClusterFileError, match=why):
            verify(key, bad.document(), sign(key, bad))
    twice = change.document() | {"members": [{"id": "n1", "url": N1.url}, {"id": "n1", "url": N2.url}]}
    with pytest.raises(ClusterFileError, match="lists a node id twice"):
        verify(key, twice, "00")
