"""Shared fixtures and the network-test policy.

Policy (every test follows it):
- Only loopback: servers bind 127.0.0.1 on port 0 and tests read the real port back.
- Timing is virtual: any test that waits for time takes pytest-trio's ``autojump_clock`` (trio's
  ``MockClock(autojump_threshold=0)``) and asserts exact virtual durations; quiescence is reached with
  ``trio.testing.wait_all_tasks_blocked()``, never a real sleep.
- Tests that start real processes (crash safety, the node) bound every wait with ``trio.fail_after`` and
  always stop what they started, even when they fail.
- Storage is a real SQLite file per object in ``tmp_path``; nothing is mocked.
"""

from __future__ import annotations
