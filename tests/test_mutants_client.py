"""The client's promises at their edges (gaps found by mutation testing, `make mutate`): the exact
request an upload sends and what each refusal says, the service's error read into the right
fields, key creation's answers, which connection failures count as "never sent", backoff,
racing downloads, disk errors, and reprs that never fail or leak."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import sys
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from kling_nb.errors import (
    APIError,
    ConfigError,
    DownloadError,
    KlingError,
    NotSentError,
    QuotaError,
    RateLimitError,
    SubmitUnknownError,
    TransportError,
)
from kling_nb.service.client import Client
from kling_nb.service.secret import Secret

from .hostile_server import tiny_mp4
from .leaks import frames_holding
from .scripted_transport import Scripted

SECRET = "sk-MUTANTtest0123456789abcdef"
NEW = "NEWkeyAAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjj"
BODY = {"model": "kling-video-o1", "prompt": "A kite"}
TASK = {"id": "video_1", "status": "queued", "progress": 0, "created_at": 1}


def scripted(*script, **options):
    session = requests.Session()
    adapter = Scripted(script)
    session.mount("https://", adapter)
    sleeps = []
    settings = {"session": session, "sleep": sleeps.append, "max_retries": 0, "environ": {}}
    client = Client("https://api.example", SECRET, **{**settings, **options})
    return client, adapter, sleeps


def png(tmp_path, name="still.png", size=None) -> Path:
    path = tmp_path / name
    data = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    if size is not None:
        data = data + b"\0" * (size - len(data))
    path.write_bytes(data)
    return path


# -- uploads ---------------------------------------------------------------------------------
def test_an_upload_sends_the_image_as_a_generation_file_and_returns_its_url(tmp_path):
    client, adapter, _ = scripted((200, {"success": True, "data": {"url": "https://cdn.example/a.png"}}, {}))
    assert client.upload(png(tmp_path)) == "https://cdn.example/a.png"
    (sent,) = adapter.requests
    assert sent.method == "POST" and sent.url == "https://api.example/v1/uploads/images"
    body = sent.body
    assert b'name="purpose"\r\n\r\ngeneration\r\n' in body
    assert b'name="file"; filename="still.png"\r\nContent-Type: image/png\r\n' in body
    assert body.count(b"\x89PNG") == 1 and sent.headers["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    "reply, message",
    [
        ({"success": False, "message": "bad image"}, "HTTP 200: bad image"),
        ({"success": False, "message": ""}, "HTTP 200: upload refused"),
        ({"success": False}, "HTTP 200: upload refused"),
        ({"success": True, "data": "https://cdn.example/a.png"}, "HTTP 200: upload refused"),
        ({"success": True}, "HTTP 200: upload refused"),
        (["https://cdn.example/a.png"], "HTTP 200: upload refused"),
        (
            {"success": False, "data": {"url": "https://cdn.example/a.png"}, "message": f"no {SECRET}"},
            "HTTP 200: no ***",
        ),
    ],
)
def test_an_upload_refusal_is_an_api_error_in_the_services_words(tmp_path, reply, message):
    client, _, _ = scripted((200, reply, {}))
    with pytest.raises(APIError) as err:
        client.upload(png(tmp_path))
    assert err.value.message == message and err.value.status == 200


@pytest.mark.parametrize("url", [None, 7, "ftp://cdn.example/a.png", "a.png"])
def test_an_upload_reply_without_an_http_url_is_a_transport_error(tmp_path, url):
    client, _, _ = scripted((200, {"success": True, "data": {"url": url}}, {}))
    with pytest.raises(TransportError) as err:
        client.upload(png(tmp_path))
    assert err.value.message == "the upload reply has no http(s) URL"


def test_an_image_at_the_limit_is_sent_and_one_byte_more_is_not(tmp_path):
    limit = 10 * 1024 * 1024
    client, adapter, _ = scripted((200, {"success": True, "data": {"url": "https://cdn.example/a.png"}}, {}))
    client.upload(png(tmp_path, "exact.png", size=limit))
    assert len(adapter.requests) == 1
    with pytest.raises(KlingError) as err:
        client.upload(png(tmp_path, "over.png", size=limit + 1))
    assert err.value.message == "over.png is 10,485,761 bytes; the limit is 10,485,760 bytes (10 MiB)"
    assert len(adapter.requests) == 1


@pytest.mark.parametrize("mib", [25, 20], ids=["far too big", "exactly twice the limit"])
def test_a_far_too_big_image_is_given_in_mib(tmp_path, mib):
    client, _, _ = scripted()
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(mib * 1024 * 1024)
    with pytest.raises(KlingError) as err:
        client.upload(path)
    assert err.value.message == f"huge.png is {mib}.0 MiB; the limit is 10,485,760 bytes (10 MiB)"


def test_an_image_that_grows_while_read_is_refused_by_what_was_read(tmp_path, monkeypatch):
    limit = 10 * 1024 * 1024
    path = png(tmp_path, "growing.png", size=100)
    client, adapter, _ = scripted()
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((0,) * 6 + (100,) + (0,) * 3))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (limit + 50))  # grew after the size was taken
    with pytest.raises(KlingError) as err:
        client.upload(path)
    monkeypatch.setattr(os, "fstat", real_fstat)
    assert err.value.message == "growing.png is 10,485,761 bytes; the limit is 10,485,760 bytes (10 MiB)"
    assert adapter.requests == []


def test_an_unreadable_or_non_image_file_is_named(tmp_path):
    client, adapter, _ = scripted()
    with pytest.raises(KlingError) as err:
        client.upload(tmp_path / "missing.png")
    assert err.value.message == "cannot read missing.png: No such file or directory"
    (tmp_path / "notes.png").write_bytes(b"just some text, not an image")
    with pytest.raises(KlingError) as err:
        client.upload(tmp_path / "notes.png")
    assert err.value.message == "notes.png is not a JPEG, PNG, WebP or GIF image"
    assert adapter.requests == []


# -- the service's error, read into the right fields ---------------------------------------------
@pytest.mark.parametrize(
    "status, reply, headers, expected",
    [
        # (status, message, code, type, class)
        (400, {"error": {"message": "bad", "code": "invalid", "type": "req"}}, {}, (400, "bad", "invalid", "req")),
        (400, {"error": {"message": "", "code": 7}}, {}, (400, "HTTP 400", 7, None)),
        (400, {"error": {"message": "bad", "code": True, "type": "req"}}, {}, (400, "bad", "req", "req")),
        (400, {"error": {"message": "bad", "type": "req"}}, {}, (400, "bad", "req", "req")),
        (400, {"error": {"message": "bad", "code": "same", "type": "same"}}, {}, (400, "bad", "same", None)),
        (400, {"error": {"message": "bad", "code": "", "type": 5}}, {}, (400, "bad", None, None)),
        (400, {"error": "plain words"}, {}, (400, "plain words", None, None)),
        (400, {"error": "", "message": "top"}, {}, (400, "top", None, None)),
        (400, {"message": ""}, {}, (400, "HTTP 400", None, None)),
        (400, [1, 2], {}, (400, "HTTP 400", None, None)),
        (400, b"<html>oops</html>", {}, (400, "HTTP 400", None, None)),
        (
            403,
            {"error": {"message": f"no for {SECRET}", "type": f"Bearer {SECRET}"}},
            {},
            (403, "no for ***", "***", "***"),
        ),
    ],
)
def test_an_error_reply_is_read_into_message_code_and_type(status, reply, headers, expected):
    client, _, _ = scripted((status, reply, headers))
    with pytest.raises(APIError) as err:
        client.status("video_1")
    assert (err.value.status, err.value.service_message, err.value.code, err.value.type) == expected


def test_a_rate_limit_carries_retry_after():
    client, _, _ = scripted((429, {"error": {"message": "slow"}}, {"Retry-After": "7"}))
    with pytest.raises(RateLimitError) as err:
        client.status("video_1")
    assert err.value.retry_after == 7.0


@pytest.mark.parametrize(
    "reply, message",
    [
        ({"error": {"message": "no credits", "remain_credits": 3}}, "no credits (3 credits left)"),
        ({"error": {"message": "no credits"}, "data": {"remain_credits": 2.5}}, "no credits (2.5 credits left)"),
        ({"message": "no credits", "remain_credits": 1}, "no credits (1 credits left)"),
        ({"message": "no credits"}, "no credits"),
    ],
)
def test_a_quota_refusal_states_the_credits_left_when_the_reply_does(reply, message):
    client, _, _ = scripted((402, reply, {}))
    with pytest.raises(QuotaError) as err:
        client.status("video_1")
    assert err.value.service_message == message


def test_credits_left_are_only_read_from_a_quota_refusal():
    client, _, _ = scripted((400, {"error": {"message": "bad", "remain_credits": 3}}, {}))
    with pytest.raises(APIError) as err:
        client.status("video_1")
    assert err.value.service_message == "bad"


# -- balances ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, path, refused",
    [("balance", "/v1/balance", "balance refused"), ("account_balance", "/v1/user/balance", "account balance refused")],
)
def test_a_balance_refusal_says_which_balance(call, path, refused):
    client, adapter, _ = scripted((200, {"success": False}, {}), (200, {"success": False, "message": "no"}, {}))
    with pytest.raises(APIError) as err:
        getattr(client, call)()
    assert (err.value.message, err.value.status) == (f"HTTP 200: {refused}", 200)
    assert adapter.requests[0].method == "GET" and adapter.requests[0].url == "https://api.example" + path
    with pytest.raises(APIError) as err:
        getattr(client, call)()
    assert err.value.message == "HTTP 200: no"


def test_a_failed_balance_read_names_what_was_read():
    client, _, _ = scripted(requests.ConnectionError("the connection dropped"))
    with pytest.raises(TransportError) as err:
        client.account_balance()
    assert err.value.message.startswith("account balance: ")


# -- creating keys -----------------------------------------------------------------------------------
def token_reply(**data):
    return (200, {"success": True, "data": {"key": NEW, "name": "class", "remain_quota": 500000, **data}}, {})


@pytest.mark.parametrize(
    "reply, words",
    [
        ((200, b"not json", {}), "creating the API key had an unknown outcome (HTTP 200, but the reply was not JSON)"),
        ((200, {"success": True, "data": {}}, {}), "(HTTP 200, but the reply carried no key)"),
        ((201, {"success": True}, {}), "(HTTP 201, but the reply carried no key)"),
        ((500, {}, {}), "(the service answered HTTP 500)"),
        ((302, {}, {}), "(the service answered HTTP 302)"),
    ],
)
def test_an_unclear_key_creation_is_unknown_and_says_why(reply, words):
    client, adapter, _ = scripted(reply)
    with pytest.raises(SubmitUnknownError) as err:
        client.create_token("class", credits=1)
    assert words in err.value.message
    assert err.value.message.endswith(
        "a key may have been made, so the request was not resent. Check the key list in your dashboard before "
        "creating another."
    )
    assert len(adapter.requests) == 1


def test_a_refused_key_creation_is_an_api_error_in_the_services_words():
    client, _, _ = scripted((200, {"success": False, "message": f"no, {SECRET} may not"}, {}))
    with pytest.raises(APIError) as err:
        client.create_token("class", credits=1)
    assert (err.value.message, err.value.status) == ("HTTP 200: no, *** may not", 200)
    client, _, _ = scripted((200, {"success": False}, {}))
    with pytest.raises(APIError) as err:
        client.create_token("class", credits=1)
    assert err.value.message == "HTTP 200: create_token refused"


def test_a_key_creation_error_reply_never_shows_the_new_key_even_without_its_prefix():
    client, _, _ = scripted((400, {"error": {"message": f"dup {NEW}, see sk-{NEW}"}, "key": f"sk-{NEW}"}, {}))
    with pytest.raises(APIError) as err:
        client.create_token("class", credits=1)
    assert err.value.service_message == "dup ***, see ***"


def test_a_made_key_is_held_only_as_a_secret():
    client, adapter, _ = scripted(token_reply())
    token = client.create_token("class", credits=1)
    assert NEW not in repr(token) and Secret(f"sk-{NEW}") == token.key
    sent = json.loads(adapter.requests[0].body)
    assert adapter.requests[0].url == "https://api.example/v1/tokens" and sent["name"] == "class"


def test_a_key_creation_that_never_connected_says_no_key_was_made():
    never = requests.ConnectionError(MaxRetryError(None, "/v1/tokens", NewConnectionError(None, "refused")))
    client, adapter, _ = scripted(never)
    with pytest.raises(TransportError) as err:
        client.create_token("class", credits=1)
    assert err.value.message == "could not connect to api.example: nothing was sent, no key was made"


def test_a_key_creation_whose_body_cannot_be_sent_names_the_call():
    client, _, _ = scripted(UnicodeEncodeError("latin-1", "é", 0, 1, "nope"))
    with pytest.raises(NotSentError) as err:
        client.create_token("class", credits=1)
    assert err.value.message == "create_token: a request header cannot be encoded; nothing was sent"


@pytest.mark.parametrize(
    "kwargs, why",
    [
        ({"name": "  "}, "the name must be non-empty text"),
        ({"name": "x" * 51}, "the name must be at most 50 printable characters"),
        ({"credits": -1}, "credits must be a number, 0 or more"),
        ({"expires_at": "soon"}, "expires_at must be a Unix time in seconds, a datetime or None"),
        ({"expires_at": 1.0}, "expires_at is in the past"),
        ({"model_limits": 5}, "model_limits must be a tuple or list of model names"),
        ({"model_limits": ("a,b",)}, "model_limits must be model names without commas"),
    ],
)
def test_key_arguments_the_service_would_refuse_are_never_sent(kwargs, why):
    client, adapter, _ = scripted()
    settings = {"name": "class", "credits": 1, **kwargs}
    with pytest.raises(NotSentError) as err:
        client.create_token(settings.pop("name"), **settings)
    assert err.value.message == f"create_token: {why}; nothing was sent"
    assert adapter.requests == []


def test_key_arguments_at_their_limits_are_sent(monkeypatch):
    import kling_nb.service.client as client_module

    monkeypatch.setattr(client_module.time, "time", lambda: 1000.0)
    client, adapter, _ = scripted(token_reply(), token_reply())
    client.create_token("x" * 50, credits=0, expires_at=1000.5, model_limits="kling-video-o1")
    sent = json.loads(adapter.requests[0].body)
    assert (sent["name"], sent["remain_quota"], sent["expired_time"]) == ("x" * 50, 0, 1001)
    assert (sent["model_limits_enabled"], sent["model_limits"]) == (True, "kling-video-o1")
    with pytest.raises(NotSentError, match="in the past"):
        client.create_token("class", credits=1, expires_at=1000.0)


# -- what counts as "never sent" ----------------------------------------------------------------------
def wrapped(inner: BaseException, how: str) -> requests.ConnectionError:
    """A ConnectionError that carries `inner` the way urllib3/requests chain their errors."""
    if how == "arg":
        return requests.ConnectionError(MaxRetryError(None, "/x", inner))
    outer = requests.ConnectionError("the request failed")
    if how == "cause":
        outer.__cause__ = inner
    else:
        outer.__context__ = inner
    return outer


@pytest.mark.parametrize("how", ["arg", "cause", "context"])
def test_a_connection_never_made_is_retried_however_the_error_is_wrapped(how):
    never = wrapped(NewConnectionError(None, "Connection refused"), how)
    client, adapter, sleeps = scripted(never, (200, TASK, {}), max_retries=1)
    assert client.submit(BODY).id == "video_1"
    assert len(adapter.requests) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("text", ["NewConnectionError(...)", "[Errno 111] Connection refused", "NameResolutionError"])
def test_a_connection_refused_in_words_is_never_sent(text):
    client, adapter, _ = scripted(requests.ConnectionError(text), (200, TASK, {}), max_retries=1)
    assert client.submit(BODY).id == "video_1"
    assert len(adapter.requests) == 2


@pytest.mark.parametrize("error", [requests.ConnectionError("Connection reset by peer"), requests.ConnectionError()])
def test_any_other_dropped_connection_makes_the_submit_unknown(error):
    client, adapter, _ = scripted(error, (200, TASK, {}), max_retries=1)
    with pytest.raises(SubmitUnknownError, match="the connection dropped before the reply"):
        client.submit(BODY)
    assert len(adapter.requests) == 1


def test_errors_that_wrap_each_other_in_a_cycle_are_still_sorted():
    a, b = requests.ConnectionError("reset"), OSError("reset")
    a.__context__, b.__context__ = b, a
    client, adapter, _ = scripted(a, max_retries=1)
    with pytest.raises(SubmitUnknownError):
        client.submit(BODY)
    assert len(adapter.requests) == 1


def test_a_deep_chain_is_searched_for_a_connection_never_made():
    inner: BaseException = NewConnectionError(None, "refused")
    for _ in range(20):
        outer = OSError("wrapped")
        outer.__cause__ = inner
        inner = outer
    client, adapter, _ = scripted(wrapped(inner, "cause"), (200, TASK, {}), max_retries=1)
    assert client.submit(BODY).id == "video_1"


def test_a_failed_connection_names_the_host():
    client, _, _ = scripted(requests.ConnectionError("Connection refused"), max_retries=0)
    with pytest.raises(TransportError) as err:
        client.submit(BODY)
    assert err.value.message == "could not connect to api.example: nothing was sent"


def test_a_video_url_that_cannot_be_requested_says_why_in_one_capped_line(tmp_path):
    client, adapter, _ = scripted()
    with pytest.raises(DownloadError) as err:
        client.download("https://exa mple.com/v.mp4", tmp_path / "v.mp4")
    message = err.value.message
    assert message.startswith("the video URL cannot be requested (InvalidURL: Failed to parse: Host 'exa mple.com'")
    assert adapter.requests == [] and list(tmp_path.iterdir()) == []
    with pytest.raises(DownloadError) as err:
        client.download("https://exa mple" + "x" * 300 + ".com/v.mp4", tmp_path / "v.mp4")
    reason = err.value.message.removeprefix("the video URL cannot be requested (").removesuffix(")")
    assert reason.startswith("InvalidURL: Failed to parse: Host") and len(reason) == len("InvalidURL: ") + 160


# -- backoff ----------------------------------------------------------------------------------------
class Highest:
    """A random source that always picks the top of the range (the longest allowed wait)."""

    def uniform(self, low, high):
        return high


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after(caplog):
    client, _, sleeps = scripted(
        (503, {}, {}),
        (503, {}, {}),
        (503, {}, {}),
        (503, {}, {}),
        (429, {}, {"Retry-After": "0.5"}),
        (200, TASK, {}),
        max_retries=5,
        backoff_base=1,
        backoff_cap=6,
    )
    client._random = Highest()
    with caplog.at_level(logging.INFO, logger="kling_nb.client"):
        client.status("video_1")
    assert sleeps == [1, 2, 4, 6, 6]
    assert "retrying in 1.00 s: status: HTTP 503: HTTP 503" in caplog.messages


@pytest.mark.parametrize("value, wait", [("-3", 0.0), ("2.5", 2.5), ("soon", 0.0)])
def test_retry_after_is_never_negative_and_ignored_when_unreadable(value, wait):
    client, _, sleeps = scripted((429, {}, {"retry-after": value}), (200, TASK, {}), max_retries=1)
    client._random = type("Lowest", (), {"uniform": lambda self, a, b: a})()
    client.status("video_1")
    assert sleeps == [wait]


# -- downloads racing to one file ------------------------------------------------------------------
def download_client(data: bytes):
    return scripted((200, data, {"Content-Type": "video/mp4"}))[0]


def test_a_file_already_holding_the_same_video_is_left_as_it_is(tmp_path):
    data = tiny_mp4()
    dest = tmp_path / "v.mp4"
    dest.write_bytes(data)
    before = dest.stat()
    assert download_client(data).download("https://cdn.example/v.mp4", dest) == dest
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


@pytest.mark.parametrize("old", [b"x", "same-size"])
def test_a_file_holding_something_else_is_replaced(tmp_path, old):
    data = tiny_mp4()
    dest = tmp_path / "v.mp4"
    dest.write_bytes(bytes(len(data)) if old == "same-size" else old)
    download_client(data).download("https://cdn.example/v.mp4", dest)
    assert dest.read_bytes() == data and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_a_large_file_is_compared_to_its_end(tmp_path):
    from kling_nb.service import client as client_module

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"\0" * (3 << 20))
    b.write_bytes(b"\0" * (3 << 20))
    assert client_module._same_bytes(a, b) is True
    b.write_bytes(b"\0" * ((3 << 20) - 1) + b"\1")
    assert client_module._same_bytes(a, b) is False
    assert client_module._same_bytes(tmp_path / "missing", b) is False
    assert client_module._same_bytes(tmp_path, b) is False  # a folder is not the same file


# -- disks ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code, message",
    [
        (errno.ENOSPC, "no space left on device while saving v.mp4"),
        (errno.EDQUOT, "disk quota exceeded while saving v.mp4"),
        (errno.EIO, "cannot save v.mp4: Input/output error"),
    ],
)
def test_a_disk_that_refuses_the_video_says_how(tmp_path, monkeypatch, code, message):
    def refuse(fd, data):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "write", refuse)
    with pytest.raises(DownloadError) as err:
        download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == f"could not download the video: {message}" or err.value.message == message
    assert list(tmp_path.iterdir()) == []


def test_a_disk_error_without_words_is_named_by_its_kind(tmp_path, monkeypatch):
    def refuse(fd):
        raise OSError()

    monkeypatch.setattr(os, "fsync", refuse)
    with pytest.raises(DownloadError) as err:
        download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "cannot save v.mp4: OSError"
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(DownloadError) as err:
        download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "gone" / "v.mp4")
    assert err.value.message == f"cannot save v.mp4: the folder {tmp_path / 'gone'} does not exist"


def test_a_close_that_fails_after_the_write_is_a_download_error(tmp_path, monkeypatch):
    real_close = os.close
    calls = []

    def close(fd):
        calls.append(fd)
        real_close(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "close", close)
    with pytest.raises(DownloadError) as err:
        download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    monkeypatch.setattr(os, "close", real_close)
    assert err.value.message == "cannot save v.mp4: Input/output error"
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_a_video_is_checked_by_its_signature_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails
    with caplog.at_level(logging.WARNING, logger="kling_nb.client"):
        path = download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert path.read_bytes() == tiny_mp4()
    (message,) = [m for m in caplog.messages if "PyAV" in m]
    assert message.startswith("PyAV is not importable: .kling-") and message.endswith(
        ".part was checked by its signature only"
    )


# -- reprs and pickles ------------------------------------------------------------------------------
def test_a_clients_repr_shows_where_it_talks_and_only_whether_it_has_a_key():
    with Client("https://api.example/", SECRET, environ={}) as c:
        assert repr(c) == "Client(base_url='https://api.example', key=***)"
    with Client("https://api.example", environ={}) as c:
        assert repr(c) == "Client(base_url='https://api.example', key=None)"


def test_the_repr_of_a_client_that_failed_to_start_still_works():
    with pytest.raises(ConfigError) as err:
        Client("ftp://api.example", SECRET, environ={})
    tb = err.value.__traceback__
    while tb.tb_next is not None and "self" not in tb.tb_frame.f_locals:
        tb = tb.tb_next
    half_made = tb.tb_frame.f_locals["self"]
    assert repr(half_made) == "Client(base_url=None, key=***)"
    assert repr(Client.__new__(Client)) == "Client(base_url=None, key=None)"


def test_a_secret_refuses_to_be_pickled_and_says_why():
    with pytest.raises(TypeError) as err:
        pickle.dumps(Secret(SECRET))
    assert str(err.value) == "a Secret cannot be pickled: that would write the API key out"


def test_the_frames_of_a_refused_key_hold_no_key(monkeypatch):
    """tests/test_trust_service.py checks every frame; this checks kling_nb's own frames, so it
    also holds where wrappers (a profiler, a mutation tester) add frames of their own."""
    bad = SECRET[:9] + "\n" + SECRET[9:]
    for settings in ({"api_key": bad, "environ": {}}, {"environ": {"TOAPIS_API_KEY": bad}}):
        with pytest.raises(ConfigError) as err:
            Client("https://api.example", **settings)
        assert frames_holding(err.value.__traceback__, SECRET[9:], only_kling_nb=True) == []
    for settings in ({"api_key": SECRET, "environ": {}}, {"environ": {"TOAPIS_API_KEY": SECRET}}):
        with pytest.raises(ConfigError) as err:
            Client("https://", **settings)
        assert frames_holding(err.value.__traceback__, SECRET, only_kling_nb=True) == []


# -- more edges -----------------------------------------------------------------------------------
def test_a_connect_timeout_is_never_sent_and_retried():
    client, adapter, _ = scripted(requests.ConnectTimeout("slow to connect"), (200, TASK, {}), max_retries=1)
    assert client.submit(BODY).id == "video_1"
    assert len(adapter.requests) == 2


def test_an_unknown_submit_says_what_to_do():
    client, _, _ = scripted((500, {}, {}))
    with pytest.raises(SubmitUnknownError) as err:
        client.submit(BODY)
    assert err.value.message == (
        "the submit's outcome is unknown (the service answered HTTP 500): it may have been accepted and billed, "
        "so it was not resent. Check your dashboard, then re-run with --force to submit again."
    )


def test_a_failed_upload_names_the_upload(tmp_path):
    client, _, _ = scripted(requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(TransportError) as err:
        client.upload(png(tmp_path))
    assert err.value.message == "upload: the connection dropped before the reply"


def test_a_key_creation_answered_with_a_300_is_unknown():
    client, _, _ = scripted((300, {"success": True, "data": {"key": NEW}}, {}))
    with pytest.raises(SubmitUnknownError, match=r"\(the service answered HTTP 300\)"):
        client.create_token("class", credits=1)


def test_a_made_key_that_cannot_be_a_key_is_unknown_and_says_why():
    client, _, _ = scripted((200, {"success": True, "data": {"key": "NEW\u00e9key0123456789"}}, {}))
    with pytest.raises(SubmitUnknownError) as err:
        client.create_token("class", credits=1)
    assert "(HTTP 200, but the key in the reply is not usable (a blank, control or non-ASCII character))" in (
        err.value.message
    )


def test_the_new_key_is_hidden_however_the_error_message_is_shaped():
    client, _, _ = scripted((400, {"message": [f"dup {NEW}", {"k": NEW}], "key": NEW}, {}))
    with pytest.raises(APIError) as err:
        client.create_token("class", credits=1)
    assert NEW not in err.value.message and "***" in err.value.message


def test_a_symlink_planted_while_downloading_is_refused(tmp_path):
    dest = tmp_path / "v.mp4"
    target = tmp_path / "precious.txt"
    target.write_text("keep me")

    class Planting(Scripted):
        def send(self, request, **kwargs):
            dest.symlink_to(target)  # appears after the download started
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("https://", Planting([(200, tiny_mp4(), {"Content-Type": "video/mp4"})]))
    client = Client("https://api.example", SECRET, session=session, max_retries=0, environ={})
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", dest)
    assert err.value.message == "refusing to save v.mp4: it is a symbolic link"
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "v.mp4"]


def test_a_destination_that_is_a_folder_is_a_download_error(tmp_path):
    dest = tmp_path / "v.mp4"
    dest.mkdir()
    with pytest.raises(DownloadError) as err:
        download_client(tiny_mp4()).download("https://cdn.example/v.mp4", dest)
    assert err.value.message == "cannot save v.mp4: Is a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"] and list(dest.iterdir()) == []


# -- downloads, step by step ------------------------------------------------------------------------
class Raw(io.BytesIO):
    """A reply body that records how much is asked for at a time, and can be slow or break."""

    def __init__(self, data, delay=0.0, fail_after=None):
        super().__init__(data)
        self.asked: list[int | None] = []
        self.delay = delay
        self.fail_after = fail_after

    def read(self, size=-1):
        self.asked.append(size)
        if self.fail_after is not None and len(self.asked) > self.fail_after:
            raise requests.ConnectionError("the peer went away")
        if self.delay:
            import time

            time.sleep(self.delay)
        return super().read(size)


def downloader(*script, **options):
    return scripted(*script, **options)


VIDEO_HEADERS = {"Content-Type": "video/mp4"}


def test_a_download_streams_in_bounded_pieces_and_asks_for_no_compression(tmp_path, monkeypatch):
    import kling_nb.service.client as client_module

    data = tiny_mp4() + b"\0" * (1 << 20)
    raw = Raw(data)
    client, adapter, _ = downloader((200, raw, {**VIDEO_HEADERS, "Content-Length": str(len(data))}))
    monkeypatch.setattr(client_module, "_probe_video", lambda path: None)  # padded: not playable
    client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == data
    assert max(a for a in raw.asked if a is not None and a >= 0) <= 1 << 16 and None not in raw.asked
    assert adapter.requests[0].headers["Accept-Encoding"] == "identity"


def test_a_download_on_the_apis_own_origin_carries_the_key_and_elsewhere_not(tmp_path):
    video = tiny_mp4()
    client, adapter, _ = downloader(
        (200, video, VIDEO_HEADERS), (200, video, VIDEO_HEADERS), (200, video, VIDEO_HEADERS)
    )
    client.download("https://api.example/files/v.mp4", tmp_path / "a.mp4")
    client.download("https://api.example:443/files/v.mp4", tmp_path / "b.mp4")
    client.download("https://cdn.example/v.mp4", tmp_path / "c.mp4")
    sent = [r.headers.get("Authorization") for r in adapter.requests]
    assert sent == [f"Bearer {SECRET}", f"Bearer {SECRET}", None]


@pytest.mark.parametrize(
    "url, message",
    [
        ("ftp://cdn.example/v.mp4", "refusing to download from a non-http(s) URL (ftp:)"),
        ("cdn.example/v.mp4", "refusing to download from a non-http(s) URL (no scheme:)"),
    ],
)
def test_a_video_url_that_is_not_http_is_refused_by_its_scheme(tmp_path, url, message):
    client, adapter, _ = downloader()
    with pytest.raises(DownloadError) as err:
        client.download(url, tmp_path / "v.mp4")
    assert err.value.message == message and adapter.requests == []


@pytest.mark.parametrize("code", [403, 404, 410])
def test_a_gone_video_url_is_expired(tmp_path, code):
    client, _, _ = downloader((code, b"", {}))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert type(err.value).__name__ == "ExpiredError"
    assert err.value.message == f"the video URL answered HTTP {code}: it has expired or been removed"


def test_another_refusal_of_the_video_url_is_named(tmp_path):
    client, _, _ = downloader((418, b"", {}))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "the video URL answered HTTP 418"


def test_a_busy_video_host_is_retried_as_long_as_it_asks(tmp_path, caplog):
    client, adapter, sleeps = downloader(
        (429, b"", {"Retry-After": "3"}), (200, tiny_mp4(), VIDEO_HEADERS), max_retries=1, backoff_base=0.001
    )
    with caplog.at_level(logging.INFO, logger="kling_nb.client"):
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert sleeps == [3.0] and len(adapter.requests) == 2
    assert any(m.endswith("s: download: HTTP 429: download answered HTTP 429") for m in caplog.messages)


def test_a_download_gives_up_after_its_retries_without_a_last_wait(tmp_path):
    client, adapter, sleeps = downloader(
        (503, b"", {}), (503, b"", {}), (200, tiny_mp4(), VIDEO_HEADERS), max_retries=1
    )
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "could not download the video: HTTP 503: download answered HTTP 503"
    assert len(adapter.requests) == 2 and len(sleeps) == 1


def test_a_dropped_download_is_named(tmp_path):
    client, _, _ = downloader()
    client.session.adapters["https://"].script = [requests.ConnectionError("Connection reset by peer")]
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert (
        err.value.message
        == "could not download the video: the download failed: the connection dropped before the reply"
    )


def test_a_download_that_breaks_off_midway_says_so(tmp_path):
    client, _, _ = downloader((200, Raw(tiny_mp4() + b"\0" * 100_000, fail_after=1), VIDEO_HEADERS))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4", chunk_size=1024)
    assert err.value.message == "could not download the video: the download broke off (ConnectionError)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hops, ok", [(5, True), (6, False)])
def test_up_to_five_redirects_are_followed(tmp_path, hops, ok):
    script = [(302, b"", {"Location": f"/hop{i}.mp4"}) for i in range(hops)] + [(200, tiny_mp4(), VIDEO_HEADERS)]
    client, adapter, _ = downloader(*script)
    if ok:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
        assert adapter.requests[-1].url == f"https://cdn.example/hop{hops - 1}.mp4"
    else:
        with pytest.raises(DownloadError) as err:
            client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
        assert err.value.message == "refusing to follow more than 5 redirects"
        assert len(adapter.requests) == 6


def test_a_redirect_away_from_http_is_refused(tmp_path):
    client, _, _ = downloader((302, b"", {"Location": "file:///etc/passwd"}))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "refusing a redirect to a non-http(s) location"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "the downloaded file is empty"),
        (b"<html>not a video</html>", "the downloaded file is not a video (no MP4/WebM signature)"),
    ],
)
def test_a_download_that_is_not_a_video_leaves_nothing(tmp_path, body, message):
    client, _, _ = downloader((200, body, VIDEO_HEADERS))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == message and list(tmp_path.iterdir()) == []


def test_a_truncated_download_is_not_kept(tmp_path):
    video = tiny_mp4()
    client, _, _ = downloader((200, video[:-10], {**VIDEO_HEADERS, "Content-Length": str(len(video))}))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    n = len(video)
    assert err.value.message == f"could not download the video: the download was truncated ({n - 10:,} of {n:,} bytes)"
    assert list(tmp_path.iterdir()) == []


def test_a_video_of_exactly_the_size_limit_is_saved(tmp_path):
    video = tiny_mp4()
    client, _, _ = downloader(
        (200, Raw(video), {**VIDEO_HEADERS, "Content-Length": str(len(video))}), max_video_bytes=len(video)
    )
    client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4", chunk_size=64)
    assert (tmp_path / "v.mp4").read_bytes() == video


def test_a_tiny_video_is_saved_whole_when_only_its_signature_can_be_checked(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    tiny = b"\0\0\0\x0cftypisom"  # 12 bytes: less than one signature's worth of a chunk
    client, _, _ = downloader((200, tiny, {**VIDEO_HEADERS, "Content-Length": "12"}))
    assert client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4").read_bytes() == tiny
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_a_download_slower_than_its_limit_is_cut_and_not_retried(tmp_path):
    body = Raw(tiny_mp4() + b"\0" * 10_000, delay=0.05)
    client, adapter, _ = downloader((200, body, VIDEO_HEADERS), max_download_s=0.2, max_retries=2)
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4", chunk_size=256)
    assert err.value.message == "could not download the video: the download took longer than its limit of 0.2 s"
    assert len(adapter.requests) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_saved_video_gets_the_files_usual_permissions(tmp_path, umask):
    import kling_nb.service.client as client_module

    old = os.umask(umask)
    client_module._mode.clear()  # the mode is read once per process
    try:
        path = download_client(tiny_mp4()).download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    finally:
        os.umask(old)
        client_module._mode.clear()
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# -- submits and polls, the words ------------------------------------------------------------------
@pytest.mark.parametrize(
    "reply, why",
    [
        ((200, b"<html>", {}), "the HTTP 200 reply was not JSON"),
        ((201, {"status": "queued"}, {}), "the HTTP 201 reply carried no task id"),
        ((200, {"id": "../../etc"}, {}), "the reply's task id '../../etc' is malformed"),
        ((200, {"id": "a/" + "b" * 100}, {}), f"the reply's task id {'a/' + 'b' * 58!r} is malformed"),
        ((200, {"id": f"x{SECRET}"}, {}), "the reply's task id 'x***' is malformed"),
    ],
)
def test_an_accepted_submit_without_a_usable_task_is_unknown_and_says_why(reply, why):
    client, _, _ = scripted(reply)
    with pytest.raises(SubmitUnknownError) as err:
        client.submit(BODY)
    assert err.value.message.startswith(f"the submit's outcome is unknown ({why}):")


def test_an_accepted_submit_without_a_status_is_queued_and_its_text_scrubbed():
    client, _, _ = scripted((200, {"id": "video_1", "error": {"message": f"note {SECRET}"}}, {}))
    task = client.submit(BODY)
    assert task.status == "queued" and SECRET not in str(task)


def test_a_failed_poll_names_the_poll():
    client, _, _ = scripted(requests.ConnectionError("Connection reset by peer"))
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the connection dropped before the reply"


@pytest.mark.parametrize("task_id, shown", [("../x", "'../x'"), ("a/" + "b" * 100, repr("a/" + "b" * 78)), ("", "''")])
def test_a_malformed_task_id_is_refused_before_asking(task_id, shown):
    client, adapter, _ = scripted()
    with pytest.raises(KlingError) as err:
        client.status(task_id)
    assert err.value.message == f"refusing a malformed task id {shown}" and adapter.requests == []


# -- settings and the base URL ------------------------------------------------------------------------
def test_the_default_limits_are_the_documented_ones():
    with Client("https://api.example", SECRET, environ={}) as c:
        assert (c.connect_timeout, c.read_timeout, c.max_request_s) == (5.0, 30.0, 60.0)
        assert (c.max_upload_s, c.max_download_s) == (300.0, 1800.0)
        assert (c.max_retries, c.backoff_base, c.backoff_cap) == (5, 0.5, 20.0)
        assert (c.max_json_bytes, c.max_video_bytes) == (1 << 20, 2 << 30)


@pytest.mark.parametrize(
    "name",
    [
        "connect_timeout",
        "read_timeout",
        "max_request_s",
        "max_upload_s",
        "max_download_s",
        "max_json_bytes",
        "max_video_bytes",
    ],
)
@pytest.mark.parametrize("value", [0, -1, True, "5"])
def test_every_limit_must_be_a_positive_number_and_the_error_names_it(name, value):
    with pytest.raises(ConfigError) as err:
        Client("https://api.example", SECRET, environ={}, **{name: value})
    assert err.value.message == f"{name} must be a positive number, got {value!r}"


def test_each_request_gets_the_connect_timeout_and_a_read_timeout_within_its_limit():
    client, adapter, _ = scripted((200, TASK, {}), connect_timeout=2.5, read_timeout=30, max_request_s=0.5)
    client.status("video_1")
    connect, read = adapter.sends[0]["timeout"]
    assert connect == 2.5 and 0 < read <= 0.5


def test_a_netrc_entry_for_the_api_host_never_replaces_the_key(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.example login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client, adapter, _ = scripted((200, TASK, {}))
    client.status("video_1")
    assert adapter.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    "base, message",
    [
        (5, "the base URL must be text, not int"),
        ("ftp://user:pw@api.example", "the base URL must look like https://host, got 'ftp://***@api.example'"),
        ("https://api.example:0", "the base URL 'https://api.example:0' has port 0; give a port from 1 to 65535"),
        (
            "https://user@api.example",
            "the base URL must not hold a user name or password (the key goes in TOAPIS_API_KEY)",
        ),
        (
            "https://api.example?x=1",
            "the base URL 'https://api.example?x=1' is not valid; expected https://host[:port][/path]",
        ),
        (
            "https://api.example#top",
            "the base URL 'https://api.example#top' is not valid; expected https://host[:port][/path]",
        ),
        (
            "https://api.ex\u200bample",
            "the base URL 'https://api.ex\\u200bample' is not valid; expected https://host[:port][/path]",
        ),
    ],
)
def test_a_bad_base_url_is_refused_in_one_line_without_credentials(base, message):
    with pytest.raises(ConfigError) as err:
        Client(base, SECRET, environ={})
    assert err.value.message == message


def test_a_base_url_python_cannot_parse_says_why():
    with pytest.raises(ConfigError) as err:
        Client("https://api.example:port", SECRET, environ={})
    message = err.value.message  # the reason in between is Python's own words
    assert message.startswith("the base URL 'https://api.example:port' is not valid (Port could not be cast")
    assert message.endswith("); expected https://host[:port]")


def test_a_long_bad_base_url_is_shown_cut():
    with pytest.raises(ConfigError) as err:
        Client("ftp://" + "a" * 300, SECRET, environ={})
    assert err.value.message == f"the base URL must look like https://host, got {('ftp://' + 'a' * 300)[:120]!r}"


def test_the_base_url_keeps_its_path_and_drops_only_trailing_slashes():
    with Client("https://api.example/pathX//", SECRET, environ={}) as c:
        assert c.base_url == "https://api.example/pathX"


def test_without_a_key_nothing_is_sent_and_the_error_says_what_to_do():
    client, adapter, _ = scripted()
    client._key = None
    with pytest.raises(ConfigError) as err:
        client.submit(BODY)
    assert err.value.message == (
        "no API key: set TOAPIS_API_KEY (or run %kling login); without one, kling_nb uses its simulator"
    )
    assert adapter.requests == []


# -- the words of each failure -----------------------------------------------------------------------
def never_connected():
    return requests.ConnectionError(MaxRetryError(None, "/x", NewConnectionError(None, "refused")))


def certificate_refused():
    import ssl

    return requests.ConnectionError(MaxRetryError(None, "/x", ssl.SSLCertVerificationError("self-signed")))


@pytest.mark.parametrize(
    "failure, error, message",
    [
        (never_connected(), TransportError, "status: could not connect to api.example"),
        (
            certificate_refused(),
            NotSentError,
            "status: the TLS certificate of api.example was not accepted; nothing was sent",
        ),
        (requests.ReadTimeout("slow"), TransportError, "status: no reply within the timeout"),
        (requests.TooManyRedirects("loop"), TransportError, "status: TooManyRedirects"),
        (
            UnicodeEncodeError("latin-1", "é", 0, 1, "no"),
            NotSentError,
            "status: a request header cannot be encoded; nothing was sent",
        ),
    ],
)
def test_each_failure_of_a_poll_is_named(failure, error, message):
    client, _, _ = scripted(failure)
    with pytest.raises(error) as err:
        client.status("video_1")
    assert err.value.message == message


class Slow(Scripted):
    """Waits past the request's limit, then fails the way a cut connection does."""

    def __init__(self, error, wait):
        super().__init__([error])
        self.wait = wait

    def send(self, request, **kwargs):
        import time

        time.sleep(self.wait)
        return super().send(request, **kwargs)


