"""A server that echoes the Authorization header into every text field it can, driven from a
real kernel: afterwards the key is in no output, no file under the folder (the journal and
its WAL included) and no log line. And a completed task without a URL is looked at again,
never submitted again."""

from __future__ import annotations

import itertools
import json

from kling_nb.cell.spec import from_fields
from kling_nb.engine.generation import State
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.session import Runtime

from .hostile_server import HostileServer, json_reply, video_reply
from .kernel_harness import FAST_CONFIG, SECRET, as_text, notebook, run


def echoing_server(server: HostileServer) -> HostileServer:
    ids = itertools.count(1)

    def auth(request) -> str:
        return request.headers.get("Authorization", "")

    def submit(request):
        body = json.loads(request.body)
        echo = auth(request)
        if "refuse" in body["prompt"]:
            return json_reply({"error": {"code": echo, "message": f"bad[{echo}]", "type": echo}}, status=400)
        if "quota" in body["prompt"]:
            return json_reply(
                {
                    "error": {
                        "code": "insufficient_quota",
                        "message": f"no quota for {echo}",
                        "type": "insufficient_quota",
                    }
                },
                status=402,
            )
        task = f"video_{next(ids)}{'F' if 'fail' in body['prompt'] else ''}"
        return json_reply({"id": task, "status": "queued", "progress": 0, "note": echo})

    def status(request):
        task = request.path.rsplit("/", 1)[1]
        echo = auth(request)
        if task.endswith("F"):
            return json_reply(
                {
                    "id": task,
                    "status": "failed",
                    "progress": 30,
                    "error": {"code": f"generation_failed {echo}", "message": f"failed for {echo}"},
                }
            )
        return json_reply(
            {
                "id": task,
                "status": "completed",
                "progress": 100,
                "expires_at": 4102444800,
                "result": {"data": [{"url": f"{server.url}/media/{task}.mp4"}]},
                "note": echo,
            }
        )

    def upload(request):
        return json_reply({"success": False, "message": f"Unsupported image for {auth(request)}"})

    server.on("POST", "/v1/videos/generations", submit)
    for n in range(1, 20):
        server.on("GET", f"/v1/videos/generations/video_{n}", status)
        server.on("GET", f"/v1/videos/generations/video_{n}F", status)
        server.on("GET", f"/media/video_{n}.mp4", video_reply())
    server.on("POST", "/v1/uploads/images", upload)
    return server


def test_a_server_that_echoes_the_key_leaves_it_nowhere(tmp_path):
    from PIL import Image

    (tmp_path / "media").mkdir()
    Image.new("RGB", (320, 180), (10, 200, 90)).save(tmp_path / "media" / "still.png")
    with echoing_server(HostileServer()) as server:
        nb = run(
            notebook(
                "import logging\nlogging.basicConfig(filename='kling.log', level=logging.DEBUG, force=True)",
                FAST_CONFIG,
                "%%kling --name good --wait\n---\nA lantern festival",
                ("%%kling --name bad --wait\n---\nrefuse this", []),
                "%%kling --name broke --wait\n---\nfail this one",
                "%%kling --name poor --wait\n---\nquota gone",
                "%%kling --name pic --wait\nimages: [media/still.png]\n---\n<<<image_1>>> moves",
                "%kling wait\n%kling list\n%kling history",
                "%xmode Verbose",
                "%config KlingMagics.base_url = 'http://127.0.0.1:99999'",
                ("%%kling\n---\nx", ["raises-exception"]),
                "print(repr(good), repr(bad.error), repr(broke.error), repr(poor.error), repr(pic.error))",
            ),
            tmp_path,
            {"TOAPIS_BASE_URL": server.url, "TOAPIS_API_KEY": SECRET + "\n"},
        )
        received = [r.headers.get("Authorization") for r in server.requests]
    bad_url = [o for o in nb.cells[-2].outputs if o.output_type == "error"][0]
    assert bad_url.ename == "ConfigError" and "99999" in bad_url.evalue and len(bad_url.traceback) == 1
    assert received and all(h == f"Bearer {SECRET}" for h in received)  # the trailing newline was stripped
    text = as_text(nb)
    assert "A lantern festival" in text and "refuse this" in text and "failed for" in text  # it all ran
    assert "Unsupported image for ***" in text and "no quota for ***" in text
    assert SECRET not in text and "Bearer sk" not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"the key is in {path.relative_to(tmp_path)}"
    assert (tmp_path / "kling_outputs" / "journal.sqlite").exists()
    assert "POST /v1/videos/generations" in (tmp_path / "kling.log").read_text()  # logging was on (DEBUG)


def test_a_completed_task_without_a_url_is_looked_at_again_never_resubmitted(tmp_path):
    with HostileServer() as server:
        server.on("POST", "/v1/videos/generations", json_reply({"id": "video_1", "status": "queued"}))
        no_url = json_reply({"id": "video_1", "status": "completed", "progress": 100})
        server.on(
            "GET",
            "/v1/videos/generations/video_1",
            no_url,
            no_url,
            no_url,
            json_reply(
                {
                    "id": "video_1",
                    "status": "completed",
                    "progress": 100,
                    "expires_at": 4102444800,
                    "result": {"url": f"{server.url}/media/v.mp4"},
                }
            ),
        )
        server.on("GET", "/media/v.mp4", video_reply())
        schedule = PollSchedule(0.05, 0.1, 0.05, max_s=0.2)
        rt = Runtime(output_dir=tmp_path, base_url=server.url, api_key="sk-test-nourl", schedule=schedule)
        try:
            gen = rt.run(from_fields("A lantern", {})).wait(30)
        finally:
            rt.close()
        assert gen.status == State.COMPLETED and gen.video_path.exists()
        assert len(server.hits("POST", "/v1/videos/generations")) == 1
        assert len(server.hits("GET", "/v1/videos/generations/video_1")) == 4


def test_a_task_that_never_gets_a_url_is_detached_and_a_rerun_reattaches(tmp_path):
    with HostileServer() as server:
        server.on("POST", "/v1/videos/generations", json_reply({"id": "video_1", "status": "queued"}))
        server.on("GET", "/v1/videos/generations/video_1", json_reply({"id": "video_1", "status": "completed"}))
        schedule = PollSchedule(0.01, 0.02, 0.01, max_s=0.05)
        rt = Runtime(output_dir=tmp_path, base_url=server.url, api_key="sk-test-nourl", schedule=schedule)
        try:
            gen = rt.run(from_fields("A lantern", {})).wait(30)
            assert gen.status == State.DETACHED and "no video URL" in gen.error.message
            again = rt.run(from_fields("A lantern", {}))
            assert again.origin == "reattached" and again.task_id == "video_1"
            again.wait(30)
        finally:
            rt.close()
        assert len(server.hits("POST", "/v1/videos/generations")) == 1
