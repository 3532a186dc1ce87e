"""Voilà's first visit, in a real browser (README "Where notebooks are opened", docs/design-notes.md
section 6): a dashboard cell (`%%kling` without --wait) returns at once; the reader who opens the
page once must see the live card and then a video that plays, without a second visit.

Voilà executes the notebook on the server while it renders the page (nbclient keeps only the
messages of the cell that is executing), then the page's widget manager connects to the kernel
and asks for the widgets' state. What happens after the cell returned reaches the page only
through a widget (the comm) or as iopub messages on the page's kernel websocket.

Two ways of serving the video, each on its own `voila` server over a fresh folder, keyless:
  embed-always  Voilà's defaults; the dashboard sets `%config KlingMagics.embed = "always"`
                (the video travels inside the page as a data: URI)
  allowlist     `--VoilaConfiguration.file_allowlist` allows `.mp4` and `.jpg`; default embed
                (the video is a file next to the notebook, fetched through /voila/files/)

A third case is the same dashboard with `%kling wait` as its last cell (how this project's
notebooks end): the live view must not be emptied there (it was, and the cell stayed blank).

Everything the page saw goes to test-artifacts/voila-<case>.{png,html,json}: a screenshot,
the DOM of the cells' outputs and a report (kernel messages on the page's websocket, what the
page showed over time, media requests and their status, what Voilà serves of the files made).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import requests
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from playwright.sync_api import Error as PlaywrightError

from .browser_pages import chromium, require_chromium

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

require_chromium()

pytestmark = pytest.mark.timeout(300)

VIDEO_WITHIN_S = 30
SETUP = "%load_ext kling_nb\n%config KlingMagics.sim_run_s = 2.0\n%config KlingMagics.poll_first_s = 0.2"
DASHBOARD_CELL = "%%kling --name lit\n---\nA lighthouse at dusk, waves breaking below"
VARIANTS = {
    "embed-always": {"setup": SETUP + '\n%config KlingMagics.embed = "always"', "args": []},
    "allowlist": {"setup": SETUP, "args": [r"--VoilaConfiguration.file_allowlist=['.*\.(mp4|jpg)']"]},
}

# JS: does this <video> decode and play? Bounded: a video whose source is refused never loads.
PLAYS = """async (v) => {
  v.muted = true;
  const settle = (ms) => new Promise(r => setTimeout(r, ms));
  if (v.readyState < 2) await Promise.race([
    new Promise(r => { v.addEventListener('loadeddata', r, {once: true});
                       v.addEventListener('error', r, {once: true}); }),
    settle(10000)]);
  const out = {ready: v.readyState, error: v.error && v.error.code, network: v.networkState,
               src: (v.currentSrc || v.getAttribute('src') || '').slice(0, 80)};
  if (v.readyState < 2) return {...out, advanced: false, frames: 0};
  const t0 = v.currentTime;
  try { await v.play(); } catch (e) { return {...out, advanced: false, frames: 0, play: String(e)}; }
  await settle(800);
  return {...out, advanced: v.currentTime > t0, t0, t1: v.currentTime,
          frames: v.getVideoPlaybackQuality().totalVideoFrames};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def start_voila(folder: Path, home: Path, args: list[str]):
    """`voila dash.ipynb` on loopback, every Jupyter dir in `home`, no key in its environment.
    Ready when it answers a request for a stylesheet of its template: requesting the page would
    execute the notebook (and a second visit is what this test must not make)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOAPIS_")}
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        IPYTHONDIR=str(home / "ipython"),
    )
    (home / "connections").mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home / "voila.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voila",
            "dash.ipynb",
            "--no-browser",
            "--Voila.ip=127.0.0.1",
            f"--port={port}",
            f"--Voila.root_dir={folder}",
            # kernel connection files; Voilà's default is the system temp dir, not the runtime dir
            f"--Voila.connection_dir_root={home / 'connections'}",
            *args,
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{base}/voila/templates/lab/static/index.css", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        assert server.poll() is None, (home / "voila.log").read_text()[-2000:]
        time.sleep(0.2)
    else:
        server.terminate()
        raise AssertionError("Voilà did not start: " + (home / "voila.log").read_text()[-2000:])
    return server, log, base


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Wire:
    """What reached the page: kernel messages on its websockets, HTTP responses, console lines."""

    def __init__(self, page, t0: float):
        self.t0 = t0
        self.messages: list[dict] = []
        self.responses: list[dict] = []
        self.failed: list[dict] = []
        self.console: list[str] = []
        page.on("websocket", self._socket)
        page.on("response", lambda r: self.responses.append(self._at(url=r.url[:160], status=r.status)))
        page.on("requestfailed", lambda r: self.failed.append(self._at(url=r.url[:160], error=r.failure)))
        page.on("console", lambda m: self.console.append(m.text[:200]))

    def _at(self, **what) -> dict:
        return {"t": round(time.monotonic() - self.t0, 2), **what}

    def _socket(self, ws) -> None:
        ws.on("framereceived", lambda f: self._frame("in", f))
        ws.on("framesent", lambda f: self._frame("out", f))

    def _frame(self, direction: str, frame) -> None:
        try:
            if isinstance(frame, bytes):
                channel, parts = deserialize_msg_from_ws_v1(frame)
                header, parent, _meta, content = (json.loads(p) for p in parts[:4])
            else:
                msg = json.loads(frame)
                channel, header, parent, content = (
                    msg.get(k) or {} for k in ("channel", "header", "parent_header", "content")
                )
        except Exception as e:  # not a kernel message: keep its size
            self.messages.append(self._at(dir=direction, undecoded=f"{type(e).__name__}, {len(frame)} bytes"))
            return
        entry = self._at(
            dir=direction,
            channel=channel,
            type=header.get("msg_type"),
            parent=parent.get("msg_type"),
            parent_id=parent.get("msg_id", "")[:12],
        )
        if "transient" in content:
            entry["display_id"] = content["transient"].get("display_id")
        data = content.get("data") or {}
        if isinstance(data, dict):
            shown = json.dumps(data.get("data") or data.get("state") or data)
            entry["kind"] = (
                data.get("method")
                or ("view" if "application/vnd.jupyter.widget-view+json" in data else None)
                or ",".join(sorted(data))[:60]
            )
            entry["has_card"] = "kling-card" in shown
            entry["has_video"] = "<video" in shown
            entry["video_src"] = _src(shown)
        self.messages.append(entry)


def _src(text: str) -> str | None:
    at = text.find("<video src=")
    return text[at + 12 : at + 12 + 60] if at >= 0 else None


# JS, in the page every 100 ms: what the reader sees of the dashboard cell
SEEN = """() => {
  const card = document.querySelector('.kling-card'), video = document.querySelector('video');
  return {card: card ? card.dataset.status : null, video: !!video,
          progress: card && card.querySelector('progress') ? card.querySelector('progress').value : null};
}"""


def visit(browser, tmp_path, name: str, cells: list[str], args: list[str], within: float = VIDEO_WITHIN_S) -> dict:
    """Serve `cells` with `voila dash.ipynb <args>`, open the page once and watch it until a
    <video> shows (then check that it plays) or `within` seconds after the page loaded. Returns the
    report also written to test-artifacts/voila-<name>.json."""
    folder, home = tmp_path / "dash", tmp_path / "jupyter-home"
    folder.mkdir()
    nbformat.write(dashboard(cells), folder / "dash.ipynb")
    server, log, base = start_voila(folder, home, args)
    report: dict = {"case": name, "cells": cells, "voila_args": args, "within_s": within}
    page = None
    wire = None
    timeline: dict[str, float] = {}
    seen: list[dict] = []
    plays: dict | None = None
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        wire = Wire(page, time.monotonic())
        page.goto(base + "/", timeout=120_000)  # the first and only visit
        timeline["page loaded"] = round(time.monotonic() - wire.t0, 2)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            now = page.evaluate(SEEN)
            if not seen or now != seen[-1]["what"]:
                seen.append({"t": round(time.monotonic() - wire.t0, 2), "what": now})
            if now["video"]:
                break
            time.sleep(0.1)
        if seen and seen[-1]["what"]["video"]:
            plays = page.locator("video").first.evaluate(PLAYS)
        else:
            page.wait_for_timeout(1000)  # let late messages land before the report
    finally:
        try:
            ARTIFACTS.mkdir(exist_ok=True)
            if page is not None:
                try:  # a diagnostic: a screenshot too slow on a loaded machine must not fail the test
                    page.screenshot(path=str(ARTIFACTS / f"voila-{name}.png"), full_page=True, timeout=60_000)
                except PlaywrightError as err:
                    report["screenshot"] = f"not taken: {err.message.splitlines()[0]}"
                outputs = page.locator(".jp-Cell-outputWrapper")
                dom = "\n".join(outputs.nth(i).evaluate("e => e.outerHTML") for i in range(outputs.count()))
                (ARTIFACTS / f"voila-{name}.html").write_text(_shorten_data_uris(dom or page.content()))
                # the final display update replaces the live view (a widget) with plain HTML: applied?
                report["dashboard cell shows"] = (
                    "the live widget"
                    if page.locator(".jp-Cell-outputWrapper .widget-output").count()
                    else "plain output (the final display update, or a result final at execution)"
                )
                report["live widget is empty"] = (
                    page.locator(".widget-output .jp-OutputArea").first.evaluate("e => e.children.length === 0")
                    if page.locator(".widget-output .jp-OutputArea").count()
                    else None
                )
                page.close()
            made = sorted((folder / "kling_outputs").glob("lit-*")) if (folder / "kling_outputs").exists() else []
            # what Voilà serves of the files the run made (the page may not have asked for all)
            served = {
                f.name: requests.get(f"{base}/voila/files/kling_outputs/{f.name}", timeout=10).status_code
                for f in made
                if f.suffix in (".mp4", ".jpg")
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        messages = wire.messages if wire else []
        report.update(
            timeline=timeline,
            seen=seen,
            plays=plays,
            files_made=[f.name for f in made],
            served_after_the_run=served,
            media_requests=[r for r in (wire.responses if wire else []) if _media(r["url"])],
            failed_requests=wire.failed if wire else [],
            kernel_messages=messages,
            display_updates=[m for m in messages if m.get("type") == "update_display_data"],
            widget_updates_with_video=[m for m in messages if m.get("kind") == "update" and m.get("has_video")],
            voila_log=(home / "voila.log").read_text()[-3000:],
            console=wire.console[-20:] if wire else [],
        )
        (ARTIFACTS / f"voila-{name}.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def _media(url: str) -> bool:
    return url.split("?")[0].endswith((".mp4", ".jpg"))


def assert_first_visit_plays(report: dict, *, live_card: bool = True) -> None:
    name, plays, seen = report["case"], report["plays"], report["seen"]
    where = f"see test-artifacts/voila-{name}.{{png,html,json}}"
    statuses = [s["what"]["card"] for s in seen if s["what"]["card"]]
    if live_card:
        assert statuses, f"{name}: the live card never showed; {where}"
        first = next(s["what"] for s in seen if s["what"]["card"])
        assert not first["video"] and first["card"] != "completed", (
            f"{name}: the card was already finished when it first showed (no live view): {seen}"
        )
    assert plays is not None, (
        f"{name}: no <video> within {report['within_s']} s of the page on a first visit "
        f"({report['dashboard cell shows']}, empty: {report['live widget is empty']}); "
        f"display updates on the page's socket: {report['display_updates']}; "
        f"widget updates carrying a video: {len(report['widget_updates_with_video'])}; {where}"
    )
    assert plays["ready"] >= 2 and plays["advanced"] and plays["frames"] > 0, (
        f"{name}: the <video> shows but does not play: {plays}; media requests {report['media_requests']}; {where}"
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_first_visit_shows_the_live_card_then_a_playing_video(variant, browser, tmp_path):
    report = visit(browser, tmp_path, variant, [VARIANTS[variant]["setup"], DASHBOARD_CELL], VARIANTS[variant]["args"])
    assert_first_visit_plays(report)
    served = report["served_after_the_run"]
    if variant == "embed-always":
        assert report["plays"]["src"].startswith("data:video/mp4;base64,"), report["plays"]
        # what the README warns of: Voilà's defaults refuse the .mp4 file (the still is allowed)
        assert sorted(served.values()) == [200, 403], served
    else:
        assert "/kling_outputs/" in report["plays"]["src"] and report["plays"]["src"].endswith(".mp4")
        assert served and all(status == 200 for status in served.values()), served
        assert [r["status"] for r in report["media_requests"] if "/voila/files/" in r["url"]] == [200, 200]


def test_first_visit_with_kling_wait_in_a_later_cell(browser, tmp_path):
    """The notebooks this project ships end with `%kling wait` (README "Notebooks"); the same
    dashboard with that last cell, served with the file allowlist."""
    report = visit(
        browser,
        tmp_path,
        "kling-wait",
        [SETUP, DASHBOARD_CELL, "%kling wait"],
        VARIANTS["allowlist"]["args"],
        within=10,  # the page loads once `%kling wait` returned: the video is there or never comes
    )
    # Voilà's widgets come alive only when every cell ran: no live card to see here, only the result
    assert_first_visit_plays(report, live_card=False)


def _shorten_data_uris(html: str) -> str:
    """The output's DOM with base64 payloads cut to their first 40 characters."""
    out, at = [], 0
    while (start := html.find(";base64,", at)) >= 0:
        end = start + 8
        while end < len(html) and html[end] not in "\"') ":
            end += 1
        out.append(html[at : start + 48] + f"...[{end - start - 8} chars]")
        at = end
    return "".join(out) + html[at:]
