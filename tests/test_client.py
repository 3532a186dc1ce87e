"""The client against the simulator over loopback, and against scripted answers through the
transport seam (Session.mount) where a rule needs an exact sequence of failures."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from kling_nb.errors import (
    AuthError,
    ConfigError,
    ContentPolicyError,
    DownloadError,
    ExpiredError,
    KlingError,
    NotFoundError,
    RateLimitError,
    ServerError,
    SpecError,
    SubmitUnknownError,
    TransportError,
)
from kling_nb.service.client import Client
from kling_nb.sim import Faults, SimConfig, Simulator

from .hostile_server import tiny_mp4
from .scripted_transport import Scripted

SECRET = "sk-SECRET-123"
BODY = {"model": "kling-video-o1", "prompt": "A kite"}


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.05, run_s=0.3)) as s:
        yield s


@pytest.fixture
def client(sim):
    with Client(sim.base_url, SECRET, backoff_base=0.01, backoff_cap=0.05, read_timeout=2) as c:
        yield c


def finish(client, task_id):
    for _ in range(200):
        status = client.status(task_id)
        if status.is_final:
            return status
        time.sleep(0.03)
    raise AssertionError("never finished")


def test_submit_poll_download(client, tmp_path):
    task = client.submit(BODY)
    assert task.status == "queued" and task.id.startswith("video_")
    done = finish(client, task.id)
    assert done.status == "completed" and done.url and done.expires_at
    path = client.download(done.url, tmp_path / "out.mp4")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert list(tmp_path.iterdir()) == [path]  # no .part left


def test_upload_a_real_png(client, tmp_path):
    Image.new("RGB", (16, 16), (9, 9, 9)).save(tmp_path / "x.png")
    url = client.upload(tmp_path / "x.png")
    assert url.startswith("http://127.0.0.1") and url.endswith(".png")


def test_service_errors_carry_status_code_and_message(client):
    with pytest.raises(KlingError) as err:
        client.submit({**BODY, "duration": 7})
    assert err.value.status == 400 and "duration" in err.value.message
    with pytest.raises(ContentPolicyError) as err:
        client.submit({**BODY, "prompt": "sim:reject x"})
    assert err.value.status == 422 and err.value.code == "content_policy_violation"
    with pytest.raises(NotFoundError):
        client.status("video_UNKNOWN")


def test_wrong_or_missing_key():
    with Simulator(key="right", config=SimConfig(queue_s=0, run_s=0.1)) as sim:
        with Client(sim.base_url, "wrong") as c, pytest.raises(AuthError) as err:
            c.submit(BODY)
        assert err.value.status == 401
        with Client(sim.base_url, None, environ={}) as c, pytest.raises(ConfigError, match="TOAPIS_API_KEY"):
            c.submit(BODY)


def test_configuration_from_environment():
    c = Client(environ={"TOAPIS_BASE_URL": "http://127.0.0.1:9", "TOAPIS_API_KEY": SECRET})
    assert c.base_url == "http://127.0.0.1:9" and SECRET not in repr(c) and "***" in repr(c)
    c.close()
    c = Client(environ={})
    assert c.base_url == "https://toapis.com"
    c.close()


@pytest.mark.parametrize("url", ["http://toapis.com", "http://10.0.0.5:8000", "ftp://x", "not a url"])
def test_plain_http_to_remote_hosts_is_refused(url):
    with pytest.raises(ConfigError):
        Client(url, SECRET)


@pytest.mark.parametrize("task_id", ["../uploads", "a/b", "x\ny", ""])
def test_hostile_task_ids_are_refused_before_sending(client, sim, task_id):
    with pytest.raises(KlingError):
        client.status(task_id)
    assert sim.count("status") == 0


# -- retries against the simulator's faults ----------------------------------------------
def test_status_retries_through_429_and_5xx(client, sim):
    task = client.submit(BODY)
    sim.set_faults(Faults(rate=0.6, kinds=("429", "500", "502", "503"), seed=3, retry_after=0.01))
    assert finish(client, task.id).status == "completed"
    statuses = [e["status"] for e in sim.log if e["kind"] == "status"]
    assert {429, 500, 502, 503} & set(statuses) and 200 in statuses


def test_submit_outcome_unknown_is_never_resent(client, sim):
    sim.set_faults(Faults(rate=1.0, kinds=("drop_after_accept",)))
    with pytest.raises(SubmitUnknownError, match="billed"):
        client.submit(BODY)
    assert sim.count("submit") == 1
    assert len([e for e in sim.log if e["kind"] == "submit"]) == 1


@pytest.mark.parametrize("kind", ["500", "502", "drop"])
def test_submit_after_possible_acceptance_is_not_retried(client, sim, kind):
    sim.set_faults(Faults(rate=1.0, kinds=(kind,)))
    with pytest.raises(SubmitUnknownError):
        client.submit(BODY)
    assert len([e for e in sim.log if e["kind"] == "submit"]) == 1


def test_submit_rate_limited_is_retried_because_it_was_refused(client, sim):
    sim.set_faults(Faults(rate=0.5, kinds=("429",), seed=1, retry_after=0.01))
    task = client.submit(BODY)
    assert sim.count("submit") == 1
    # seed 1 refuses the first two POSTs: each refusal was resent, and the third was accepted
    submits = [e for e in sim.log if e["kind"] == "submit"]
    assert [(e["status"], e["fault"]) for e in submits] == [(429, "429"), (429, "429"), (200, None)]
    assert submits[-1]["task_id"] == task.id


def test_submit_read_timeout_is_unknown(sim):
    sim.set_faults(Faults(rate=1.0, kinds=("slow",), slow_s=1.0))
    with Client(sim.base_url, SECRET, read_timeout=0.2) as c, pytest.raises(SubmitUnknownError):
        c.submit(BODY)
    assert len([e for e in sim.log if e["kind"] == "submit"]) == 1


def test_truncated_download_is_retried_and_never_left_partial(client, sim, tmp_path):
    done = finish(client, client.submit(BODY).id)
    sim.set_faults(Faults(rate=0.5, kinds=("truncate",), seed=4))  # seed 4: first try cut, second whole
    path = client.download(done.url, tmp_path / "v.mp4")
    assert path.read_bytes()[4:8] == b"ftyp"
    assert [e["fault"] for e in sim.log if e["kind"] == "download"] == ["truncate", None]  # cut once, fetched again
    sim.set_faults(Faults(rate=1.0, kinds=("truncate",)))
    with pytest.raises(DownloadError):
        client.download(done.url, tmp_path / "w.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_expired_url():
    with (
        Simulator(config=SimConfig(queue_s=0, run_s=0.05, result_lifetime_s=0.2)) as sim,
        Client(sim.base_url, SECRET) as c,
    ):
        done = finish(c, c.submit(BODY).id)
        time.sleep(0.3)
        with pytest.raises(ExpiredError):
            c.download(done.url, Path("/nonexistent-dir/never.mp4"))


# -- the transport seam: exact sequences ----------------------------------------------------
def scripted_client(script, sleeps):
    session = requests.Session()
    adapter = Scripted(script)
    session.mount("https://", adapter)
    client = Client(
        "https://api.example",
        SECRET,
        session=session,
        sleep=sleeps.append,
        backoff_base=1,
        backoff_cap=8,
        max_retries=3,
    )
    return client, adapter


TASK = {"id": "video_1", "status": "queued", "progress": 0, "created_at": 1}


def test_retry_after_is_honoured_and_backoff_capped():
    sleeps = []
    client, adapter = scripted_client(
        [
            (429, {"error": {"message": "slow down"}}, {"Retry-After": "5"}),
            (503, {}, {}),
            (502, {}, {}),
            (200, TASK, {}),
        ],
        sleeps,
    )
    assert client.status("video_1").status == "queued"
    assert len(adapter.requests) == 4 and len(sleeps) == 3
    assert sleeps[0] == 5  # Retry-After beats the (smaller) jittered backoff of the first retry
    assert all(0 <= s <= 8 for s in sleeps)


def test_status_gives_up_after_max_retries():
    sleeps = []
    client, adapter = scripted_client([(500, {"error": {"message": "boom"}}, {})] * 4, sleeps)
    with pytest.raises(ServerError, match="boom"):
        client.status("video_1")
    assert len(adapter.requests) == 4 and len(sleeps) == 3


def test_connection_refused_submit_is_retried_because_nothing_was_sent():
    sleeps = []
    refused = requests.ConnectionError(Exception("NewConnectionError: Connection refused"))
    client, adapter = scripted_client([refused, (200, TASK, {})], sleeps)
    assert client.submit(BODY).id == "video_1"
    assert len(adapter.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError(Exception("RemoteDisconnected")),
        requests.ReadTimeout("read timed out"),
        (500, {}, {}),
        (504, {}, {}),
        (200, b"<html>not json</html>", {}),
    ],
    ids=["dropped", "read-timeout", "500", "504", "garbage-reply"],
)
def test_every_unknown_submit_outcome_is_sent_once(failure):
    sleeps = []
    client, adapter = scripted_client([failure, (200, TASK, {})], sleeps)
    with pytest.raises(SubmitUnknownError):
        client.submit(BODY)
    assert len(adapter.requests) == 1


def test_rate_limited_submit_is_retried():
    sleeps = []
    client, adapter = scripted_client([(429, {}, {"Retry-After": "1"}), (200, TASK, {})], sleeps)
    assert client.submit(BODY).id == "video_1"
    assert len(adapter.requests) == 2 and sleeps == [1]  # one wait, exactly the Retry-After


def test_non_json_error_page_becomes_a_short_message():
    client, _ = scripted_client([(400, b"<html>" + b"x" * 5000 + b"</html>", {})], [])
    with pytest.raises(KlingError) as err:
        client.status("video_1")
    assert len(err.value.message) < 100 and "<html>" not in err.value.message


def test_key_goes_only_to_the_api_host():
    client, adapter = scripted_client([(200, TASK, {})], [])
    client.status("video_1")
    assert adapter.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    session = requests.Session()
    video = tiny_mp4()  # a real clip: a signature followed by zeros is no longer taken for a video
    cdn = Scripted([(200, video, {"Content-Length": str(len(video))})])
    session.mount("https://", cdn)
    client = Client("https://api.example", SECRET, session=session)
    try:
        client.download("https://cdn.example/x.mp4", Path("/tmp") / f"kling-test-{time.time_ns()}.mp4").unlink()
    finally:
        client.close()
    assert "Authorization" not in cdn.requests[0].headers


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://x/y"])
def test_redirects_off_http_are_refused(tmp_path, location):
    session = requests.Session()
    session.mount("https://", Scripted([(302, b"", {"Location": location})]))
    client = Client("https://api.example", SECRET, session=session)
    with pytest.raises(DownloadError, match="redirect"):
        client.download("https://cdn.example/x.mp4", tmp_path / "x.mp4")
    client.close()
    assert list(tmp_path.iterdir()) == []


def test_non_video_download_leaves_nothing(tmp_path):
    session = requests.Session()
    session.mount("https://", Scripted([(200, b"<html>surprise</html>", {})]))
    client = Client("https://api.example", SECRET, session=session)
    with pytest.raises(DownloadError, match="not a video"):
        client.download("https://cdn.example/x.mp4", tmp_path / "x.mp4")
    client.close()
    assert list(tmp_path.iterdir()) == []


def test_the_key_never_appears_in_errors_or_logs(client, sim, caplog):
    caplog.set_level(logging.DEBUG)
    messages = []
    for call in (
        lambda: client.submit({**BODY, "mode": "x"}),
        lambda: client.status("video_NONE"),
        lambda: client.submit({**BODY, "prompt": "sim:reject"}),
    ):
        with pytest.raises(KlingError) as err:
            call()
        messages += [str(err.value), repr(err.value), err.value.message]
    sim.set_faults(Faults(rate=1.0, kinds=("503",)))
    with pytest.raises(KlingError) as err:
        client.status("video_X")
    messages += [str(err.value), repr(err.value)]
    assert not any(SECRET in m for m in messages)
    assert SECRET not in caplog.text and SECRET not in repr(client)


def test_errors_are_kling_errors_not_spec_errors(client):
    with pytest.raises(KlingError) as err:
        client.submit({**BODY, "mode": "x"})
    assert not isinstance(err.value, SpecError)
    assert isinstance(RateLimitError("x", status=429), KlingError) and isinstance(TransportError("x"), KlingError)
