"""A stub made from a class is typed as that class: mypy checks each call's arguments."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    from client import Client
    from server.rooms import Counter


    async def use(client: Client) -> None:
        counter = client.get(Counter, "home")
        value: int = await counter.increment(by=2)
        await counter.increment(by="x")
        untyped = client.get("Counter", "home")
        await untyped.anything(1, key="x")
        await client.call(Counter, "home", "increment", by=2, timeout=5)
    """
)


def test_mypy_flags_a_wrong_argument_on_a_typed_stub(tmp_path: Path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert errors == [
        f'{snippet}:9: error: Argument "by" to "increment" of "Counter" has incompatible type "str"; '
        'expected "int"  [arg-type]'
    ], result.stdout + result.stderr
