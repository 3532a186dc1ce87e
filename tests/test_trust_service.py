"""The client against a hostile loopback server: what it may trust, what it must refuse.

Every test drives the real Client over real HTTP (tests/hostile_server.py) and asserts on
outcomes and on the requests the server recorded, never on timing.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
import trustme

from kling_nb import errors
from kling_nb.contract import MAX_IMAGE_BYTES, is_loopback_host
from kling_nb.errors import (
    APIError,
    ConfigError,
    DownloadError,
    KlingError,
    SubmitUnknownError,
    TransportError,
)
from kling_nb.service.client import Client

from .hostile_server import HostileServer, Reply, json_reply, tiny_mp4, trickle, video_reply
from .leaks import frames_holding

SECRET = "sk-TRUSTtest0123456789abcdef"
BODY = {"model": "kling-video-o1", "prompt": "A kite"}
SUBMIT = "/v1/videos/generations"
STATUS = "/v1/videos/generations/video_1"
UPLOAD = "/v1/uploads/images"
TASK = {"id": "video_1", "status": "queued", "progress": 0, "created_at": 1}
LEAKY = f"denied for {SECRET} (Authorization: Bearer tok-ABC.123)"


def client(server: HostileServer | str, **options) -> Client:
    url = server if isinstance(server, str) else server.url
    settings = {"max_retries": 0, "backoff_base": 0.01, "backoff_cap": 0.02, "read_timeout": 5, "environ": {}}
    return Client(url, SECRET, **{**settings, **options})


def leaks(*texts) -> bool:
    return any(SECRET in str(t) or "tok-ABC" in str(t) for t in texts)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 1. server text is scrubbed and capped ---------------------------------------------------------
def test_scrub_replaces_the_key_and_bearer_tokens_and_caps_the_length():
    from kling_nb.service.secret import Secret, scrub

    text = f"key {SECRET}, bare {SECRET[3:]}; bearer\tXYZ.1 and Authorization: BEARER q-2"
    for key in (SECRET, Secret(SECRET)):
        out = scrub(text, key)
        assert SECRET not in out and SECRET[3:] not in out and "XYZ.1" not in out and "q-2" not in out
        assert out == "key ***, bare ***; *** and Authorization: ***"
    # a one-letter test key is not hunted through every word
    assert scrub("task video_k not found", "k") == "task video_k not found"
    assert len(scrub("x" * 100_000, SECRET)) <= 500
    assert scrub("two\nlines\x1b[31m", None) == "two lines [31m"
    # the key is removed before the cut: a cut never leaves a piece of it
    assert "sk-TRUST" not in scrub("y" * 490 + SECRET, SECRET)


@pytest.mark.parametrize(
    "payload",
    [
        {"error": {"code": "bad", "message": LEAKY, "type": "invalid_request"}},
        {"error": {"code": "Bearer tok-ABC.123", "message": "no", "type": "x"}},
        {"error": {"message": "no", "type": f"type {SECRET}"}},
        {"error": LEAKY},
        {"message": LEAKY},
    ],
    ids=["message", "code", "type", "plain-string-error", "top-level-message"],
)
def test_service_error_text_is_scrubbed(payload):
    with HostileServer() as server, client(server) as c:
        server.on("GET", STATUS, json_reply(payload, 400))
        with pytest.raises(APIError) as err:
            c.status("video_1")
    e = err.value
    assert not leaks(str(e), repr(e), e.message, e.code, e.type, e.service_message)
    if "denied" in json.dumps(payload):
        assert "denied for ***" in e.message  # the service's own words are kept


def test_service_error_code_and_message_are_capped():
    with HostileServer() as server, client(server) as c:
        server.on("GET", STATUS, json_reply({"error": {"code": "c" * 100_000, "message": "m" * 100_000}}, 400))
        with pytest.raises(APIError) as err:
            c.status("video_1")
    assert len(err.value.message) < 1100 and len(str(err.value.code)) <= 500


def test_a_failed_tasks_error_is_scrubbed_and_capped():
    with HostileServer() as server, client(server) as c:
        server.on(
            "GET",
            STATUS,
            json_reply(
                {
                    "id": "video_1",
                    "status": "failed",
                    "error": {"code": "Bearer tok-ABC.123", "message": LEAKY + "y" * 5000},
                }
            ),
        )
        task = c.status("video_1")
    assert task.status == "failed" and not leaks(task.error_code, task.error_message)
    assert task.error_message.startswith("denied for ***") and len(task.error_message) <= 500


def test_an_upload_refusal_on_http_200_is_scrubbed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with HostileServer() as server, client(server) as c:
        server.on("POST", UPLOAD, json_reply({"success": False, "message": LEAKY}))
        with pytest.raises(APIError) as err:
            c.upload(tmp_path / "a.png")
    assert "denied for ***" in err.value.message and not leaks(str(err.value), repr(err.value))


# -- 2. the key lives in a Secret -------------------------------------------------------------------
def test_a_secret_hides_the_key_everywhere_but_reveal():
    from kling_nb.service.secret import Secret

    s = Secret(f"  {SECRET}\n")
    assert s.reveal() == SECRET
    assert repr(s) == str(s) == f"{s}" == "Secret('***')" and SECRET not in repr([s])
    assert copy.deepcopy(s) is s and Secret(s) == s
    with pytest.raises(TypeError):
        pickle.dumps(s)


@pytest.mark.parametrize(
    "bad",
    [
        SECRET[:9] + "\n" + SECRET[9:],
        SECRET + "\x00",
        SECRET[:9] + "\t" + SECRET[9:],
        SECRET[:9] + "\u200b" + SECRET[9:],
        SECRET[:9] + "\x7f" + SECRET[9:],
    ],
    ids=["newline", "nul", "tab", "zero-width", "del"],
)
def test_a_key_with_a_control_character_inside_is_refused(bad):
    from kling_nb.service.secret import Secret

    with pytest.raises(ConfigError) as err:
        Secret(bad)
    assert SECRET[:9] not in err.value.message and SECRET[9:] not in err.value.message
    for settings in ({"api_key": bad, "environ": {}}, {"environ": {"TOAPIS_API_KEY": bad}}):
        with pytest.raises(ConfigError) as err:
            Client("https://api.example", **settings)
        assert frames_holding(err.value.__traceback__.tb_next, SECRET[9:]) == []  # nor in any frame's locals


def test_the_client_keeps_only_the_holder_and_sends_the_stripped_key():
    from kling_nb.service.secret import Secret

    with HostileServer() as server:
        server.on("GET", STATUS, json_reply(TASK))
        for key in (SECRET + "\n", Secret(SECRET)):
            with Client(server.url, key, environ={}, max_retries=0) as c:
                c.status("video_1")
                plain = [name for name, value in vars(c).items() if isinstance(value, str) and SECRET in value]
                assert plain == [] and SECRET not in repr(c) and "***" in repr(c)
        with Client(server.url, environ={"TOAPIS_API_KEY": f"{SECRET}\r\n"}, max_retries=0) as c:
            c.status("video_1")
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {SECRET}"] * 3


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999", "http://127.0.0.1:port", "https://", "https:///v1", "http://:80", "http://127.0.0.1:0"],
)
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_a_bad_base_url_is_one_line_and_no_frame_holds_the_key(url, how):
    if how == "argument":
        settings = {"api_key": SECRET, "environ": {}}
    else:
        settings = {"environ": {"TOAPIS_API_KEY": SECRET}}
    with pytest.raises(ConfigError) as err:
        Client(url, **settings)
    assert "\n" not in err.value.message and SECRET not in err.value.message
    # what `%xmode Verbose` would print: every kling_nb frame's locals (not this test's own)
    assert frames_holding(err.value.__traceback__.tb_next, SECRET) == []
    assert err.value.__context__ is None or err.value.__suppress_context__


# -- 3. submit: accepted, unknown, retried, never sent ---------------------------------------------
@pytest.mark.parametrize("status", [200, 201, 202])
def test_any_2xx_with_a_task_id_is_accepted(status):
    with HostileServer() as server, client(server) as c:
        server.on("POST", SUBMIT, json_reply(TASK, status))
        assert c.submit(BODY).id == "video_1"
    assert len(server.hits("POST")) == 1


@pytest.mark.parametrize(
    "reply",
    [
        json_reply({"status": "queued"}),
        json_reply({"id": 7, "status": "queued"}),
        json_reply({"id": "../x", "status": "queued"}),
        Reply(204),
        Reply(200, body=b"<html>ok</html>"),
        json_reply(["video_1"], 201),
    ],
    ids=["no-id", "int-id", "bad-id", "204", "html", "list"],
)
def test_a_2xx_without_a_usable_task_id_is_unknown(reply):
    with HostileServer() as server, client(server, max_retries=3) as c:
        server.on("POST", SUBMIT, reply, json_reply(TASK))
        with pytest.raises(SubmitUnknownError):
            c.submit(BODY)
    assert len(server.hits("POST")) == 1


@pytest.mark.parametrize(
    "reply",
    [
        json_reply({}, 500),
        json_reply({}, 502),
        json_reply({}, 503),
        json_reply({}, 504),
        Reply(drop=True),
        Reply(200, body=b'{"id": "video_1"', content_length=400),
    ],
    ids=["500", "502", "503", "504", "dropped-after-sending", "reply-cut-off"],
)
def test_a_submit_that_may_have_been_taken_is_sent_exactly_once(reply):
    with HostileServer() as server, client(server, max_retries=3) as c:
        server.on("POST", SUBMIT, reply, json_reply(TASK))
        with pytest.raises(SubmitUnknownError, match="billed"):
            c.submit(BODY)
    assert len(server.hits("POST")) == 1


def test_a_refused_submit_429_is_retried():
    with HostileServer() as server, client(server, max_retries=3) as c:
        server.on(
            "POST", SUBMIT, json_reply({"error": {"message": "slow"}}, 429, {"Retry-After": "0"}), json_reply(TASK)
        )
        assert c.submit(BODY).id == "video_1"
    assert len(server.hits("POST")) == 2


def test_a_connection_never_made_is_retried_then_says_nothing_was_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    sleeps = []
    with client(f"http://127.0.0.1:{port}", max_retries=2, sleep=sleeps.append) as c:
        with pytest.raises(TransportError, match="nothing was sent"):
            c.submit(BODY)
    assert len(sleeps) == 2


def _not_sent():
    return getattr(errors, "NotSentError", None)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object()], ids=["nan", "inf", "object"])
def test_a_body_that_is_not_json_is_never_sent(value):
    with HostileServer() as server, client(server) as c:
        server.on("POST", SUBMIT, json_reply(TASK))
        with pytest.raises(KlingError) as err:
            c.submit({**BODY, "seed": value})
    assert _not_sent() is not None and isinstance(err.value, _not_sent())
    assert not isinstance(err.value, SubmitUnknownError) and "nothing was sent" in err.value.message
    assert server.requests == []


def test_a_header_that_cannot_be_sent_is_never_sent():
    session = requests.Session()
    session.headers["X-Trace"] = "a\r\nInjected: 1"
    with HostileServer() as server:
        server.on("POST", SUBMIT, json_reply(TASK))
        with Client(server.url, SECRET, session=session, environ={}) as c, pytest.raises(KlingError) as err:
            c.submit(BODY)
    assert _not_sent() is not None and isinstance(err.value, _not_sent())
    assert "nothing was sent" in err.value.message and server.requests == []


def test_not_sent_error_is_in_the_tree_and_exported():
    assert "NotSentError" in errors.__all__ and "NotSentError" in errors.__doc__
    assert issubclass(errors.NotSentError, KlingError)


# -- 4. answers read liberally; the task id is ours ------------------------------------------------
@pytest.mark.parametrize(
    "result",
    [
        {"url": "https://cdn.example/v.mp4", "thumbnail": "https://cdn.example/t.jpg"},
        {"type": "video", "data": [{"url": "https://cdn.example/v.mp4", "thumbnail": "https://cdn.example/t.jpg"}]},
        {"data": [{"url": "https://cdn.example/v.mp4", "format": "mp4"}], "thumbnail": "https://cdn.example/t.jpg"},
    ],
    ids=["result.url", "result.data", "mixed"],
)
def test_result_and_thumbnail_urls_are_read_liberally(result):
    with HostileServer() as server, client(server) as c:
        server.on(
            "GET", STATUS, json_reply({"id": "video_1", "status": "completed", "progress": 100, "result": result})
        )
        task = c.status("video_1")
    assert task.url == "https://cdn.example/v.mp4" and task.thumbnail_url == "https://cdn.example/t.jpg"


def test_a_thumbnail_that_is_not_http_is_dropped():
    with HostileServer() as server, client(server) as c:
        server.on(
            "GET",
            STATUS,
            json_reply(
                {
                    "id": "video_1",
                    "status": "completed",
                    "result": {"url": "https://cdn.example/v.mp4", "thumbnail": "javascript:alert(1)"},
                }
            ),
        )
        assert c.status("video_1").thumbnail_url is None


def test_a_plain_string_error_keeps_its_text():
    with HostileServer() as server, client(server) as c:
        server.on("GET", STATUS, json_reply({"id": "video_1", "status": "failed", "error": "The prompt was too long"}))
        task = c.status("video_1")
    assert task.status == "failed" and task.error_message == "The prompt was too long"


@pytest.mark.parametrize("reply_id", ["video_OTHER", 42, None, "../../x", ""], ids=repr)
def test_a_status_reply_never_changes_the_task_id(reply_id):
    payload = {"status": "in_progress", "progress": 30}
    if reply_id is not None:
        payload["id"] = reply_id
    with HostileServer() as server, client(server) as c:
        server.on("GET", STATUS, json_reply(payload))
        task = c.status("video_1")
    assert task.id == "video_1" and task.status == "in_progress" and task.progress == 30


# -- 5. downloads -----------------------------------------------------------------------------------
def test_a_download_is_checked_and_leaves_only_the_video(tmp_path):
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        path = c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert path.read_bytes() == tiny_mp4() and files_in(tmp_path) == ["v.mp4"]


def test_a_symlinked_destination_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "v.mp4").symlink_to(victim)
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        with pytest.raises(DownloadError, match="symbolic link"):
            c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert victim.read_text() == "precious" and (tmp_path / "v.mp4").is_symlink()
    assert files_in(tmp_path) == ["v.mp4", "victim.txt"]


def test_a_planted_symlink_at_a_predictable_temp_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "v.mp4.part").symlink_to(victim)
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert victim.read_bytes() == b"precious" and (tmp_path / "v.mp4").read_bytes() == tiny_mp4()


def test_two_concurrent_downloads_to_one_destination_both_succeed(tmp_path):
    video = tiny_mp4()
    pieces = [video[i : i + 512] for i in range(0, len(video), 512)]
    results: list = []
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", Reply(headers={"Content-Type": "video/mp4"}, body=pieces, delay=0.02))

        def fetch():
            try:
                results.append(c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4"))
            except BaseException as err:  # noqa: BLE001 - reported below
                results.append(err)

        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert results == [tmp_path / "v.mp4"] * 2, results
    assert (tmp_path / "v.mp4").read_bytes() == video and files_in(tmp_path) == ["v.mp4"]


def test_an_existing_identical_destination_counts_as_success(tmp_path):
    (tmp_path / "v.mp4").write_bytes(tiny_mp4())
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        assert c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4") == tmp_path / "v.mp4"
    assert (tmp_path / "v.mp4").read_bytes() == tiny_mp4() and files_in(tmp_path) == ["v.mp4"]


def test_a_chunked_video_whose_first_chunk_is_8_bytes_is_a_video(tmp_path):
    video = tiny_mp4()
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply([video[:8], video[8:12], video[12:]], chunked=True, delay=0.05))
        path = c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert path.read_bytes() == video


@pytest.mark.parametrize(
    "reply, words",
    [
        (video_reply(b"\0\0\0\x18ftypisom" + b"\0" * 2000), "not a playable video"),
        (video_reply(tiny_mp4()[:64] + b"junk" * 200), "not a playable video"),
        (video_reply(b"<html>surprise</html>"), "not a video"),
        (video_reply(b"\0\0\0\x18ftyp"), "not a video"),
        (video_reply(b""), "empty"),
        (video_reply(content_length=len(tiny_mp4()) + 100), "truncated|broke off"),
    ],
    ids=["mp4-signature-then-junk", "mp4-header-then-junk", "html", "short", "empty", "truncated"],
)
def test_a_bad_download_is_refused_and_leaves_nothing(tmp_path, reply, words):
    with HostileServer() as server, client(server, max_retries=1) as c:
        server.on("GET", "/v/x.mp4", reply)
        with pytest.raises(DownloadError, match=words):
            c.download(server.url + "/v/x.mp4", tmp_path / "x.mp4")
    assert files_in(tmp_path) == []


def test_importing_the_client_does_not_import_pyav():
    code = "import sys, kling_nb.service.client; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- 6. limits --------------------------------------------------------------------------------------
def test_a_trickled_status_body_is_cut_at_the_total_limit():
    with HostileServer() as server, client(server, max_request_s=0.5) as c:
        server.on("GET", STATUS, trickle(json.dumps(TASK).encode(), 0.1))
        with pytest.raises(TransportError, match="0.5 s"):
            c.status("video_1")
        assert server.outcome() == "broken"  # the client hung up; it did not wait for the whole body


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A certificate authority of the test's own, and a server context with a certificate for
    127.0.0.1 that it signed (trustme): (server context, CA file for the client to trust)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_context, ca_file


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_trickled_reply_head_is_cut_at_the_total_limit(scheme, tls):
    """The real service is HTTPS: the limit must cut a trickling TLS connection as it cuts a plain one."""
    head = {f"X-Slow-{i}": "1" for i in range(12)}
    server_context, ca_file = tls
    with (
        HostileServer(tls=server_context if scheme == "https" else None) as server,
        client(server, max_request_s=0.5) as c,
    ):
        assert server.url.startswith(f"{scheme}://")
        c.session.verify = str(ca_file)  # the test's own authority, in place of the system's
        server.on(
            "GET",
            STATUS,
            Reply(
                headers={"Content-Type": "application/json", **head}, body=json.dumps(TASK).encode(), header_delay=0.25
            ),
        )
        with pytest.raises(TransportError, match="0.5 s"):
            c.status("video_1")
        assert server.outcome() == "broken"  # cut inside the head, before the body could be checked


def test_a_trickled_submit_reply_is_unknown_and_sent_once():
    with HostileServer() as server, client(server, max_request_s=0.5, max_retries=3) as c:
        server.on("POST", SUBMIT, trickle(json.dumps(TASK).encode(), 0.1))
        with pytest.raises(SubmitUnknownError):
            c.submit(BODY)
    assert len(server.hits("POST")) == 1


def test_a_trickled_download_is_cut_leaves_nothing_and_is_not_retried(tmp_path):
    video = tiny_mp4()
    with HostileServer() as server, client(server, max_download_s=0.5, max_retries=3) as c:
        server.on("GET", "/v/ok.mp4", video_reply([video[i : i + 64] for i in range(0, len(video), 64)], delay=0.1))
        with pytest.raises(DownloadError, match="0.5 s"):
            c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
        assert server.outcome() == "broken"
    assert files_in(tmp_path) == [] and len(server.requests) == 1  # a whole limit used once is not used again


def test_a_status_reply_over_1_mb_is_refused():
    with HostileServer() as server, client(server) as c:
        server.on("GET", STATUS, json_reply({**TASK, "padding": "x" * (1 << 20)}))
        with pytest.raises(TransportError, match="larger than"):
            c.status("video_1")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_video_over_the_cap_is_refused_and_leaves_nothing(tmp_path, chunked):
    video = tiny_mp4()
    with HostileServer() as server, client(server, max_video_bytes=1000) as c:
        server.on("GET", "/v/ok.mp4", video_reply([video[:600], video[600:]], chunked=chunked))
        with pytest.raises(DownloadError, match="larger than"):
            c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert files_in(tmp_path) == []


# -- 7. plain http only to real loopback; schemes in any case --------------------------------------
@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.attacker.example", False),
        ("localhost.evil.com", False),
        ("127.0.0.1.nip.io", False),
        ("10.0.0.1", False),
        ("", False),
        (None, False),
        ("evil-localhost", False),
    ],
)
def test_is_loopback_host(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    "url", ["http://127.attacker.example", "http://localhost.evil.com:8000", "http://127.0.0.1.nip.io"]
)
def test_plain_http_to_a_look_alike_host_is_refused(url):
    with pytest.raises(ConfigError, match="plain http"):
        Client(url, SECRET, environ={})


@pytest.mark.parametrize("url", ["HTTP://127.0.0.1:1", "Http://LOCALHOST:1", "http://[::1]:1/"])
def test_scheme_checks_ignore_case(url):
    with Client(url, SECRET, environ={}) as c:
        assert c.base_url.startswith("http://")


def test_the_simulator_accepts_an_upper_case_scheme_too():
    from kling_nb.sim.rules import check_body

    check_body(
        {
            **BODY,
            "prompt": "<<<image_1>>> flies",
            "metadata": {"image_list": [{"image_url": "HTTPS://example.com/a.png"}]},
        }
    )


def test_a_download_url_scheme_in_capitals_is_http(tmp_path):
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        c.download(server.url.replace("http://", "HTTP://") + "/v/ok.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == tiny_mp4()


# -- 8. the upload limit, said exactly --------------------------------------------------------------
def test_an_image_one_byte_over_the_limit_is_refused_in_bytes(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * (MAX_IMAGE_BYTES + 1 - 3))
    with HostileServer() as server, client(server) as c, pytest.raises(KlingError) as err:
        c.upload(path)
    assert "10,485,761 bytes; the limit is 10,485,760 bytes (10 MiB)" in err.value.message
    assert server.requests == []


def test_an_image_exactly_at_the_limit_is_sent(tmp_path):
    path = tmp_path / "edge.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * (MAX_IMAGE_BYTES - 3))
    with HostileServer() as server, client(server) as c:
        server.on(
            "POST",
            UPLOAD,
            json_reply(
                {"success": True, "message": "", "data": {"id": "upload_1", "url": "https://cdn.example/e.jpg"}}
            ),
        )
        assert c.upload(path) == "https://cdn.example/e.jpg"
    assert len(server.requests) == 1


# -- 9. a full disk ---------------------------------------------------------------------------------
def test_a_full_disk_is_a_download_error_that_leaves_nothing(tmp_path, monkeypatch):
    real_write = os.write

    def full_disk(fd, data):  # only the download's own temporary file is on the "full" disk
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with HostileServer() as server, client(server) as c:
        server.on("GET", "/v/ok.mp4", video_reply())
        with pytest.raises(DownloadError, match="no space left on device while saving v.mp4"):
            c.download(server.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert files_in(tmp_path) == []


# -- 10. the key never follows a redirect off the API host -----------------------------------------
@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_status_redirect_is_not_followed(code):
    with HostileServer() as api, HostileServer() as other, client(api) as c:
        other.on("GET", STATUS, json_reply(TASK))
        api.on("GET", STATUS, Reply(code, headers={"Location": other.url + STATUS}))
        with pytest.raises(TransportError, match="redirect"):
            c.status("video_1")
    assert other.requests == []


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_submit_redirect_is_not_followed_and_is_unknown(code):
    with HostileServer() as api, HostileServer() as other, client(api) as c:
        other.on("POST", SUBMIT, json_reply(TASK))
        api.on("POST", SUBMIT, Reply(code, headers={"Location": other.url + SUBMIT}))
        with pytest.raises(SubmitUnknownError):
            c.submit(BODY)
    assert other.requests == [] and len(api.requests) == 1


def test_an_upload_redirect_is_not_followed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with HostileServer() as api, HostileServer() as other, client(api) as c:
        other.on("POST", UPLOAD, json_reply({"success": True, "data": {"url": "https://cdn.example/a.png"}}))
        api.on("POST", UPLOAD, Reply(307, headers={"Location": other.url + UPLOAD}))
        with pytest.raises(TransportError, match="redirect"):
            c.upload(tmp_path / "a.png")
    assert other.requests == []


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_a_download_redirect_off_host_drops_the_key(tmp_path, code):
    with HostileServer() as api, HostileServer() as cdn, client(api) as c:
        cdn.on("GET", "/v/ok.mp4", video_reply())
        api.on("GET", "/v/ok.mp4", Reply(code, headers={"Location": cdn.url + "/v/ok.mp4"}))
        c.download(api.url + "/v/ok.mp4", tmp_path / "v.mp4")
    assert api.requests[0].headers.get("Authorization") == f"Bearer {SECRET}"
    assert [r.headers.get("Authorization") for r in cdn.requests] == [None]
