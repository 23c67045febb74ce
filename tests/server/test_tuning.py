"""``server/tuning.py``: what ``actors serve`` sets for its process, checked in a fresh interpreter
(the settings are process-wide, so never in the test process itself)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json, apsw
from server.tuning import GC_THRESHOLD_0, tune_process
tune_process()
conn = apsw.Connection(":memory:")
conn.execute("CREATE TABLE t(x)")
conn.execute("INSERT INTO t VALUES (1), (2), (3)")
try:
    tune_process()
    again = "applied"
except RuntimeError as exc:
    again = str(exc)
print(json.dumps({
    "lookaside": conn.status(apsw.SQLITE_DBSTATUS_LOOKASIDE_USED),
    "threshold": gc.get_threshold()[0], "expected": GC_THRESHOLD_0,
    "frozen": gc.get_freeze_count(), "again": again,
}))
"""


def _probe(code: str) -> dict[str, object]:
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_connections_opened_after_tuning_use_no_lookaside_and_the_collector_is_tuned() -> None:
    seen = _probe(_PROBE)
    assert seen["lookaside"] == [0, 0]
    assert seen["threshold"] == seen["expected"]
    assert isinstance(seen["frozen"], int)
    assert seen["frozen"] > 0


def test_without_tuning_sqlite_gives_each_connection_lookaside() -> None:
    # The control: the probe above would pass vacuously if SQLite never used lookaside here.
    seen = _probe(_PROBE.replace("tune_process()\nconn", "conn", 1))
    assert seen["lookaside"] != [0, 0]


def test_tuning_after_a_connection_opened_refuses_instead_of_half_applying() -> None:
    seen = _probe(_PROBE)
    assert seen["again"] == "tune_process must run before the first SQLite connection opens"
