"""The demo page served at ``/``: one static HTML file with its script and style inline.

Guarantees
- The page is package data (``server/static/index.html``), read once when this module is imported,
  so a node whose install lacks it fails at startup rather than at its first visitor.
- It loads nothing from elsewhere: its Content-Security-Policy allows exactly the inline script and
  style blocks of the file (by their SHA-256, computed here from the bytes served), connections to
  the page's own origin (HTTP and WebSocket) and nothing else. Chat text is inserted as text, never
  as HTML, and the policy would stop an injected script anyway.
- ``Referrer-Policy: no-referrer``: a token given in the page's URL never leaves in a Referer header.

What the page does is described at the top of its script.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["PAGE", "Page", "load_page"]

HTML = b"text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Page:
    body: bytes
    content_type: bytes
    headers: tuple[tuple[bytes, bytes], ...]


def load_page(html: bytes) -> Page:
    """The reply for ``html``, with a policy that allows its own inline blocks and nothing foreign."""
    scripts = _hashes(html, b"script")
    styles = _hashes(html, b"style")
    policy = "; ".join(
        [
            "default-src 'none'",
            f"script-src {scripts}",
            f"style-src {styles}",
            "connect-src 'self'",  # 'self' covers ws:/wss: to the same host (CSP level 3)
            "img-src data:",  # the empty data: favicon, so the browser does not ask for /favicon.ico
            "base-uri 'none'",
            "form-action 'none'",  # forms are handled by the script, never submitted
            "frame-ancestors 'none'",
        ]
    )
    headers = (
        (b"content-security-policy", policy.encode()),
        (b"cache-control", b"no-cache"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    )
    return Page(html, HTML, headers)


def _hashes(html: bytes, tag: bytes) -> str:
    """CSP source expressions for the inline ``<tag>`` blocks (attribute-less, as the page writes them)."""
    blocks = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, flags=re.DOTALL)
    if not blocks:
        return "'none'"
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(block).digest()).decode() + "'" for block in blocks
    )


PAGE = load_page(resources.files("server").joinpath("static", "index.html").read_bytes())
