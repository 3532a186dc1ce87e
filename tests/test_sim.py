"""The simulator answers every contract shape, over real loopback HTTP (raw requests, no
kling_nb client, so the simulator is checked on its own)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import av
import pytest
import requests
from PIL import Image

from kling_nb.sim import Faults, SimConfig, Simulator

KEY = {"Authorization": "Bearer any-key"}
SUBMIT = "/v1/videos/generations"


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.05, run_s=0.4)) as s:
        yield s


def post(sim, body, headers=KEY):
    return requests.post(sim.base_url + SUBMIT, json=body, headers=headers, timeout=10)


def wait_done(sim, task_id):
    for _ in range(100):
        data = requests.get(f"{sim.base_url}{SUBMIT}/{task_id}", headers=KEY, timeout=10).json()
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.05)
    raise AssertionError("task never finished")


def body(**extra):
    return {"model": "kling-video-o1", "prompt": "A kite", **extra}


def test_submit_reply_shape(sim):
    reply = post(sim, body())
    assert reply.status_code == 200
    data = reply.json()
    assert data["id"].startswith("video_") and data["object"] == "generation.task"
    assert data["model"] == "kling-video-o1" and data["status"] == "queued" and data["progress"] == 0
    assert isinstance(data["created_at"], int) and data["metadata"] == {}


def test_lifecycle_queued_progress_completed():
    # Longer phases than the other tests use: the first look must fall inside the queue even on a
    # loaded machine, and the run must be long enough for several looks to see progress rise.
    with Simulator(config=SimConfig(queue_s=0.6, run_s=0.9)) as sim:
        task_id = post(sim, body()).json()["id"]
        seen = []
        while True:
            data = requests.get(f"{sim.base_url}{SUBMIT}/{task_id}", headers=KEY, timeout=10).json()
            seen.append((data["status"], data["progress"]))
            if data["status"] == "completed":
                break
            time.sleep(0.03)
        assert data["result"]["data"][0]["url"].startswith(sim.base_url)
    statuses = [s for s, _ in seen]
    assert statuses[0] == "queued" and "in_progress" in statuses
    progress = [p for s, p in seen if s == "in_progress"]
    assert progress == sorted(progress) and len(set(progress)) > 1
    assert data["progress"] == 100 and data["completed_at"] >= data["created_at"]
    assert data["expires_at"] == data["completed_at"] + 24 * 3600
    assert data["result"]["type"] == "video" and data["result"]["data"][0]["format"] == "mp4"


@pytest.mark.parametrize(
    "name, seed_body",
    [
        ("t2v", {"prompt": "Golden hour city skyline", "mode": "std", "duration": 5, "aspect_ratio": "16:9"}),
        (
            "image",
            {
                "prompt": "Make <<<image_1>>> wave",
                "mode": "pro",
                "duration": 5,
                "metadata": {"image_list": [{"image_url": "https://example.com/portrait.jpg"}]},
            },
        ),
        (
            "frames",
            {
                "prompt": "From <<<image_1>>> to <<<image_2>>>",
                "mode": "pro",
                "metadata": {
                    "image_list": [
                        {"image_url": "https://example.com/s.jpg", "type": "first_frame"},
                        {"image_url": "https://example.com/e.jpg", "type": "end_frame"},
                    ]
                },
            },
        ),
        (
            "video",
            {
                "prompt": "Transform <<<video_1>>>",
                "video_list": [
                    {"video_url": "https://example.com/v.mp4", "refer_type": "base", "keep_original_sound": "no"}
                ],
            },
        ),
        (
            "element",
            {
                "prompt": "Make <<<element_1>>> imitate <<<video_1>>>",
                "mode": "pro",
                "video_list": [
                    {"video_url": "https://example.com/m.mp4", "refer_type": "feature", "keep_original_sound": "no"}
                ],
                "metadata": {
                    "element_list": [{"url": "https://example.com/c.jpg", "type": "image", "role": "subject"}]
                },
            },
        ),
    ],
)
def test_seed_examples_are_accepted(sim, name, seed_body):
    assert post(sim, {"model": "kling-video-o1", **seed_body}).status_code == 200


INVALID = [
    ({"prompt": "x"}, "model"),
    (body(model="kling-v1"), "model"),
    (body(prompt=""), "prompt"),
    (body(mode="ultra"), "mode"),
    (body(duration=7), "duration"),
    (body(duration="5"), "duration"),
    (body(duration=True), "duration"),
    (body(aspect_ratio="wide"), "aspect_ratio"),
    (body(audio="yes"), "audio"),
    (body(prompt="<<<image_1>>>"), "image_list"),
    (body(prompt="<<<video_2>>>", video_list=[{"video_url": "https://a.example/v.mp4"}]), "video_list"),
    (body(prompt="<<<pic_1>>>"), "malformed"),
    (body(audio=True, video_list=[{"video_url": "https://a.example/v.mp4"}]), "mutually exclusive"),
    (body(metadata={"image_list": [{"image_url": "data:image/png;base64,AAAA"}]}), "http(s)"),
    (body(metadata={"image_list": [{"image_url": "ftp://a.example/x.png"}]}), "http(s)"),
    (body(metadata={"image_list": [{"image_url": "https://a.example/x.png", "type": "middle"}]}), "first_frame"),
    (body(video_list=[{"video_url": "https://a.example/v.mp4", "refer_type": "style"}]), "refer_type"),
    (body(video_list=[{"video_url": "https://a.example/v.mp4", "keep_original_sound": True}]), "keep_original_sound"),
    (body(metadata={"element_list": [{"url": "https://a.example/c.jpg", "type": "video"}]}), "type"),
    (body(metadata="x"), "metadata"),
]


@pytest.mark.parametrize("bad, words", INVALID, ids=[w for _, w in INVALID])
def test_invalid_bodies_get_400_with_the_documented_shape(sim, bad, words):
    reply = post(sim, bad)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request" and words in error["message"]


def test_non_json_body(sim):
    reply = requests.post(sim.base_url + SUBMIT, data=b"{nope", headers={**KEY, "Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["type"] == "invalid_request"


def test_auth(sim):
    assert post(sim, body(), headers={}).json()["error"]["type"] == "unauthorized"
    assert post(sim, body(), headers={}).status_code == 401
    with Simulator(key="right", config=SimConfig(queue_s=0, run_s=0.1)) as strict:
        assert (
            post(strict, body(), headers={"Authorization": "Bearer wrong"}).json()["error"]["type"]
            == "authentication_error"
        )
        assert post(strict, body(), headers={"Authorization": "Bearer right"}).status_code == 200


def test_unknown_task_is_404(sim):
    reply = requests.get(f"{sim.base_url}{SUBMIT}/video_NOPE", headers=KEY, timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "task_not_found"


def test_prompt_markers(sim):
    reply = post(sim, body(prompt="sim:reject this"))
    assert reply.status_code == 422 and reply.json()["error"]["type"] == "content_policy_violation"
    failed = wait_done(sim, post(sim, body(prompt="sim:fail this")).json()["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "generation_failed"
    assert "result" not in failed


def png_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_upload(sim):
    reply = requests.post(
        sim.base_url + "/v1/uploads/images",
        headers=KEY,
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"purpose": "generation"},
    )
    data = reply.json()
    assert reply.status_code == 200 and data["success"] is True and data["message"] == ""
    assert data["data"]["mime_type"] == "image/png" and data["data"]["id"].startswith("upload_")
    assert requests.get(data["data"]["url"], timeout=10).content == png_bytes()


@pytest.mark.parametrize(
    "content, message",
    [(b"hello, I am text", "Unsupported image type"), (b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024), "too large")],
    ids=["text-named-png", "eleven-mb"],
)
def test_upload_refusals(sim, content, message):
    reply = requests.post(sim.base_url + "/v1/uploads/images", headers=KEY, files={"file": ("x.png", content)})
    assert reply.status_code == 400 and reply.json()["success"] is False and message in reply.json()["message"]


@pytest.mark.parametrize(
    "ratio, size, duration", [("16:9", (320, 180), 5), ("9:16", (180, 320), 10), ("1:1", (320, 320), 5)]
)
def test_result_is_playable_h264_at_the_requested_shape(sim, tmp_path, ratio, size, duration):
    done = wait_done(sim, post(sim, body(aspect_ratio=ratio, duration=duration)).json()["id"])
    raw = requests.get(done["result"]["data"][0]["url"], timeout=30).content
    assert raw.index(b"moov") < raw.index(b"mdat")  # index first: plays while downloading
    (tmp_path / "v.mp4").write_bytes(raw)
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == size
        assert abs(container.duration / 1e6 - duration) < 0.2


def test_range_request(sim):
    done = wait_done(sim, post(sim, body()).json()["id"])
    reply = requests.get(done["result"]["data"][0]["url"], headers={"Range": "bytes=0-99"}, timeout=10)
    assert reply.status_code == 206 and len(reply.content) == 100
    assert reply.headers["Content-Range"].startswith("bytes 0-99/")


def test_results_expire():
    with Simulator(config=SimConfig(queue_s=0, run_s=0.05, result_lifetime_s=0.3)) as sim:
        done = wait_done(sim, post(sim, body()).json()["id"])
        url = done["result"]["data"][0]["url"]
        assert requests.get(url, timeout=10).status_code == 200
        time.sleep(0.4)
        reply = requests.get(url, timeout=10)
        assert reply.status_code == 404 and "expired" in reply.json()["error"]["message"]


def test_padding_keeps_a_valid_mp4(tmp_path):
    with Simulator(config=SimConfig(queue_s=0, run_s=0.05, result_padding_bytes=2_000_000)) as sim:
        done = wait_done(sim, post(sim, body()).json()["id"])
        raw = requests.get(done["result"]["data"][0]["url"], timeout=30).content
    assert len(raw) >= 2_000_000
    (tmp_path / "p.mp4").write_bytes(raw)
    with av.open(str(tmp_path / "p.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 60


# -- faults -----------------------------------------------------------------------------
def test_fault_429_has_retry_after(sim):
    sim.set_faults(Faults(rate=1.0, kinds=("429",), retry_after=2))
    reply = post(sim, body())
    assert reply.status_code == 429 and reply.headers["Retry-After"] == "2"
    assert reply.json()["error"]["type"] == "rate_limit_exceeded"
    assert sim.count("submit") == 0


@pytest.mark.parametrize("kind", ["500", "502", "503"])
def test_fault_5xx(sim, kind):
    sim.set_faults(Faults(rate=1.0, kinds=(kind,)))
    assert post(sim, body()).status_code == int(kind)


def test_fault_drop(sim):
    sim.set_faults(Faults(rate=1.0, kinds=("drop",)))
    with pytest.raises(requests.ConnectionError):
        post(sim, body())
    assert sim.count("submit") == 0


def test_fault_drop_after_accept_bills_without_answering(sim):
    sim.set_faults(Faults(rate=1.0, kinds=("drop_after_accept",)))
    with pytest.raises(requests.ConnectionError):
        post(sim, body())
    assert sim.count("submit") == 1


def test_fault_truncate(sim):
    done = wait_done(sim, post(sim, body()).json()["id"])
    sim.set_faults(Faults(rate=1.0, kinds=("truncate",)))
    with requests.get(done["result"]["data"][0]["url"], stream=True, timeout=10) as reply:
        declared = int(reply.headers["Content-Length"])
        got = 0
        with pytest.raises(requests.RequestException):
            for chunk in reply.iter_content(4096):
                got += len(chunk)
        assert got < declared


def test_fault_slow(sim):
    sim.set_faults(Faults(rate=1.0, kinds=("slow",), slow_s=0.5))
    with pytest.raises(requests.Timeout):
        post_with_timeout = requests.post(sim.base_url + SUBMIT, json=body(), headers=KEY, timeout=0.1)
        del post_with_timeout


def test_faults_are_seeded_and_private_paths_exempt(sim):
    def pattern():
        sim.set_faults(Faults(rate=0.5, kinds=("500",), seed=42))
        return [post(sim, body()).status_code for _ in range(20)]

    first = pattern()
    assert first == pattern() and 500 in first and 200 in first
    sim.set_faults(Faults(rate=1.0, kinds=("500",)))
    assert requests.get(sim.base_url + "/_sim/stats", timeout=10).status_code == 200


def test_log_and_stats(sim):
    task_id = post(sim, body()).json()["id"]
    requests.get(f"{sim.base_url}{SUBMIT}/{task_id}", headers=KEY, timeout=10)
    post(sim, body(mode="bad"))
    stats = requests.get(sim.base_url + "/_sim/stats", timeout=10).json()
    assert stats["submit"] == 1 and stats["status"] == 1 and stats["tasks"] == 1
    log = requests.get(sim.base_url + "/_sim/log", timeout=10).json()
    assert [e["status"] for e in log if e["kind"] == "submit"] == [200, 400]
    assert "any-key" not in json.dumps(log)
    reply = requests.post(sim.base_url + "/_sim/faults", json={"rate": 1.0, "kinds": ["503"]}, timeout=10)
    assert reply.status_code == 200 and post(sim, body()).status_code == 503


def test_cli_prints_its_base_url():
    proc = subprocess.Popen(
        [sys.executable, "-m", "kling_nb.sim", "--port", "0", "--run-s", "0.1"], stdout=subprocess.PIPE, text=True
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert requests.post(url + SUBMIT, json=body(), headers=KEY, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