@pytest.mark.parametrize("error", [requests.ReadTimeout("slow"), requests.TooManyRedirects("loop")])
def test_a_poll_cut_by_its_limit_says_so(error):
    session = requests.Session()
    session.mount("https://", Slow(error, 0.3))
    client = Client("https://api.example", SECRET, session=session, max_retries=0, max_request_s=0.1, environ={})
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the request took longer than its limit of 0.1 s"


def test_a_reply_read_past_its_limit_says_so():
    client, _, _ = scripted((200, Raw(json.dumps(TASK).encode() + b" " * 50_000, delay=0.05), {}), max_request_s=0.2)
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the request took longer than its limit of 0.2 s"


def test_a_reply_that_breaks_off_says_so():
    client, _, _ = scripted((200, Raw(json.dumps(TASK).encode() + b" " * 50_000, fail_after=1), {}))
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the reply broke off (ConnectionError)"


@pytest.mark.parametrize(
    "reply, message",
    [
        ((200, b"<html>", {}), "status: the reply was not JSON"),
        (
            (300, {}, {}),
            "status: the service answered with a redirect (HTTP 300); it is not followed, so the key never leaves "
            "api.example",
        ),
    ],
)
def test_a_poll_answered_oddly_is_a_transport_error(reply, message):
    client, _, _ = scripted(reply)
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == message


