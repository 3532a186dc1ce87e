"""Bad input and a hostile server: clear errors before anything is sent, nothing written
outside the output folder, markup shown as text, and a poller that survives it all."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from kling_nb import SpecError, parse
from kling_nb.cell.spec import from_fields
from kling_nb.engine.generation import Snapshot, State
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.session import Runtime
from kling_nb.errors import GenerationFailed
from kling_nb.notebook.render import failure_html, generation_html

from .hostile_server import tiny_mp4

EVIL_HTML = '<img src=x onerror="alert(1)">'


# -- hostile files: refused before any upload or submit -----------------------------------------
@pytest.fixture
def files(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * (11 * 1024 * 1024))
    (tmp_path / "text.png").write_text("I am not a picture")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "movie.png").write_bytes(b"\0\0\0\x18ftypmp42" + b"\0" * 64)
    Image.new("RGB", (4, 4)).save(tmp_path / "ok.png")
    return tmp_path


@pytest.mark.parametrize(
    "name, reason",
    [
        ("big.jpg", r"11,534,339 bytes; the upload limit is 10,485,760 bytes"),
        ("text.png", "not an image"),
        ("zero.png", "empty"),
        ("movie.png", "is a video"),
    ],
)
def test_hostile_files_are_refused_before_sending(files, name, reason):
    with pytest.raises(SpecError, match=reason):
        parse(f"images: [{name}]\n---\n<<<image_1>>>", base_dir=files)
    with pytest.raises(SpecError, match=reason):
        parse(f"elements: [{name}]\n---\n<<<element_1>>>", base_dir=files)


def test_a_local_video_where_a_reference_video_belongs(files):
    with pytest.raises(SpecError, match="no upload endpoint for videos"):
        parse("videos: [movie.png]\n---\n<<<video_1>>>", base_dir=files)


# -- a hostile server --------------------------------------------------------------------------
class Hostile(BaseHTTPRequestHandler):
    """Answers submits with whatever the prompt asks for: the test picks the hostility."""

    protocol_version = "HTTP/1.1"
    tasks: dict = {}

    def log_message(self, *args):
        pass

    def send(self, status, payload, ctype="application/json", headers=()):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = body["prompt"].split()[0]
        if mode == "badjson":
            return self.send(200, b"{not json")
        if mode == "htmlerror":
            return self.send(
                400, {"error": {"code": "invalid_request", "message": EVIL_HTML, "type": "invalid_request"}}
            )
        task_id = {"escape": "../../escaped", "slash": "video_a/../../b"}.get(mode, f"video_{mode}")
        self.tasks[task_id] = mode
        return self.send(200, {"id": task_id, "status": "queued", "progress": 0})

    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path.startswith("/v1/videos/generations/"):
            task_id = self.path.rsplit("/", 1)[1]
            mode = self.tasks.get(task_id, "")
            url = {
                "fileurl": "file:///etc/passwd",
                "notvideo": f"{base}/media/page.html",
                "redirect": f"{base}/media/redirect",
                "traverse": f"{base}/media/../../../../etc/passwd",
            }.get(mode, f"{base}/media/ok.mp4")
            if mode == "failhtml":
                return self.send(
                    200,
                    {
                        "id": task_id,
                        "status": "failed",
                        "progress": 10,
                        "error": {"code": "<b>x</b>", "message": EVIL_HTML},
                    },
                )
            return self.send(
                200,
                {
                    "id": task_id,
                    "status": "completed",
                    "progress": 100,
                    "expires_at": 4102444800,
                    "result": {"data": [{"url": url}]},
                },
            )
        if self.path == "/media/redirect":
            return self.send(302, b"", headers=[("Location", "file:///etc/passwd")])
        if self.path == "/media/page.html":
            return self.send(200, b"<html>" + b"x" * 200 + b"</html>", "text/html")
        return self.send(200, tiny_mp4(), "video/mp4")  # a real clip: the client plays what it keeps


@pytest.fixture
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "mode, words",
    [
        ("badjson", "may have been accepted"),
        ("htmlerror", "onerror"),
        ("escape", "is malformed"),
        ("slash", "is malformed"),
        ("fileurl", "non-http(s)"),
        ("notvideo", "not a video"),
        ("redirect", "redirect"),
        ("failhtml", "onerror"),
    ],
)
def test_hostile_replies_end_in_a_clear_error_inside_the_folder(hostile, tmp_path, mode, words):
    out = tmp_path / "project" / "kling_outputs"
    runtime = Runtime(
        output_dir=out,
        base_url=hostile,
        api_key="sk-hostile",
        environ={},
        schedule=PollSchedule(0.05, 0.1, 0.05, max_s=0.2),
        client_options={"max_retries": 1, "backoff_base": 0.01},
    )
    try:
        gen = runtime.run(from_fields(f"{mode} scene", {})).wait(30)
        assert gen.error is not None and words in gen.error.message
        html = generation_html(gen.snapshot())
        assert EVIL_HTML not in html and "<b>x</b>" not in html  # service text is shown as text
        # the poller survived: a normal generation still completes afterwards
        ok = runtime.run(from_fields("fine scene", {})).wait(30)
        assert ok.status == "completed" and ok.video_path.parent == out.resolve()
    finally:
        runtime.close()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert all(str(p).startswith("project/kling_outputs/") for p in written), written


def test_traversal_in_the_result_url_stays_in_the_folder(hostile, tmp_path):
    out = tmp_path / "kling_outputs"
    runtime = Runtime(
        output_dir=out, base_url=hostile, api_key="k", environ={}, schedule=PollSchedule(0.05, 0.1, 0.05, max_s=0.2)
    )
    try:
        gen = runtime.run(from_fields("traverse scene", {})).wait(30)
    finally:
        runtime.close()
    assert gen.video_path is None or gen.video_path.parent == out.resolve()
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} <= {out}


def test_failure_markup_is_escaped():
    snap = Snapshot(
        status=State.FAILED,
        body={"prompt": "<script>x()</script>"},
        name="<i>n</i>",
        task_id="<t>",
        error=GenerationFailed(EVIL_HTML),
        elapsed_s=1,
    )
    html = failure_html(snap)
    assert "<script>" not in html and EVIL_HTML not in html and "<i>n</i>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
