"""The money endpoints, keyless: the simulator's accounts, rate card, 402s and created keys over
real loopback HTTP, and the client's Balance / NewToken / create_token against the simulator,
against scripted replies through the transport seam (Session.mount), and against a loopback
server that hangs up after reading the request. No mocks of kling_nb itself."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import pickle
import socket
import threading
import time

import pytest
import requests
from PIL import Image

from kling_nb.errors import APIError, AuthError, NotSentError, QuotaError, SubmitUnknownError, TransportError
from kling_nb.service.account import Balance
from kling_nb.service.client import Client
from kling_nb.sim import Faults, RateCard, SimConfig, Simulator

from .scripted_transport import Scripted

ROOT = "sk-ROOTtest0123456789abcdef"
SECRET = "sk-CLIENTtest0123456789abcdef"
NEW = "NEWkeyAAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjj"  # 48 characters, as the service returns it
SUBMIT = "/v1/videos/generations"
BODY = {"model": "kling-video-o1", "prompt": "A kite"}
BALANCE_FIELDS = {
    "remain_balance",
    "used_balance",
    "remain_credits",
    "used_credits",
    "credits_per_usd",
    "unlimited_quota",
}
FAST = {"queue_s": 0.05, "run_s": 0.3}


def bearer(key):
    return {"Authorization": f"Bearer {key}"} if key is not None else {}


def get(sim, path, key):
    return requests.get(sim.base_url + path, headers=bearer(key), timeout=10)


def post(sim, path, key, body):
    return requests.post(sim.base_url + path, headers=bearer(key), json=body, timeout=10)


def make_key(sim, owner, **fields) -> str:
    """A key made through POST /v1/tokens, as it is used: "sk-" + the returned key."""
    reply = post(sim, "/v1/tokens", owner, {"name": "test", **fields})
    assert reply.status_code == 200, reply.text
    return "sk-" + reply.json()["data"]["key"]


def client(sim, key, **options) -> Client:
    settings = {"backoff_base": 0.01, "backoff_cap": 0.02, "read_timeout": 5, "environ": {}}
    return Client(sim.base_url, key, **{**settings, **options})


def submits(sim):
    return [e for e in sim.log if e["kind"] == "submit"]


@pytest.fixture
def strict():
    """A simulator that knows only ROOT (and the keys made with it); ROOT holds 1000 credits."""
    with Simulator(key=ROOT, config=SimConfig(**FAST, starting_credits=1000)) as sim:
        yield sim


# -- 1. endpoint shapes (raw HTTP against the simulator) -----------------------------------------
def test_balance_reply_has_the_contract_shape(strict):
    reply = get(strict, "/v1/balance", ROOT)
    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is True and body["message"] == "" and set(body["data"]) == BALANCE_FIELDS
    assert body["data"] == {
        "remain_balance": 5,
        "used_balance": 0,
        "remain_credits": 1000,
        "used_credits": 0,
        "credits_per_usd": 200,
        "unlimited_quota": False,
    }  # 1000 credits = 5 USD


def test_user_balance_reply_has_the_same_shape(strict):
    body = get(strict, "/v1/user/balance", ROOT).json()
    assert body["success"] is True and body["message"] == "" and set(body["data"]) == BALANCE_FIELDS


def test_an_unlimited_key_reports_minus_one_remaining():
    with Simulator(config=SimConfig(**FAST)) as sim:  # the defaults: any key, unlimited
        post(sim, SUBMIT, "any-key", BODY)
        data = get(sim, "/v1/balance", "any-key").json()["data"]
    assert data["unlimited_quota"] is True and data["remain_balance"] == -1 and data["remain_credits"] == -1
    assert data["used_credits"] == 50  # an unlimited key is still charged: its use is counted


@pytest.mark.parametrize("path", ["/v1/balance", "/v1/user/balance"])
@pytest.mark.parametrize("key, message", [(None, "No Authorization header"), ("sk-unknown-key", "token info")])
def test_balance_refusals_are_401_with_the_success_false_shape(strict, path, key, message):
    reply = get(strict, path, key)
    assert reply.status_code == 401
    assert reply.json()["success"] is False and message in reply.json()["message"]
    assert set(reply.json()) == {"success", "message"}


def test_create_token_reply_has_the_contract_shape(strict):
    before = int(time.time())
    reply = post(
        strict,
        "/v1/tokens",
        ROOT,
        {
            "name": "nb",
            "expired_time": -1,
            "remain_quota": 500000,
            "unlimited_quota": False,
            "model_limits_enabled": True,
            "model_limits": "kling-video-o1",
            "group": "default",
        },
    )
    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is True and body["message"] == ""
    data = body["data"]
    assert {
        "id",
        "user_id",
        "key",
        "status",
        "name",
        "created_time",
        "expired_time",
        "remain_quota",
        "unlimited_quota",
        "used_quota",
        "model_limits_enabled",
        "model_limits",
    } <= set(data)
    assert isinstance(data["id"], int) and isinstance(data["user_id"], int) and data["status"] == 1
    assert len(data["key"]) == 48 and data["key"].isalnum() and not data["key"].startswith("sk-")
    assert data["name"] == "nb" and data["created_time"] >= before and data["expired_time"] == -1
    assert data["remain_quota"] == 500000 and data["used_quota"] == 0 and data["unlimited_quota"] is False
    assert data["model_limits_enabled"] is True and data["model_limits"] == "kling-video-o1"
    assert data["group"] == "default"
    # the new key holds what was asked: 500000 internal units = 1 USD = 200 credits
    assert strict.balance("sk-" + data["key"])["remain_credits"] == 200


BAD_TOKENS = [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 51}, "too long"),
    ({"name": 5}, "name"),
    ({"name": "ok", "expired_time": "never"}, "expired_time"),
    ({"name": "ok", "expired_time": 1.5}, "expired_time"),
    ({"name": "ok", "expired_time": 0}, "expired_time"),
    ({"name": "ok", "remain_quota": "2500"}, "remain_quota"),
    ({"name": "ok", "remain_quota": 2500.0}, "remain_quota"),
    ({"name": "ok", "remain_quota": -1}, "remain_quota"),
    ({"name": "ok", "remain_quota": True}, "remain_quota"),
    ({"name": "ok", "unlimited_quota": "yes"}, "unlimited_quota"),
    ({"name": "ok", "model_limits_enabled": 1}, "model_limits_enabled"),
    ({"name": "ok", "model_limits": ["kling-video-o1"]}, "model_limits"),
    ({"name": "ok", "group": 3}, "group"),
    ([], "object"),
]


@pytest.mark.parametrize("bad, words", BAD_TOKENS, ids=[f"{i}-{w}" for i, (_, w) in enumerate(BAD_TOKENS)])
def test_create_token_refuses_bad_bodies_with_400(strict, bad, words):
    reply = post(strict, "/v1/tokens", ROOT, bad)
    assert reply.status_code == 400
    assert reply.json()["success"] is False and words in reply.json()["message"]
    assert not any("token_id" in e for e in strict.log)  # nothing was made


def test_create_token_refuses_a_body_that_is_not_json(strict):
    reply = requests.post(
        strict.base_url + "/v1/tokens",
        data=b"{name",
        timeout=10,
        headers={**bearer(ROOT), "Content-Type": "application/json"},
    )
    assert reply.status_code == 400 and reply.json()["success"] is False


def test_create_token_takes_a_name_of_exactly_50_characters(strict):
    assert post(strict, "/v1/tokens", ROOT, {"name": "x" * 50}).status_code == 200


def test_create_token_needs_a_key(strict):
    reply = post(strict, "/v1/tokens", None, {"name": "nb"})
    assert reply.status_code == 401 and reply.json() == {"success": False, "message": "No Authorization header"}
    assert post(strict, "/v1/tokens", "sk-wrong", {"name": "nb"}).status_code == 401


# -- 2. charging by the rate card ----------------------------------------------------------------
VIDEO = [{"video_url": "https://example.com/v.mp4", "refer_type": "base", "keep_original_sound": "no"}]
PRICES = [  # default card: std 10/s, pro 16/s, +4/s sound, +6/s video
    ({}, 50, "720P 5s"),
    ({"duration": 10}, 100, "720P 10s"),
    ({"mode": "pro"}, 80, "1080P 5s"),
    ({"mode": "pro", "duration": 10}, 160, "1080P 10s"),
    ({"audio": True}, 70, "720P 5s Sound"),
    ({"audio": False}, 50, "720P 5s"),
    ({"mode": "pro", "duration": 10, "audio": True}, 200, "1080P 10s Sound"),
    ({"prompt": "Restyle <<<video_1>>>", "video_list": VIDEO}, 80, "720P 5s Video"),
    ({"prompt": "Restyle <<<video_1>>>", "mode": "pro", "duration": 10, "video_list": VIDEO}, 220, "1080P 10s Video"),
]


@pytest.mark.parametrize("extra, credits, billed_as", PRICES, ids=[p[2] for p in PRICES])
def test_a_submit_is_charged_by_mode_duration_sound_and_video(strict, extra, credits, billed_as):
    with client(strict, ROOT) as c:
        task = c.submit({**BODY, **extra})
        balance = c.balance()
    assert strict.charges() == [{"task_id": task.id, "token_id": 1, "credits": credits, "billed_as": billed_as}]
    assert balance.remaining_credits == 1000 - credits and balance.used_credits == credits
    accepted = [e for e in submits(strict) if e.get("accepted")]
    assert [(e["task_id"], e["charge"]) for e in accepted] == [(task.id, credits)]


def test_the_rate_card_is_configurable_also_as_plain_data():
    config = SimConfig(**FAST, starting_credits=100, rates={"std": 1, "pro": 2.5, "sound": 0.5, "video": 0.25})
    assert config.rates == RateCard(std=1, pro=2.5, sound=0.5, video=0.25)
    with Simulator(config=config) as sim, client(sim, SECRET) as c:
        c.submit({**BODY, "mode": "pro", "duration": 10, "audio": True})  # (2.5 + 0.5) * 10
        c.submit({**BODY, "prompt": "<<<video_1>>>", "video_list": VIDEO})  # (1 + 0.25) * 5
        assert [x["credits"] for x in sim.charges()] == [30, 6.25]
        assert c.balance().remaining_credits == 100 - 36.25


def test_a_submit_refused_for_other_reasons_is_not_charged(strict):
    with client(strict, ROOT) as c:
        for bad in ({**BODY, "duration": 7}, {**BODY, "prompt": "sim:reject"}):
            with pytest.raises(APIError):
                c.submit(bad)
        assert c.balance().remaining_credits == 1000 and strict.charges() == []


# -- 3. 402 when short ---------------------------------------------------------------------------
def test_a_key_short_of_credits_gets_402_once_and_no_task():
    with Simulator(config=SimConfig(**FAST, starting_credits=40)) as sim, client(sim, SECRET, max_retries=5) as c:
        with pytest.raises(QuotaError) as err:
            c.submit(BODY)  # 50 credits
        assert err.value.status == 402 and err.value.code == "insufficient_quota"
        assert "costs 50 credits" in err.value.message and "40 left" in err.value.message  # the service's words
        assert len(submits(sim)) == 1  # exactly one attempt: a 402 is final
        assert sim.count("submit") == 0 and sim.accepted_bodies() == [] and sim.charges() == []
        assert c.balance().remaining_credits == 40  # nothing was taken


def test_exactly_enough_credits_is_enough_then_the_next_is_refused():
    with Simulator(config=SimConfig(**FAST, starting_credits=50)) as sim, client(sim, SECRET) as c:
        c.submit(BODY)
        assert c.balance().remaining_credits == 0
        with pytest.raises(QuotaError):
            c.submit(BODY)
        assert sim.count("submit") == 1


def test_the_402_body_has_the_documented_shape():
    with Simulator(config=SimConfig(**FAST, starting_credits=0)) as sim:
        reply = post(sim, SUBMIT, "any-key", BODY)
    assert reply.status_code == 402
    error = reply.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota" and error["message"]


def test_set_credits_lets_a_test_meet_a_402(strict):
    strict.set_credits(ROOT, 10)
    assert post(strict, SUBMIT, ROOT, BODY).status_code == 402
    strict.set_credits(ROOT, None)
    assert post(strict, SUBMIT, ROOT, BODY).status_code == 200
    assert strict.balance(ROOT)["unlimited_quota"] is True


# -- 4. created keys ----------------------------------------------------------------------------
def png(path):
    Image.new("RGB", (8, 8), (4, 5, 6)).save(path)
    return path


def test_a_created_key_works_with_the_sk_prefix_for_everything(strict, tmp_path):
    key = make_key(strict, ROOT, remain_quota=100 * 2500)
    assert len(key) == 51
    with client(strict, key) as c:
        task = c.submit(BODY)
        assert c.status(task.id).id == task.id
        assert c.upload(png(tmp_path / "a.png")).endswith(".png")
        assert c.balance().remaining_credits == 50 and c.balance().used_credits == 50
        assert c.account_balance().remaining_credits == 1000 + 50  # the account: ROOT and its new key
    assert strict.balance(ROOT)["remain_credits"] == 1000  # the new key paid, not its maker
    assert strict.charges()[0]["token_id"] != 1


def test_a_created_key_is_refused_without_its_prefix(strict):
    bare = make_key(strict, ROOT, remain_quota=100 * 2500)[3:]
    reply = post(strict, SUBMIT, bare, BODY)
    assert reply.status_code == 401 and reply.json()["error"]["type"] == "authentication_error"
    assert get(strict, "/v1/balance", bare).status_code == 401
    assert strict.count("submit") == 0


def test_in_any_key_mode_too_a_created_key_is_refused_without_its_prefix():
    with Simulator(config=SimConfig(**FAST)) as sim:
        key = make_key(sim, "any-key", remain_quota=100 * 2500)
        assert post(sim, SUBMIT, key[3:], BODY).status_code == 401
        assert post(sim, SUBMIT, key, BODY).status_code == 200
        assert sim.balance(key)["remain_credits"] == 50  # the created key has its own quota, not "unlimited"


def test_the_account_balance_sums_the_accounts_keys_and_only_them():
    with Simulator(config=SimConfig(**FAST, starting_credits=300)) as sim:
        made = make_key(sim, "key-A", remain_quota=100 * 2500)
        post(sim, SUBMIT, made, BODY)
        post(sim, SUBMIT, "key-B", BODY)
        a = get(sim, "/v1/user/balance", "key-A").json()["data"]
        assert a["remain_credits"] == 300 + 100 - 50 and a["used_credits"] == 50
        assert get(sim, "/v1/user/balance", made).json()["data"] == a  # the same account, asked by either key
        b = get(sim, "/v1/user/balance", "key-B").json()["data"]
        assert b["remain_credits"] == 250 and b["used_credits"] == 50


def test_the_simulators_own_key_mode_still_holds():
    with Simulator(key="right", config=SimConfig(**FAST)) as sim:
        assert post(sim, SUBMIT, "right", BODY).status_code == 200
        assert post(sim, SUBMIT, "wrong", BODY).json()["error"]["type"] == "authentication_error"
        assert post(sim, SUBMIT, make_key(sim, "right"), BODY).status_code == 402  # made with 0 credits
        assert post(sim, SUBMIT, make_key(sim, "right", unlimited_quota=True), BODY).status_code == 200
        assert sim.balance("right")["unlimited_quota"] is True  # the default for its own key
        with pytest.raises(KeyError):
            sim.balance("wrong")


def test_an_expired_key_is_refused_everywhere(strict):
    key = make_key(strict, ROOT, expired_time=int(time.time()) - 5, unlimited_quota=True)
    reply = post(strict, SUBMIT, key, BODY)
    assert reply.status_code == 401 and "expired" in reply.json()["error"]["message"]
    balance = get(strict, "/v1/balance", key)
    assert balance.status_code == 401 and balance.json()["success"] is False
    assert post(strict, "/v1/tokens", key, {"name": "x"}).status_code == 401
    assert strict.count("submit") == 0


def test_a_key_works_until_it_expires(strict):
    key = make_key(strict, ROOT, expired_time=int(time.time()) + 2, unlimited_quota=True)
    assert post(strict, SUBMIT, key, BODY).status_code == 200
    time.sleep(max(0.0, int(time.time()) + 3 - time.time()))
    assert post(strict, SUBMIT, key, BODY).status_code == 401
    assert strict.count("submit") == 1


def test_model_limits_are_enforced_with_403(strict):
    other = make_key(strict, ROOT, unlimited_quota=True, model_limits_enabled=True, model_limits="other-model")
    reply = post(strict, SUBMIT, other, BODY)
    assert reply.status_code == 403
    assert reply.json()["error"] == {
        "code": "model_not_allowed",
        "type": "permission_error",
        "message": reply.json()["error"]["message"],
    }
    assert "kling-video-o1" in reply.json()["error"]["message"]
    assert strict.count("submit") == 0 and strict.charges() == []
    listed = make_key(
        strict, ROOT, unlimited_quota=True, model_limits_enabled=True, model_limits="other-model, kling-video-o1"
    )
    assert post(strict, SUBMIT, listed, BODY).status_code == 200
    off = make_key(strict, ROOT, unlimited_quota=True, model_limits_enabled=False, model_limits="other-model")
    assert post(strict, SUBMIT, off, BODY).status_code == 200  # limits count only when enabled


def test_the_log_names_tokens_never_keys(strict):
    key = make_key(strict, ROOT, remain_quota=100 * 2500)
    post(strict, SUBMIT, key, BODY)
    get(strict, "/v1/balance", key)
    text = json.dumps(strict.log) + json.dumps(requests.get(strict.base_url + "/_sim/log", timeout=10).json())
    assert key[3:] not in text and ROOT not in text


# -- 5. the client against the simulator --------------------------------------------------------
def test_the_client_reads_both_balances(strict):
    with client(strict, ROOT) as c:
        c.submit({**BODY, "mode": "pro"})
        mine, account = c.balance(), c.account_balance()
    assert mine == Balance(
        remaining_credits=920,
        used_credits=80,
        unlimited=False,
        remaining_balance=4.6,
        used_balance=0.4,
        credits_per_usd=200,
        scope="key",
    )
    assert account.scope == "account" and account.remaining_credits == 920


def test_the_client_reads_an_unlimited_balance():
    with Simulator(config=SimConfig(**FAST)) as sim, client(sim, SECRET) as c:
        balance = c.balance()
    assert balance.unlimited is True and balance.remaining_credits is None and balance.remaining_balance == -1


def test_a_token_made_by_the_client_is_usable_and_limited(strict):
    with client(strict, ROOT) as c:
        token = c.create_token("notebook", credits=100, expires_at=time.time() + 3600)
    assert isinstance(token.id, int) and token.name == "notebook" and token.credits == 100
    assert token.expires_at > time.time() and token.model_limits == ("kling-video-o1",)
    assert token.key.reveal().startswith("sk-") and len(token.key.reveal()) == 51
    with client(strict, token.key) as c:
        assert c.balance().remaining_credits == 100
        c.submit(BODY)
        assert c.balance().remaining_credits == 50
    with client(strict, ROOT) as c:
        other = c.create_token("elsewhere", credits=100, model_limits=["other-model"])
    with client(strict, other.key) as c, pytest.raises(APIError) as err:
        c.submit(BODY)
    assert err.value.status == 403 and err.value.code == "model_not_allowed"


def test_create_token_is_sent_once_when_the_simulator_drops_the_reply(strict):
    strict.set_faults(Faults(rate=1.0, kinds=("drop_after_accept",), endpoints=("tokens",)))
    with client(strict, ROOT, max_retries=5) as c, pytest.raises(SubmitUnknownError, match="dashboard"):
        c.create_token("nb", credits=10)
    made = [e for e in strict.log if e["kind"] == "tokens"]
    assert len(made) == 1 and "token_id" in made[0]  # it was made; the client never heard, and did not ask again


def test_the_balance_is_retried_through_faults(strict):
    strict.set_faults(Faults(rate=0.5, kinds=("503", "drop"), seed=1, endpoints=("balance",)))
    with client(strict, ROOT, max_retries=8) as c:
        assert c.balance().remaining_credits == 1000
    # seed 1: a 503, then a dropped connection, then the answer
    assert [e["fault"] for e in strict.log if e["kind"] == "balance"] == ["503", "drop", None]


# -- 6. scripted replies through the transport seam -----------------------------------------------
def scripted(*script, **options):
    session = requests.Session()
    adapter = Scripted(script)
    session.mount("https://", adapter)
    settings = {"session": session, "sleep": lambda s: None, "max_retries": 3, "environ": {}}
    return Client("https://api.example", SECRET, **{**settings, **options}), adapter


def ok(payload, status=200, headers=None):
    return (status, payload, headers or {})


LIBERAL_BALANCES = [
    (
        "contract",
        {
            "success": True,
            "message": "",
            "data": {
                "remain_balance": 0.75,
                "used_balance": 0.25,
                "remain_credits": 150,
                "used_credits": 50,
                "credits_per_usd": 200,
                "unlimited_quota": False,
            },
        },
        Balance(150, 50, False, 0.75, 0.25, 200),
    ),
    (
        "vendor-flat",
        {
            "success": True,
            "remain_balance": 100.0,
            "used_balance": 25.5,
            "remain_credits": 20000,
            "used_credits": 5100,
            "credits_per_usd": 200,
            "unlimited_quota": False,
        },
        Balance(20000, 5100, False, 100.0, 25.5, 200),
    ),
    (
        "strings",
        {
            "success": "true",
            "data": {
                "remain_credits": "150.5",
                "used_credits": " 49.5 ",
                "unlimited_quota": "false",
                "credits_per_usd": "200",
            },
        },
        Balance(150.5, 49.5, False, None, None, 200),
    ),
    (
        "unlimited-flag",
        {
            "success": True,
            "remain_balance": -1,
            "used_balance": 25.5,
            "remain_credits": 20000,
            "used_credits": 5100,
            "credits_per_usd": 200,
            "unlimited_quota": True,
        },
        Balance(None, 5100, True, -1, 25.5, 200),
    ),
    (
        "unlimited-by-minus-one",
        {"data": {"remain_balance": -1, "used_credits": 3}},
        Balance(None, 3, True, -1, None, None),
    ),
    (
        "internal-units",
        {"data": {"remain_quota": 250000, "used_quota": "2500", "unlimited_quota": 0}},
        Balance(100, 1, False, None, None, None),
    ),
    ("no-used", {"data": {"remain_credits": 7}}, Balance(7, None, False, None, None, None)),
    ("display-only", {"data": {"remain_balance": 0.5, "used_balance": 0}}, Balance(None, None, False, 0.5, 0, None)),
]


@pytest.mark.parametrize("reply, expected", [x[1:] for x in LIBERAL_BALANCES], ids=[x[0] for x in LIBERAL_BALANCES])
def test_balance_replies_are_read_liberally(reply, expected):
    c, adapter = scripted(ok(reply))
    assert c.balance() == expected
    assert adapter.requests[0].url == "https://api.example/v1/balance"
    assert adapter.requests[0].method == "GET" and adapter.requests[0].headers["Authorization"] == f"Bearer {SECRET}"


def test_account_balance_asks_the_user_endpoint():
    c, adapter = scripted(ok({"data": {"remain_credits": 7}}))
    assert c.account_balance().scope == "account"
    assert adapter.requests[0].url == "https://api.example/v1/user/balance"


@pytest.mark.parametrize(
    "reply, error, words",
    [
        (ok({"success": False, "message": "获取用户额度失败"}), APIError, "获取用户额度失败"),
        (ok({"success": False, "message": "Failed to get token info"}, 401), AuthError, "token info"),
        (ok({"error": {"code": 401, "message": "bad key", "type": "authentication_error"}}, 401), AuthError, "bad key"),
        (ok({"success": True}), TransportError, "no remaining balance"),
        (ok(["not", "an", "object"]), TransportError, "not a balance"),
    ],
    ids=["success-false-200", "success-false-401", "error-shape-401", "no-amounts", "not-an-object"],
)
def test_balance_refusals(reply, error, words):
    c, _ = scripted(reply)
    with pytest.raises(error) as err:
        c.balance()
    assert words in err.value.message


def test_a_balance_read_is_retried():
    dropped = requests.ConnectionError("RemoteDisconnected")
    c, adapter = scripted(ok({}, 503), dropped, ok({"data": {"remain_credits": 1}}))
    assert c.balance().remaining_credits == 1 and len(adapter.requests) == 3


NEW_TOKEN = {
    "success": True,
    "message": "",
    "data": {
        "id": 123,
        "user_id": 456,
        "key": NEW,
        "status": 1,
        "name": "nb",
        "created_time": 1,
        "expired_time": -1,
        "remain_quota": 250000,
        "unlimited_quota": False,
        "used_quota": 0,
        "model_limits_enabled": True,
        "model_limits": "kling-video-o1",
    },
}


def test_create_token_sends_exactly_the_documented_body():
    c, adapter = scripted(ok(NEW_TOKEN))
    token = c.create_token("nb", credits=100)
    request = adapter.requests[0]
    assert request.method == "POST" and request.url == "https://api.example/v1/tokens"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert json.loads(request.body) == {
        "name": "nb",
        "expired_time": -1,
        "remain_quota": 250000,
        "unlimited_quota": False,
        "model_limits_enabled": True,
        "model_limits": "kling-video-o1",
    }
    assert token.key.reveal() == "sk-" + NEW and token.id == 123 and token.credits == 100
    assert token.expires_at is None and token.model_limits == ("kling-video-o1",)


def test_create_token_sends_expiry_and_limits_as_asked():
    when = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    c, adapter = scripted(ok(NEW_TOKEN), ok(NEW_TOKEN))
    c.create_token("nb", credits=0.5, expires_at=when, model_limits=["kling-video-o1", "other"])
    sent = json.loads(adapter.requests[0].body)
    assert sent["expired_time"] == int(when.timestamp()) + (when.timestamp() % 1 > 0)
    assert sent["remain_quota"] == 1250 and sent["model_limits"] == "kling-video-o1,other"
    c.create_token("nb", credits=1, model_limits=())
    sent = json.loads(adapter.requests[1].body)
    assert sent["model_limits_enabled"] is False and sent["model_limits"] == ""


def test_new_token_replies_are_read_liberally():
    reply = {
        "success": True,
        "data": {"id": "tok_9", "key": "sk-" + NEW, "remain_quota": "125000", "unlimited_quota": "false"},
    }
    c, _ = scripted(ok(reply))
    token = c.create_token("nb", credits=1, expires_at=2_000_000_000)
    assert token.key.reveal() == "sk-" + NEW  # a prefix already there is not doubled
    assert token.id == "tok_9" and token.credits == 50 and token.name == "nb"
    assert token.expires_at == 2_000_000_000 and token.model_limits == ("kling-video-o1",)  # from what was sent
    c, _ = scripted(
        ok({"data": {"key": NEW, "unlimited_quota": True, "expired_time": "1900000000", "model_limits_enabled": False}})
    )
    token = c.create_token("nb", credits=1)
    assert token.credits is None and token.expires_at == 1_900_000_000 and token.model_limits == ()


@pytest.mark.parametrize(
    "args, words",
    [
        ({"name": "", "credits": 1}, "name"),
        ({"name": "x" * 51, "credits": 1}, "50"),
        ({"name": "a\nb", "credits": 1}, "printable"),
        ({"name": "nb", "credits": -1}, "credits"),
        ({"name": "nb", "credits": True}, "credits"),
        ({"name": "nb", "credits": float("nan")}, "credits"),
        ({"name": "nb", "credits": 1, "expires_at": time.time() - 1}, "past"),
        ({"name": "nb", "credits": 1, "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "nb", "credits": 1, "model_limits": ["a,b"]}, "commas"),
        ({"name": "nb", "credits": 1, "model_limits": [""]}, "model"),
        ({"name": "nb", "credits": 1, "model_limits": 5}, "model"),
    ],
)
def test_create_token_arguments_are_refused_before_sending(args, words):
    c, adapter = scripted(ok(NEW_TOKEN))
    with pytest.raises(NotSentError, match="nothing was sent") as err:
        c.create_token(args.pop("name"), **args)
    assert words in err.value.message and adapter.requests == []


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError(Exception("RemoteDisconnected")),
        requests.ReadTimeout("read timed out"),
        ok({}, 500),
        ok({}, 502),
        ok(b"", 302, {"Location": "https://api.example/v1/tokens/"}),
        ok(b"<html>not json</html>"),
        ok({"success": True, "data": {"id": 1}}),
        ok({"data": {"key": "bad key\x01"}}),
    ],
    ids=["dropped", "read-timeout", "500", "502", "redirect", "garbage-2xx", "2xx-without-key", "unusable-key"],
)
def test_create_token_is_never_resent_after_it_may_have_been_received(failure):
    c, adapter = scripted(failure, ok(NEW_TOKEN), max_retries=5)
    with pytest.raises(SubmitUnknownError, match="may have been made") as err:
        c.create_token("nb", credits=1)
    assert len(adapter.requests) == 1
    assert "bad key" not in err.value.message


def test_create_token_is_resent_after_a_429_or_a_connection_never_made():
    refused = requests.ConnectionError(Exception("NewConnectionError: Connection refused"))
    sleeps = []
    c, adapter = scripted(ok({}, 429, {"Retry-After": "2"}), refused, ok(NEW_TOKEN), sleep=sleeps.append, backoff_cap=8)
    assert c.create_token("nb", credits=1).id == 123
    assert len(adapter.requests) == 3 and sleeps[0] == 2


@pytest.mark.parametrize(
    "reply, error",
    [
        (ok({"success": False, "message": "令牌名称过长"}), APIError),
        (ok({"success": False, "message": "令牌名称过长"}, 400), APIError),
        (
            ok({"error": {"code": 401, "message": "Authentication failed", "type": "authentication_error"}}, 401),
            AuthError,
        ),
    ],
    ids=["success-false-200", "success-false-400", "401"],
)
def test_create_token_refusals_are_final_and_say_why(reply, error):
    c, adapter = scripted(reply, ok(NEW_TOKEN))
    with pytest.raises(error) as err:
        c.create_token("nb", credits=1)
    assert len(adapter.requests) == 1 and not isinstance(err.value, SubmitUnknownError)
    assert any(w in err.value.message for w in ("令牌名称过长", "Authentication failed"))


def test_a_402_carries_the_remaining_credits_only_when_the_reply_states_them():
    body = {"model": "kling-video-o1", "prompt": "x"}
    plain = {"error": {"code": "insufficient_quota", "message": "Insufficient balance", "type": "insufficient_quota"}}
    c, _ = scripted(ok(plain, 402))
    with pytest.raises(QuotaError) as err:
        c.submit(body)
    assert err.value.message == "HTTP 402 insufficient_quota: Insufficient balance"
    for stated in ({"error": {**plain["error"], "remain_credits": "12.5"}}, {**plain, "remain_credits": 12.5}):
        c, adapter = scripted(ok(stated, 402))
        with pytest.raises(QuotaError) as err:
            c.submit(body)
        assert err.value.message == "HTTP 402 insufficient_quota: Insufficient balance (12.5 credits left)"
        assert len(adapter.requests) == 1


# -- 7. the keys never show --------------------------------------------------------------------
def test_a_new_token_never_shows_its_key():
    c, _ = scripted(ok(NEW_TOKEN))
    token = c.create_token("nb", credits=100)
    for text in (repr(token), str(token), f"{token}", repr(token.key), str([token])):
        assert NEW not in text and "***" in text
    with pytest.raises(TypeError):
        pickle.dumps(token)
    assert copy.copy(token) is token and copy.deepcopy(token) is token
    assert SECRET not in repr(c)


def test_a_balance_has_no_key_to_show(strict):
    with client(strict, ROOT) as c:
        balance = c.balance()
    assert ROOT not in repr(balance) and ROOT[3:] not in str(balance)


LEAKS = [
    ok({"success": False, "message": f"duplicate of {NEW} for Bearer {SECRET}", "data": {"key": NEW}}, 400),
    ok({"success": False, "message": f"no {'x' * 490}sk-{NEW}", "data": {"key": NEW}}),  # the key straddles the cap
    ok({"error": {"message": f"boom {SECRET} {NEW}", "code": f"c-{NEW}", "type": "x"}, "key": NEW}, 409),
    ok({"error": {"message": f"boom {SECRET}"}}, 500),
]


@pytest.mark.parametrize("reply", LEAKS, ids=["400-echo", "cap", "409-code", "500"])
def test_create_token_errors_are_scrubbed_of_every_key(reply, caplog):
    caplog.set_level(logging.DEBUG)
    c, _ = scripted(reply)
    with pytest.raises(Exception) as err:
        c.create_token("nb", credits=1)
    texts = [
        str(err.value),
        repr(err.value),
        getattr(err.value, "message", ""),
        str(getattr(err.value, "code", "")),
        caplog.text,
    ]
    for text in texts:
        assert SECRET not in text and NEW not in text and NEW[:12] not in text and SECRET[3:] not in text


def test_a_new_tokens_server_text_is_scrubbed_of_both_keys():
    c, _ = scripted(ok({"data": {**NEW_TOKEN["data"], "name": f"copy of {NEW} made by {SECRET}"}}))
    token = c.create_token("nb", credits=1)
    assert NEW not in token.name and SECRET not in token.name and token.key.reveal() == "sk-" + NEW


# -- 8. sent once when the connection drops after the request was read --------------------------------
class HangUp:
    """A loopback server that reads each whole request, records it, then closes without a word."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.sock.close()


def test_create_token_is_sent_exactly_once_when_the_connection_drops_after_it_was_read():
    server = HangUp()
    try:
        with Client(server.url, SECRET, max_retries=5, backoff_base=0.01, environ={}) as c:
            with pytest.raises(SubmitUnknownError, match="not resent") as err:
                c.create_token("nb", credits=2)
        assert len(server.requests) == 1
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v1/tokens ") and json.loads(body)["remain_quota"] == 5000
        assert SECRET not in err.value.message
    finally:
        server.close()


def test_a_balance_read_is_retried_when_the_connection_drops():
    server = HangUp()
    try:
        with Client(server.url, SECRET, max_retries=2, backoff_base=0.01, environ={}) as c:
            with pytest.raises(TransportError):
                c.balance()
        assert len(server.requests) == 3  # a GET is safe to repeat
    finally:
        server.close()
