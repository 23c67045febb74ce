"""One runtime per data folder (``_folderlock.py``): a second one fails at start, in this process or
another, and a killed process leaves the folder free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio

from actors import App, DataFolderInUse, DurableObject, open_runtime


class Counter(DurableObject):
    async def increment(self) -> int:
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value


APP = App([Counter])

HOLDER = textwrap.dedent(
    """
    import sys, trio
    from actors import App, DurableObject, open_runtime

    class Counter(DurableObject):
        async def increment(self):
            value = self.storage.get("value", 0) + 1
            self.storage.put("value", value)
            return value

    async def main():
        async with open_runtime(App([Counter]), sys.argv[1]) as runtime:
            await runtime.get("Counter", "c").increment()
            print("holding", flush=True)
            await trio.sleep_forever()

    trio.run(main)
    """
)


async def test_a_second_runtime_on_the_same_folder_in_this_process_is_refused(tmp_path):
    async with open_runtime(APP, tmp_path) as runtime:
        assert await runtime.get("Counter", "c").increment() == 1
        with pytest.raises(DataFolderInUse, match=f"{tmp_path}.*process {os.getpid()}"):
            async with open_runtime(APP, tmp_path):
                pass  # pragma: no cover - never reached
        assert await runtime.get("Counter", "c").increment() == 2  # the first one is unharmed
    async with open_runtime(APP, tmp_path) as runtime:  # closed: the folder is free again
        assert await runtime.get("Counter", "c").increment() == 3


async def test_another_process_is_refused_until_the_holder_is_killed(tmp_path):
    holder = await trio.lowlevel.open_process(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert holder.stdout is not None
        with trio.fail_after(30):
            said = b""
            while b"\n" not in said:
                said += await holder.stdout.receive_some()
        assert said.strip() == b"holding"
        with pytest.raises(DataFolderInUse, match=f"process {holder.pid}"):
            async with open_runtime(APP, tmp_path):
                pass  # pragma: no cover - never reached
        os.killpg(holder.pid, signal.SIGKILL)
        await holder.wait()
        async with open_runtime(APP, tmp_path) as runtime:  # the kernel dropped the lock
            assert await runtime.get("Counter", "c").increment() == 2  # its commit survived
    finally:
        if holder.returncode is None:
            os.killpg(holder.pid, signal.SIGKILL)
            await holder.wait()
        if holder.stdout is not None:
            await holder.stdout.aclose()