def test_a_submit_answered_with_a_300_is_unknown():
    client, _, _ = scripted((300, {}, {}))
    with pytest.raises(SubmitUnknownError, match=r"\(the service answered HTTP 300\)"):
        client.submit(BODY)


def test_a_submit_is_sent_as_json():
    client, adapter, _ = scripted((200, TASK, {}))
    client.submit(BODY)
    sent = adapter.requests[0]
    assert sent.method == "POST" and sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.body) == BODY


def test_a_submit_failing_in_an_unforeseen_way_is_unknown_and_named():
    client, _, _ = scripted(ValueError("surprise"))
    with pytest.raises(SubmitUnknownError, match=r"unknown \(ValueError\)"):
        client.submit(BODY)


def test_a_submit_whose_header_cannot_be_sent_names_the_submit():
    client, _, _ = scripted(UnicodeEncodeError("latin-1", "é", 0, 1, "no"))
    with pytest.raises(NotSentError) as err:
        client.submit(BODY)
    assert err.value.message == "submit: a request header cannot be encoded; nothing was sent"


def test_a_submit_rate_limited_to_the_end_gives_up_without_sending_more(caplog):
    client, adapter, sleeps = scripted((429, {}, {}), (429, {}, {}), (429, {}, {}), max_retries=1)
    with caplog.at_level(logging.INFO, logger="kling_nb.client"):
        with pytest.raises(RateLimitError):
            client.submit(BODY)
    assert len(adapter.requests) == 2 and len(sleeps) == 1
    assert any(m.endswith("s: submit: rate limited (not accepted)") for m in caplog.messages)


