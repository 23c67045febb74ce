"""``actors bench`` run as a user runs it, against a real node process, with tiny runs.

Every workload must finish a small ``--count`` (or a short ``--duration``) with ops and without errors,
and write a ``--json`` file that holds what the summary says. counter-hot's ok increments are checked
against the counter's final value, read back with ``actors call``. The node is the SDK tests' session
node (``conftest.py``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from client._bench_stats import Histogram
from tests.server.nodes import Node

from .test_cli import free_port, run_actors

#: a bench process: a cold interpreter, a few hundred calls, its own drain
BENCH_TIMEOUT = 60.0


def test_histogram_percentiles_are_within_one_128th_above_the_exact_ones() -> None:
    rng = random.Random(5)
    values = [rng.randrange(2**36) for _ in range(5000)] + list(range(300))
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    values.sort()
    for q in (1, 50, 90, 99, 99.9, 100):
        exact = values[max(1, round(len(values) * q / 100)) - 1]
        assert exact <= histogram.percentile(q) <= exact + exact // 128, q
    assert (histogram.count, histogram.max_ns, histogram.sum_ns) == (len(values), values[-1], sum(values))


def bench(node: Node, tmp_path: Path, *flags: str) -> tuple[dict[str, Any], str]:
    """Run ``actors bench FLAGS`` to completion; return its JSON results and its stdout."""
    out = tmp_path / "bench.json"
    result = run_actors("bench", "--url", node.url, "--json", str(out), *flags, timeout=BENCH_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


def test_counter_hot_ok_increments_equal_the_counters_final_value(node: Node, tmp_path: Path) -> None:
    data, stdout = bench(
        node,
        tmp_path,
        "--workload",
        "counter-hot",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--concurrency",
        "8",
        "--connections",
        "2",
    )
    assert data["ok"] > 0
    assert (data["errors"], data["warmup_errors"]) == ({}, 0)
    assert data["ops_per_sec"] == pytest.approx(data["ok"] / data["elapsed_s"], rel=1e-3)
    assert 0 < data["latency_ms"]["p50"] <= data["latency_ms"]["p90"] <= data["latency_ms"]["p99"]
    assert data["latency_ms"]["p99"] <= data["latency_ms"]["max"]
    assert data["bench_cpu"]["us_per_op"] > 0
    [target] = data["objects"]
    assert target["class"] == "Counter"
    assert target["name"].startswith(data["prefix"])
    final = run_actors("call", "Counter", target["name"], "get", "--url", node.url)
    assert int(final.stdout) == data["warmup_ok"] + data["ok"]
    for label in ("ops/s", "latency ms", "errors", "bench cost"):
        assert label in stdout


def test_counter_spread_counts_exactly_the_calls_asked_for(node: Node, tmp_path: Path) -> None:
    data, stdout = bench(
        node,
        tmp_path,
        "--workload",
        "counter-spread",
        "--count",
        "300",
        "--warmup",
        "0",
        "--objects",
        "50",
        "--concurrency",
        "16",
    )
    assert (data["ok"], data["errors"], data["options"]["objects"]) == (300, {}, 50)
    assert f"{data['ok']:,}" in stdout


def test_prepare_calls_every_object_once_before_the_measured_calls(node: Node, tmp_path: Path) -> None:
    data, stdout = bench(
        node,
        tmp_path,
        "--workload",
        "counter-spread",
        "--prepare",
        "--count",
        "20",
        "--warmup",
        "0",
        "--objects",
        "5",
        "--concurrency",
        "3",
    )
    assert (data["prepared"], data["ok"], data["errors"], data["warmup_errors"]) == (5, 20, {}, 0)
    assert "prepared" in stdout
    values = [
        int(run_actors("call", "Counter", f"{data['prefix']}{i}", "get", "--url", node.url).stdout)
        for i in range(5)
    ]
    assert min(values) >= 1  # each was called in the prepare pass
    assert sum(values) == data["prepared"] + data["ok"]  # and nothing else ran but the measured calls


def test_ratelimit_counts_denied_takes_apart_from_errors(node: Node, tmp_path: Path) -> None:
    # two keys of 100 tokens each, refilled at 100 per 60 s: 300 takes in well under 6 s
    data, stdout = bench(
        node,
        tmp_path,
        "--workload",
        "ratelimit",
        "--count",
        "300",
        "--warmup",
        "0",
        "--objects",
        "2",
        "--concurrency",
        "4",
    )
    allowed, denied = data["ratelimit"]["allowed"], data["ratelimit"]["denied"]
    assert (data["ok"], data["errors"], allowed + denied) == (300, {}, 300)
    assert 200 <= allowed <= 210
    assert "denied (429)" in stdout


def test_chat_fanout_delivers_every_message_to_every_member_once(node: Node, tmp_path: Path) -> None:
    data, stdout = bench(
        node,
        tmp_path,
        "--workload",
        "chat-fanout",
        "--rooms",
        "2",
        "--members",
        "3",
        "--count",
        "60",
        "--warmup",
        "0",
    )
    assert (data["ok"], data["errors"], data["chat"]["violations"]) == (60, {}, {})
    assert data["chat"]["delivered"] == 60 * 3  # every message reaches the 3 members of its room
    assert [o["class"] for o in data["objects"]] == ["ChatRoom", "ChatRoom"]
    assert "delivered msgs/s" in stdout


def test_chat_fanout_runs_for_a_duration_after_a_warmup(node: Node, tmp_path: Path) -> None:
    data, _ = bench(
        node,
        tmp_path,
        "--workload",
        "chat-fanout",
        "--rooms",
        "1",
        "--members",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
    )
    assert data["ok"] > 0
    assert data["warmup_ok"] > 0
    assert (data["errors"], data["chat"]["violations"]) == ({}, {})


@pytest.mark.parametrize(
    "flags",
    [
        ["--count", "0"],
        ["--workload", "nope"],
        ["--duration", "1", "--count", "5"],
        ["--duration", "inf"],
        ["--warmup", "-1"],
        ["--cpu", "99999"],
        ["--workload", "counter-hot", "--prepare"],
    ],
)
def test_bad_flags_exit_2(node: Node, flags: list[str]) -> None:
    result = run_actors("bench", "--url", node.url, *flags)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr


def test_an_unreachable_node_exits_4() -> None:
    result = run_actors("bench", "--url", f"http://127.0.0.1:{free_port()}", "--count", "1", "--timeout", "1")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Unreachable: " in result.stderr


def test_a_node_that_wants_a_token_refuses_a_run_without_it_exit_3(token_node: Node) -> None:
    result = run_actors("bench", "--url", token_node.url, "--count", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Unauthorized: " in result.stderr
