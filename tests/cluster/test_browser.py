"""The demo page in two browser tabs on two different nodes: one room, wherever its objects live."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.server.browser import open_browser
from tests.server.nodes import Node
from tests.server.test_demo_page import _connected, _has_member, _has_message, _text_of, needs_chromium

from .test_cluster import names_owned_by


@needs_chromium
async def test_two_tabs_on_two_nodes_share_a_room_owned_by_a_third(
    cluster: list[Node], unique: str, tmp_path: Path
) -> None:
    [room] = names_owned_by(cluster, "n3", "ChatRoom", f"room-{unique}", 1)  # relayed for both tabs
    async with open_browser(tmp_path) as browser:
        ann, bob = await browser.new_page(), await browser.new_page()
        await ann.navigate(f"{cluster[0].url}/#room={quote(room)}&user=ann")
        await bob.navigate(f"{cluster[1].url}/#room={quote(room)}&user=bob")
        await _connected(ann)
        await _connected(bob)
        await bob.wait_for(_has_member("ann"), "bob's tab (node n2) to list ann (node n1)")
        await ann.wait_for(_has_member("bob"), "ann's tab to list bob")
        await ann.type("#message", "hello across nodes")
        await ann.click("#send")
        await bob.wait_for(_has_message("ann", "hello across nodes"), "ann's message in bob's tab")
        await bob.type("#message", "hi from n2")
        await bob.click("#send")
        await ann.wait_for(_has_message("bob", "hi from n2"), "bob's reply in ann's tab")
        await ann.click("#increment")
        await bob.wait_for(f"{_text_of('#counter-value')} === '1'", "bob's counter to follow ann's +1")
        for page in (ann, bob):
            assert await page.evaluate(_text_of("#notice")) == ""