def test_a_body_that_is_not_json_is_never_sent_and_says_why():
    client, adapter, _ = scripted()
    with pytest.raises(NotSentError) as err:
        client.submit({"prompt": float("nan")})
    assert err.value.message == (
        "the request body is not valid JSON (Out of range float values are not JSON compliant); nothing was sent"
    )
    odd = type("O" * 300, (), {})()
    with pytest.raises(NotSentError) as err:
        client.submit({"prompt": odd})
    reason = err.value.message.removeprefix("the request body is not valid JSON (").removesuffix("); nothing was sent")
    assert reason == f"Object of type {'O' * 300} is not JSON serializable"[:200]
    assert adapter.requests == []


# -- replies at their limits ----------------------------------------------------------------------------
def test_a_reply_claiming_more_than_the_json_limit_is_refused_unread():
    body = json.dumps(TASK).encode()
    client, _, _ = scripted((200, body, {"Content-Length": "101"}), max_json_bytes=100)
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the reply is larger than 100 bytes"


def test_a_reply_of_exactly_the_json_limit_is_read():
    body = json.dumps(TASK).encode()
    client, _, _ = scripted((200, body, {"Content-Length": str(len(body))}), max_json_bytes=len(body))
    assert client.status("video_1").status == "queued"


def test_a_reply_longer_than_one_read_is_read_whole_in_bounded_pieces():
    task = {**TASK, "status": "failed", "error": {"message": "x" * 200}, "padding": "y" * 60_000}
    raw = Raw(json.dumps(task).encode())
    client, _, _ = scripted((200, raw, {}))
    assert client.status("video_1").status == "failed"
    assert None not in raw.asked and max(a for a in raw.asked if a and a > 0) <= 16 * 1024


