"""Helpers for the real-browser tests (tests/test_browser.py, tests/test_voila.py): Debian's
Chromium driven by Playwright, JS run in the page, a static server with a content policy, and a
pixel comparison of what a <video> spot shows against its poster still."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright must never download a browser
# Without these, Chromium's connections are refused by this machine's closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip a browser test module where Chromium is missing, except in CI, where it fails."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI: .ci/run must apt-get install chromium", pytrace=False)
        pytest.skip("Chromium not installed (apt-get install chromium): browser test skipped", allow_module_level=True)


@contextlib.contextmanager
def chromium(*extra_args: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield browser
        finally:
            browser.close()


# JS: does the poster of this <video> load as an image? (the same request the player makes:
# a poster is fetched under img-src, not media-src)
POSTER_LOADS = """async (v) => {
  const url = v.poster;
  if (!url) return {poster: '', width: 0};
  const img = new Image();
  const ok = await new Promise(r => { img.onload = () => r(true); img.onerror = () => r(false); img.src = url; });
  return {poster: v.getAttribute('poster'), url, ok, width: img.naturalWidth, height: img.naturalHeight};
}"""

# JS: the WCAG 2 contrast ratio between an element's text colour and what is really behind it:
# the background colours of it and its ancestors, composited until an opaque one (the page
# canvas, white, if none is).
CONTRAST = """(el) => {
  const parse = (s) => {
    let m = s.match(/^rgba?\\(([^)]+)\\)$/);
    if (m) { const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
             return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; }
    m = s.match(/^color\\(srgb ([^)]+)\\)$/);
    if (m) { const p = m[1].split(/[\\s\\/]+/).filter(Boolean).map(Number);
             return [p[0] * 255, p[1] * 255, p[2] * 255, p.length > 3 ? p[3] : 1]; }
    throw new Error('unparsed colour ' + s);
  };
  const over = (top, bottom) => {  // source-over, bottom opaque
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const layers = [];
  for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
    const c = parse(getComputedStyle(n).backgroundColor);
    if (c[3] > 0) layers.push({c, who: n.tagName.toLowerCase() + (n.className && typeof n.className === 'string'
                                         ? '.' + n.className.trim().split(/\\s+/)[0] : '')});
    if (c[3] >= 1) break;
  }
  let bg = [255, 255, 255, 1];
  for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i].c, bg);
  const fg = over(parse(getComputedStyle(el).color), bg);
  const lum = (c) => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  return {ratio: (hi + 0.05) / (lo + 0.05), color: getComputedStyle(el).color, fg: fg.map(Math.round),
          bg: bg.map(Math.round), behind: layers.map(l => l.who), style: el.getAttribute('style') || '',
          text: el.textContent.slice(0, 60)};
}"""


class _PolicyHandler(SimpleHTTPRequestHandler):
    policy = ""

    def end_headers(self):
        self.send_header("Content-Security-Policy", self.policy)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):  # quiet
        pass


@contextlib.contextmanager
def policy_server(folder: Path, policy: str):
    """Serve `folder` on loopback, every response carrying `policy` as its
    Content-Security-Policy header. Yields the base URL."""
    handler = type("Handler", (_PolicyHandler,), {"policy": policy})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def still_shown(screenshot: bytes, poster: bytes) -> float:
    """How far what the page drew at a <video> spot is from its poster still: the mean absolute
    difference per channel (0-255) over the upper 70% of the box (the player's control bar
    covers the bottom). A poster drawn there scores a few units; a grey or black box scores
    far more."""
    from PIL import Image, ImageChops, ImageStat

    shown = Image.open(io.BytesIO(screenshot)).convert("RGB")
    still = Image.open(io.BytesIO(poster)).convert("RGB").resize(shown.size)
    box = (0, 0, shown.width, int(shown.height * 0.7))
    diff = ImageChops.difference(shown.crop(box), still.crop(box))
    return sum(ImageStat.Stat(diff).mean) / 3
