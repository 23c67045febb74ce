"""Headless Chromium driven over the Chrome DevTools Protocol (CDP), for the demo page test.

Policy: the browser is the Debian package ``chromium`` (``scripts/test`` installs it); nothing is
downloaded, and no Playwright or Selenium. :func:`open_browser` starts it with
``--remote-debugging-port=0``, reads the DevTools URL from its stderr and speaks CDP as JSON over
one trio-websocket connection, in "flat" mode (each page is a session id on that connection),
one command at a time (a test is sequential, so no reader task is needed).

A browser runs in real time, so waits here are polls with short sleeps, each bounded by
``trio.fail_after`` (``Page.wait_for``); on timeout the assertion shows the page's text and console.
Chromium is always killed when the block is left, and its profile lives in the test's ``tmp_path``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless=new",
    "--remote-debugging-port=0",
    "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers have a small /dev/shm
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    # both test pages are "background" tabs at times; keep their timers and sockets at full speed
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    "--window-size=1100,760",
]
DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")
#: a cold browser on a busy machine
STARTUP_TIMEOUT = 30.0
#: one CDP command
COMMAND_TIMEOUT = 15.0
#: one condition on a page (sockets connecting, a message arriving)
WAIT_TIMEOUT = 15.0
POLL_SECONDS = 0.05
#: screenshots arrive base64-encoded in one frame
MAX_FRAME_BYTES = 64 * 1024 * 1024


class CdpError(Exception):
    """A CDP command failed, or a page's script threw."""


@dataclass
class Browser:
    """One CDP connection; commands are sent one at a time, as the test awaits them."""

    ws: WebSocketConnection
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pages: dict[str, Page] = field(default_factory=dict)  # by CDP session id

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        """The result of one CDP command (CdpError if it failed).

        Reads the connection until the reply comes; the events read meanwhile go to their page.
        """
        request_id = next(self._ids)
        message: dict[str, Any] = {"id": request_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        with trio.fail_after(COMMAND_TIMEOUT):
            await self.ws.send_message(json.dumps(message))
            while True:
                reply = json.loads(await self.ws.get_message())
                if reply.get("id") == request_id:
                    break
                page = self._pages.get(reply.get("sessionId", ""))
                if page is not None and "method" in reply:
                    page.record(reply["method"], reply.get("params", {}))
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def new_page(self) -> Page:
        """A new page in its own window, attached, with its console recorded."""
        # a window each, so neither is a hidden tab that stops painting (screenshots wait for a frame)
        target = await self.send("Target.createTarget", {"url": "about:blank", "newWindow": True})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = self._pages[attached["sessionId"]] = Page(self, attached["sessionId"])
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page


@dataclass
class Page:
    browser: Browser
    session: str
    console: list[str] = field(default_factory=list)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    def record(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console.append(f"exception: {details.get('exception', {}).get('description', details)}")
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self.console.append(f"log.{entry['level']}: {entry['text']}")

    async def navigate(self, url: str) -> None:
        reply = await self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"navigating to {url}: {reply['errorText']}")
        await self.wait_for("document.readyState === 'complete'", f"{url} to load")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (CdpError if it throws)."""
        reply = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout: float = WAIT_TIMEOUT) -> Any:
        """Poll ``expression`` until it is truthy; AssertionError naming ``what`` after ``timeout``."""
        try:
            with trio.fail_after(timeout):
                while not (value := await self.evaluate(expression)):  # noqa: ASYNC110  # no event to wait on
                    await trio.sleep(POLL_SECONDS)
                return value
        except trio.TooSlowError:
            text = await self.evaluate("document.body ? document.body.innerText : ''")
            raise AssertionError(
                f"waited {timeout} s for {what}; the page reads:\n{text}\nconsole:\n"
                + "\n".join(self.console)
            ) from None

    async def click(self, selector: str) -> None:
        """A real left click (mouse events at the element's centre), as a user would."""
        x, y = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        await self.send("Page.bringToFront")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    async def type(self, selector: str, text: str) -> None:
        """Click into the field and type ``text`` (as an input method would insert it)."""
        await self.click(selector)
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path) -> bytes:
        """Save a PNG of what the page shows now to ``path``; returns its bytes."""
        await self.send("Page.bringToFront")
        data = base64.b64decode((await self.send("Page.captureScreenshot", {"format": "png"}))["data"])
        await trio.Path(path).write_bytes(data)
        return data


@asynccontextmanager
async def open_browser(tmp_path: Path) -> AsyncIterator[Browser]:
    """A headless Chromium for the block; killed on leaving, whatever happened."""
    assert CHROMIUM is not None, "the chromium package is not installed (scripts/test installs it)"
    log_path = tmp_path / "chromium.log"
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            url = await _devtools_url(process, log_path)
        try:
            async with open_websocket_url(url, max_message_size=MAX_FRAME_BYTES) as ws:
                yield Browser(ws)
        except BaseExceptionGroup as group:  # trio-websocket's nursery wraps the test's own failure
            if len(group.exceptions) != 1:
                raise
            raise group.exceptions[0] from None
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(5):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _devtools_url(process: trio.Process, log_path: Path) -> str:
    """The browser's DevTools WebSocket URL, from the line Chromium writes to stderr."""
    while True:
        match = DEVTOOLS_LINE.search(await trio.Path(log_path).read_bytes())
        if match:
            return match.group(1).decode()
        if process.poll() is not None:
            log = await trio.Path(log_path).read_text(errors="replace")
            raise RuntimeError(f"chromium exited {process.returncode}:\n{log}")
        await trio.sleep(POLL_SECONDS)