def test_an_error_page_larger_than_the_limit_is_skimmed_not_refused():
    client, _, _ = scripted((400, b"<html>" + b"x" * 5000, {}), (300, b"<html>" + b"x" * 5000, {}), max_json_bytes=100)
    with pytest.raises(APIError) as err:
        client.status("video_1")
    assert err.value.message == "HTTP 400: HTTP 400"
    with pytest.raises(TransportError, match=r"redirect \(HTTP 300\)"):
        client.status("video_1")


@pytest.mark.parametrize("task_id", ["v", "v" * 200])
def test_task_ids_of_one_to_two_hundred_characters_are_polled(task_id):
    client, adapter, _ = scripted((200, {**TASK, "id": task_id}, {}))
    assert client.status(task_id).id == task_id and len(adapter.requests) == 1


# -- the key's own rules ---------------------------------------------------------------------------------
def test_a_key_that_is_not_text_or_is_blank_is_refused_in_words():
    with pytest.raises(ConfigError) as err:
        Secret(5)
    assert err.value.message == "the API key must be text"
    with pytest.raises(ConfigError) as err:
        Secret("   ")
    assert err.value.message == "the API key is empty"


@pytest.mark.parametrize(
    "key, text, shown",
    [
        ("sk-12345678", "tail 12345678 here", "tail *** here"),  # 8 after the prefix: hidden bare too
        ("sk-1234567", "tail 1234567 here", "tail 1234567 here"),  # shorter: a bare tail is too common to hunt
        ("abcdefghijkl", "tail defghijkl here", "tail defghijkl here"),  # no sk- prefix: only the whole key
        ("abcdefghijkl", "key abcdefghijkl here", "key *** here"),
    ],
)
def test_the_key_is_hidden_whole_and_without_its_prefix_only_when_that_is_long(key, text, shown):
    from kling_nb.service.secret import scrub

    assert scrub(text, key) == shown


