"""Benchmark of placement functions: balance, movement on membership change, lookup and build cost.

Run from the repository root (pytest does not collect it: the file name does not start with test_)::

    .venv/bin/python -m tests.benchmarks.bench_placement [--quick] [--only NAME,...]

For each candidate and each cluster size n in 3, 5, 10, 20, 100, 1,000 (nodes ``node-0`` ...):

- **objects max/mean**: the ids of a sample (1,000,000 ids, ``sha256("placement-<i>")``; 100,000 with
  ``--quick``) counted per owner, the largest count over the mean. Functions whose lookup costs one
  hash per node see fewer ids (``ids`` column: 500,000 / n, at least 5,000; a tenth with
  ``--quick``), or the run would take hours; at 100 and 1,000 nodes their balance is that noise.
  Even a perfect split has binomial noise: the row ``id mod n`` splits the ids evenly by
  construction and shows that floor.
- **share max/mean**: each node's exact share of the hash space, where the function has one (a
  table's slots, a ring's arcs); rendezvous gives every node 1/n of it by symmetry ("1/n").
- **add / remove**: the fraction of the sampled ids whose owner changes when ``node-new`` joins, or
  when ``node-<n/2>`` leaves, over the ideal ``1/(larger n)``: 1.00 moves only what must move.
- **lookup us**: one lookup on a prebuilt structure, timed with ``time.perf_counter_ns`` over a pass
  of up to 20,000 ids (fewer for per-node hashing), the median of 5 passes. For the chosen function
  it is ``ClusterMap.owner`` itself.
- **build ms**: building the structure from the node list: the median of 3 builds, or one if it
  took 0.5 s or more (always one with ``--quick``).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actors.placement import SLOTS, ClusterMap, slot_table

SIZES = (3, 5, 10, 20, 100, 1000)
MASK64 = (1 << 64) - 1
RING_POINTS_PER_NODE = 128
#: per-node-hashing candidates see about this many (id, node) scores per pass (a tenth with --quick),
#: and at least LINEAR_MIN_IDS ids
LINEAR_BUDGET = 500_000
LINEAR_MIN_IDS = 5_000


@dataclass(frozen=True)
class Built:
    """A placement function prebuilt for one node list."""

    owner: Callable[[str], object]  # the timed lookup
    owners: Callable[[Sequence[str]], list[str]]  # the owner of each id (bulk, for counting)
    share: Callable[[], dict[str, float] | None]  # each node's exact share of the hash space, if any


@dataclass(frozen=True)
class Candidate:
    name: str
    build: Callable[[list[str]], Built]
    linear: bool = False  # a lookup hashes once per node: sample fewer ids


def sha64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def mix64(z: int) -> int:
    """splitmix64's finalizer: a cheap bijective 64-bit mix."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK64
    return z ^ (z >> 31)


def rendezvous_sha256(nodes: list[str]) -> Built:
    """The previous ``actors/placement.py``: the highest sha256(node NUL id) wins."""

    def owner(object_hex: str) -> str:
        key = b"\0" + object_hex.encode()
        return max(nodes, key=lambda node: hashlib.sha256(node.encode() + key).digest())

    return Built(owner, lambda ids: [owner(h) for h in ids], lambda: None)


def rendezvous_mix64(nodes: list[str]) -> Built:
    """Rendezvous with precomputed node hashes and a 64-bit mix of node hash XOR the id's bits."""
    hashed = sorted((sha64(node), node) for node in nodes)

    def owner(object_hex: str) -> str:
        key = int(object_hex[:16], 16)
        return max(hashed, key=lambda pair: mix64(pair[0] ^ key))[1]

    return Built(owner, lambda ids: [owner(h) for h in ids], lambda: None)


def ring(nodes: list[str]) -> Built:
    """A hash ring with RING_POINTS_PER_NODE virtual nodes per node; the id's 64 leading bits find
    the next point clockwise with bisect."""
    points = sorted((sha64(f"{node}#{v}"), node) for node in nodes for v in range(RING_POINTS_PER_NODE))
    positions = [p for p, _ in points]
    owners = [n for _, n in points] + [points[0][1]]  # past the last point: wrap to the first

    def owner(object_hex: str) -> str:
        return owners[bisect_right(positions, int(object_hex[:16], 16))]

    def share() -> dict[str, float]:
        arcs = dict.fromkeys(nodes, 0.0)
        previous = positions[-1] - (1 << 64)
        for position, node in points:  # a point owns the arc before it
            arcs[node] += (position - previous) / 2**64
            previous = position
        return arcs

    return Built(owner, lambda ids: [owner(h) for h in ids], share)


def table_share(table: Sequence[str]) -> dict[str, float]:
    return {node: count / len(table) for node, count in Counter(table).items()}


def table_built(table: Sequence[str], index: Callable[[str], int]) -> Built:
    return Built(
        lambda h: table[index(h)], lambda ids: [table[index(h)] for h in ids], lambda: table_share(table)
    )


