"""The demo page at ``/``: served as one self-contained page, and working in a real browser.

The browser tests drive a real headless Chromium (``browser.py``) against real nodes: what one page
does (join, a chat message, +1) shows up in another; a page comes back by itself after its node is
killed and restarted; a token given in the page's URL reaches both its sockets and its HTTP calls.
A browser runs in real time, so waits are bounded polls rather than virtual time (``browser.py``).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from .browser import CHROMIUM, Page, open_browser
from .conftest import TOKEN
from .nodes import Node, fetch, open_node

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="the chromium package is not installed (scripts/test installs it)"
)


def _text_of(selector: str) -> str:
    return f"document.querySelector({selector!r}).textContent"


def _has_member(user: str) -> str:
    return f"[...document.querySelectorAll('#members li')].some((li) => li.dataset.user === {user!r})"


def _has_message(user: str, text: str) -> str:
    return (
        "[...document.querySelectorAll('#messages li')].some((li) =>"
        f" li.querySelector('.user').textContent === {user!r}"
        f" && li.querySelector('.text').textContent === {text!r})"
    )


async def test_the_page_is_served_without_a_token_and_loads_nothing_from_elsewhere(strict_node: Node) -> None:
    reply = await fetch(strict_node.url, "GET", "/", token=None)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    policy = reply.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; script-src 'sha256-")
    assert "connect-src 'self'" in policy
    assert reply.headers["referrer-policy"] == "no-referrer"
    html = reply.body.decode()
    assert re.findall(r"""(?:src|href)\s*=\s*(?!["']?data:)""", html) == []  # no external files
    assert "@import" not in html


async def test_the_page_is_package_data() -> None:
    page = resources.files("server").joinpath("static", "index.html")
    assert page.is_file()
    assert page.read_bytes().startswith(b"<!doctype html>")


async def _connected(page: Page) -> None:
    for channel in ("chat", "presence", "counter"):
        await page.wait_for(
            f"document.getElementById('{channel}-status').dataset.state === 'open'",
            f"the {channel} socket to open",
        )


@needs_chromium
async def test_two_browser_tabs_share_the_chat_presence_and_counter_of_a_room(
    node: Node, unique: str, tmp_path: Path
) -> None:
    room = f"demo {unique}"  # a space: the room name is percent-encoded into every path
    async with open_browser(tmp_path) as browser:
        ann, bob = await browser.new_page(), await browser.new_page()
        # the room in the fragment for one page and in the query for the other: both forms work
        await ann.navigate(f"{node.url}/#room={quote(room)}&user=ann")
        await _connected(ann)
        await bob.navigate(f"{node.url}/?room={quote(room)}&user=bob")
        await _connected(bob)

        # presence: each tab sees the other, joined on load
        await bob.wait_for(_has_member("ann"), "bob's tab to list ann")
        await ann.wait_for(_has_member("bob"), "ann's tab to list bob")
        assert await bob.evaluate(_text_of("#member-count")) == "2"

        # chat: typed and sent in ann's tab, shown in bob's (and echoed in ann's, with its seq)
        await ann.type("#message", "hello from ann")
        await ann.click("#send")
        await bob.wait_for(_has_message("ann", "hello from ann"), "ann's message in bob's tab")
        await ann.wait_for(_has_message("ann", "hello from ann"), "ann's message echoed in her tab")
        assert await ann.evaluate("document.getElementById('message').value") == ""
        await bob.type("#message", "hi ann")
        await bob.click("#send")
        await ann.wait_for(_has_message("bob", "hi ann"), "bob's reply in ann's tab")

        # counter: +1 clicked in ann's tab, the value in bob's tab comes from his socket
        await bob.wait_for(f"{_text_of('#counter-value')} === '0'", "bob's counter to read 0")
        await ann.click("#increment")
        await bob.wait_for(f"{_text_of('#counter-value')} === '1'", "bob's counter to read 1")
        await ann.click("#increment")
        await bob.wait_for(f"{_text_of('#counter-value')} === '2'", "bob's counter to read 2")

        screenshot = await bob.screenshot(tmp_path / "demo-page.png")
        assert screenshot.startswith(PNG_SIGNATURE)
        assert len(screenshot) > 1000
        for page in (ann, bob):
            assert await page.evaluate(_text_of("#notice")) == ""
            assert [line for line in page.console if "Content Security Policy" in line] == []


@needs_chromium
async def test_a_page_reconnects_and_rejoins_after_its_node_is_killed_and_restarted(
    unique: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    async with open_browser(tmp_path) as browser:
        page = await browser.new_page()
        async with open_node(data_dir) as first:
            port = urlsplit(first.url).port
            await page.navigate(f"{first.url}/#{unique}")  # a bare fragment is the room name
            await _connected(page)
            user = await page.evaluate("document.getElementById('name').value")
            await page.type("#message", "before the crash")
            await page.click("#send")
            await page.wait_for(_has_message(user, "before the crash"), "the message echoed")
            await page.click("#increment")
            await page.wait_for(f"{_text_of('#counter-value')} === '1'", "the counter to read 1")
            first.process.kill()  # a crash: no goodbye on any socket
            await first.process.wait()

        await page.wait_for(
            "document.getElementById('chat-status').dataset.state !== 'open'", "the page to notice"
        )
        assert await page.evaluate(_text_of("#member-count")) == "0"  # unknown while disconnected

        async with open_node(data_dir, "--port", str(port)):  # the last --port wins over nodes' 0
            await _connected(page)
            await page.wait_for(_has_member(user), "the page to join the room again")
            await page.wait_for(f"{_text_of('#counter-value')} === '1'", "the counter to read 1 again")
            texts = await page.evaluate(
                "[...document.querySelectorAll('#messages .text')].map((e) => e.textContent)"
            )
            assert texts == ["before the crash"]  # history after the reconnect adds no duplicate
            await page.type("#message", "after the restart")
            await page.click("#send")
            await page.wait_for(_has_message(user, "after the restart"), "a message after the restart")


@needs_chromium
async def test_a_page_given_the_token_in_its_fragment_uses_it_for_sockets_and_http(
    strict_node: Node, unique: str, tmp_path: Path
) -> None:
    async with open_browser(tmp_path) as browser:
        page = await browser.new_page()
        await page.navigate(f"{strict_node.url}/#room={unique}&user=ann&token={quote(TOKEN)}")
        await _connected(page)
        await page.wait_for(_has_member("ann"), "ann to be listed")
        await page.click("#increment")
        await page.wait_for(f"{_text_of('#counter-value')} === '1'", "the counter to read 1")

        without = await browser.new_page()
        await without.navigate(f"{strict_node.url}/#room={unique}&user=bob")
        await without.wait_for(
            "document.getElementById('chat-status').textContent.startsWith('disconnected')",
            "the socket without a token to be refused",
        )
        await without.click("#increment")
        await without.wait_for(
            f"{_text_of('#notice')}.startsWith('+1 failed: Unauthorized: ')", "the refusal to be shown"
        )
    reply = await fetch(strict_node.url, "GET", f"/counter/{unique}", token=TOKEN)
    assert reply.json() == {"value": 1}