def test_server_text_is_cut_at_its_limit_and_not_before():
    from kling_nb.service.secret import scrub

    assert scrub("x" * 500, None) == "x" * 500
    assert scrub("x" * 501, None) == "x" * 499 + "…"
    assert scrub("abc", None, limit=1) == "…"


# -- third round --------------------------------------------------------------------------------------
def test_a_four_character_key_is_hidden_too():
    from kling_nb.service.secret import scrub

    assert scrub("key abcd here", "abcd") == "key *** here"


def never_connected_behind(shape: str) -> requests.ConnectionError:
    """A never-made connection hidden in a chain whose other branches lead nowhere."""
    refused = NewConnectionError(None, "refused")
    outer = requests.ConnectionError("the request failed")
    if shape == "sibling":  # looked at after another branch that has causes of its own
        other = OSError("other")
        other.args = (ValueError("deeper"),)
        outer.__cause__, outer.__context__ = refused, other
    else:  # a cycle met before the cause
        back = OSError("back")
        back.__context__ = outer
        outer.__cause__, outer.__context__ = refused, back
    return outer


@pytest.mark.parametrize("shape", ["sibling", "cycle"])
def test_every_branch_of_a_failure_is_searched_for_a_connection_never_made(shape):
    client, adapter, _ = scripted(never_connected_behind(shape), (200, TASK, {}), max_retries=1)
    assert client.submit(BODY).id == "video_1" and len(adapter.requests) == 2