def maglev_table(nodes: list[str], size: int) -> list[str]:
    """Maglev (Eisenbud et al., NSDI 2016): round-robin, each node takes its next free preferred entry."""
    names = sorted(set(nodes))
    cursor = [sha64(name) % size for name in names]
    skips = [sha64(name + "#skip") % (size - 1) + 1 for name in names]
    entry = [-1] * size
    filled = 0
    while True:
        for i in range(len(names)):
            c, skip = cursor[i], skips[i]
            while entry[c] >= 0:
                c = (c + skip) % size
            entry[c] = i
            cursor[i] = (c + skip) % size
            filled += 1
            if filled == size:
                return [names[e] for e in entry]


def maglev(size: int) -> Callable[[list[str]], Built]:
    return lambda nodes: table_built(maglev_table(nodes, size), lambda h: int(h[:16], 16) % size)


def claim_table(slack_percent: int) -> Callable[[list[str]], Built]:
    def build(nodes: list[str]) -> Built:
        table = slot_table(nodes, slack_percent=slack_percent)
        return table_built(table, lambda h: int(h[:4], 16))

    return build


def chosen(nodes: list[str]) -> Built:
    """actors.placement as shipped: ClusterMap with its cached slot table."""
    cluster = ClusterMap(tuple((node, f"http://{node}") for node in nodes))
    cluster.owner("0" * 64)  # build the table now, inside the timed build
    return Built(
        cluster.owner, lambda ids: [cluster.owner(h)[0] for h in ids], lambda: table_share(slot_table(nodes))
    )


def id_mod_n(nodes: list[str]) -> Built:
    """Not a placement function (everything moves on any change): a perfect split, for the noise floor."""
    return Built(
        lambda h: nodes[int(h, 16) % len(nodes)],
        lambda ids: [nodes[int(h, 16) % len(nodes)] for h in ids],
        lambda: {node: 1 / len(nodes) for node in nodes},
    )


CANDIDATES = (
    Candidate("claim table, 2**16 slots, +3% (chosen)", chosen),
    Candidate("claim table, 2**16 slots, no slack", claim_table(0)),
    Candidate("Maglev, 65,537 entries", maglev(65537)),
    Candidate("Maglev, 655,373 entries", maglev(655373)),
    Candidate(f"ring, {RING_POINTS_PER_NODE} points per node", ring),
    Candidate("rendezvous, 64-bit mix", rendezvous_mix64, linear=True),
    Candidate("rendezvous, SHA-256 (previous)", rendezvous_sha256, linear=True),
    Candidate("id mod n (noise floor only)", id_mod_n),
)


def moved(before: list[str], after: list[str]) -> float:
    return sum(a != b for a, b in zip(before, after, strict=True)) / len(before)


def median_ns(fn: Callable[[], object], repeat: int, *, enough_ns: float = float("inf")) -> float:
    """The median time of ``repeat`` calls; one call only if it took ``enough_ns`` or more."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
        if samples[0] >= enough_ns:
            break
    return statistics.median(samples)


def measure(candidate: Candidate, n: int, ids: list[str], quick: bool) -> str:
    nodes = [f"node-{i}" for i in range(n)]
    scale = 10 if quick else 1
    sample = ids[: max(LINEAR_MIN_IDS // scale, LINEAR_BUDGET // scale // n)] if candidate.linear else ids
    build_ms = median_ns(lambda: candidate.build(nodes), 1 if quick else 3, enough_ns=0.5e9) / 1e6
    built = candidate.build(nodes)
    owners = built.owners(sample)
    counts = Counter(owners)
    balance = max(counts.values()) / (len(sample) / n)
    shares = built.share()
    share = "1/n" if shares is None else f"{max(shares.values()) * n:.3f}"
    if candidate.build is id_mod_n:
        add = remove = "—"
    else:
        added = candidate.build([*nodes, "node-new"]).owners(sample)
        removed = candidate.build([node for node in nodes if node != f"node-{n // 2}"]).owners(sample)
        add = f"{moved(owners, added) * (n + 1):.2f}"
        remove = f"{moved(owners, removed) * n:.2f}"
    timed = sample[:20_000] if not candidate.linear else sample[: max(200, 200_000 // n)]
    lookup = built.owner

    def one_pass() -> None:
        for h in timed:
            lookup(h)

    lookup_us = median_ns(one_pass, 5) / len(timed) / 1000
    return (
        f"| {candidate.name} | {n:,} | {len(sample):,} | {balance:.3f} | {share} | {add} | {remove} "
        f"| {lookup_us:.2f} | {build_ms:.1f} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 ids and one build per timing")
    parser.add_argument("--only", default="", help="comma-separated words; run candidates whose name has one")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else 1_000_000
    ids = [hashlib.sha256(f"placement-{i}".encode()).hexdigest() for i in range(count)]
    words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    chosen_ones = [c for c in CANDIDATES if not words or any(w in c.name.lower() for w in words)]
    print(f"Python {sys.version.split()[0]}, {count:,} ids, {SLOTS:,} slots\n")
    print(
        "| candidate | n | ids | objects max/mean | share max/mean | add / ideal | remove / ideal "
        "| lookup µs | build ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    started = time.perf_counter()
    for candidate in chosen_ones:
        for n in SIZES:
            print(measure(candidate, n, ids, args.quick), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