def test_a_connection_never_made_is_logged_as_nothing_sent(caplog):
    client, _, _ = scripted(never_connected(), (200, TASK, {}), max_retries=1)
    with caplog.at_level(logging.INFO, logger="kling_nb.client"):
        client.submit(BODY)
    assert any(m.endswith("s: submit: could not connect to api.example (nothing was sent)") for m in caplog.messages)


def test_a_video_that_cannot_be_played_is_not_kept(tmp_path):
    client, _, _ = downloader((200, b"\0\0\0\x18ftypisom" + b"\0" * 200, VIDEO_HEADERS))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "the downloaded file is not a playable video" and list(tmp_path.iterdir()) == []


def test_a_reply_without_a_length_is_cut_at_the_json_limit():
    client, _, _ = scripted((200, json.dumps(TASK).encode() + b" " * 200, {}), max_json_bytes=100)
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the reply is larger than 100 bytes"


def test_a_new_key_whose_bare_part_sorts_first_is_still_hidden_whole():
    key = "sk-zebra0123456789abcdefghij"
    client, _, _ = scripted((400, {"error": {"message": f"dup {key}"}, "key": key}, {}))
    with pytest.raises(APIError) as err:
        client.create_token("class", credits=1)
    assert err.value.service_message == "dup ***"


@pytest.mark.parametrize("call, words", [("balance", "balance refused"), ("create_token", "create_token refused")])
def test_an_empty_refusal_message_is_replaced_by_what_was_refused(call, words):
    client, _, _ = scripted((200, {"success": False, "message": ""}, {}))
    with pytest.raises(APIError) as err:
        client.balance() if call == "balance" else client.create_token("class", credits=1)
    assert err.value.message == f"HTTP 200: {words}"


@pytest.mark.parametrize("error", [requests.ConnectionError("reset"), requests.ReadTimeout("slow")])
def test_a_download_cut_by_its_limit_before_the_reply_says_so(tmp_path, error):
    session = requests.Session()
    session.mount("https://", Slow(error, 0.3))
    client = Client("https://api.example", SECRET, session=session, max_retries=0, max_download_s=0.1, environ={})
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "could not download the video: the download took longer than its limit of 0.1 s"


def test_a_poll_dropped_after_its_limit_says_so():
    session = requests.Session()
    session.mount("https://", Slow(requests.ConnectionError("reset"), 0.3))
    client = Client("https://api.example", SECRET, session=session, max_retries=0, max_request_s=0.1, environ={})
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message == "status: the request took longer than its limit of 0.1 s"


class EndsLate(Raw):
    """A body without a length whose end arrives only after a long pause."""

    def read(self, size=-1):
        data = super().read(size)
        if not data:
            import time

            time.sleep(0.4)
        return data


def test_a_download_whose_end_comes_after_its_limit_is_not_kept(tmp_path):
    client, _, _ = downloader((200, EndsLate(tiny_mp4()), VIDEO_HEADERS), max_download_s=0.2)
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "could not download the video: the download took longer than its limit of 0.2 s"
    assert list(tmp_path.iterdir()) == []


def test_a_tiny_video_that_cannot_be_written_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)

    def refuse(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", refuse)
    client, _, _ = downloader((200, b"\0\0\0\x0cftypisom", VIDEO_HEADERS))
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "no space left on device while saving v.mp4"


class Unbuildable(requests.Session):
    """A session that cannot build the request (an error without any words)."""

    def prepare_request(self, request):
        raise ValueError()


def test_a_request_that_cannot_be_built_is_named_by_its_error_even_without_words(tmp_path):
    session = Unbuildable()
    client = Client("https://api.example", SECRET, session=session, max_retries=0, environ={})
    with pytest.raises(DownloadError) as err:
        client.download("https://cdn.example/v.mp4", tmp_path / "v.mp4")
    assert err.value.message == "the video URL cannot be requested (ValueError)"


def test_a_status_reply_that_is_not_a_task_says_so():
    client, _, _ = scripted((200, ["not", "a", "task"], {}))
    with pytest.raises(TransportError) as err:
        client.status("video_1")
    assert err.value.message.startswith("the status reply for video_1 was not a task object (")


@pytest.mark.parametrize("reply_id, warned", [("video_1", False), ("video_2", True), (None, True)])
def test_a_status_reply_naming_another_task_is_kept_under_the_asked_id_and_logged(caplog, reply_id, warned):
    client, _, _ = scripted((200, {**TASK, "id": reply_id}, {}))
    with caplog.at_level(logging.WARNING, logger="kling_nb.client"):
        assert client.status("video_1").id == "video_1"
    expected = "the status reply for video_1 named another or no task id; it was kept as video_1"
    assert (expected in caplog.messages) is warned


def test_an_image_that_cannot_be_read_is_named_by_its_error_even_without_words(tmp_path, monkeypatch):
    import kling_nb.service.client as client_module

    def broken_open(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(client_module, "open", broken_open, raising=False)
    client, _, _ = scripted()
    with pytest.raises(KlingError) as err:
        client.upload(png(tmp_path))
    assert err.value.message == "cannot read still.png: OSError"


def test_many_workers_polling_at_once_keep_their_connections(caplog):
    import threading

    from .hostile_server import HostileServer, Reply

    with HostileServer() as server:
        server.on("GET", "/v1/videos/generations/video_1", Reply(status=200, body=json.dumps(TASK).encode(), delay=0.3))
        with Client(server.url, SECRET, environ={}, max_retries=0) as client:
            with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
                threads = [threading.Thread(target=client.status, args=("video_1",)) for _ in range(16)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                threads = [threading.Thread(target=client.status, args=("video_1",)) for _ in range(16)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
    assert not [m for m in caplog.messages if "Connection pool is full" in m]


@pytest.mark.parametrize(
    "key, message",
    [
        (
            SECRET[:9] + "\n" + SECRET[9:],
            "the API key contains a control or invisible character (a line break, a tab or a zero-width space, "
            "often from copying it): paste it again",
        ),
        (
            SECRET[:9] + "\u2019" + SECRET[9:],
            "the API key contains a non-ASCII character (a typographic quote or dash, often from copying it): "
            "paste it again",
        ),
    ],
)
def test_a_pasted_key_with_a_stray_character_is_refused_saying_how_to_fix_it(key, message):
    with pytest.raises(ConfigError) as err:
        Secret(key)
    assert err.value.message == message


def test_a_request_in_flight_never_holds_the_process_open_at_exit():
    """Python waits at exit for every thread that is not a daemon, so the timer that enforces a
    request's limit (a minute here, many for a download) must be one, or a kernel asked to shut
    down mid-request would hang until the limit. (Checked in this process: a child process would
    not run the code mutmut mutated.)"""
    import threading
    import time

    from .hostile_server import HostileServer, Reply

    with HostileServer() as server:
        server.on("GET", "/v1/videos/generations/video_1", Reply(status=200, body=json.dumps(TASK).encode(), delay=1))
        with Client(server.url, SECRET, environ={}, max_retries=0, max_request_s=60) as client:
            before = set(threading.enumerate())
            request = threading.Thread(target=client.status, args=("video_1",))
            request.start()
            end = time.monotonic() + 10
            while not server.requests and time.monotonic() < end:
                time.sleep(0.01)
            timers = [t for t in set(threading.enumerate()) - before if isinstance(t, threading.Timer)]
            request.join()
    assert server.requests and len(timers) == 1 and timers[0].daemon
