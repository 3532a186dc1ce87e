"""What the account endpoints answer, as plain frozen values (docs/api-contract.md section 4).

`Balance` is read from GET /v1/balance (one key) or GET /v1/user/balance (the whole account);
`NewToken` from POST /v1/tokens. The vendor documents these replies in prose, and its pages
disagree about where the fields sit, so the reading is liberal:
- the fields are looked for in the reply's `data` object first, then at its top level;
- a number may come as a JSON number or as text ("12.5"); a flag as a boolean, 0/1 or text;
- a missing field is None, never a guess: credits are read from `remain_credits` /
  `used_credits`, else from the internal units `remain_quota` / `used_quota` (2500 per
  credit); the display amounts (`remain_balance`, `used_balance`) are kept as sent and never
  turned into credits, because their unit (USD, CNY or tokens) is the vendor's setting;
- unlimited is `unlimited_quota` when the reply has it, else a remaining amount of -1.

It is strict where trust is at stake: a created key exists only inside a `Secret` (as
"sk-" + the key the service returned once, unless it already has the prefix), so neither
`repr()`, `str()`, a pickle nor a log line can show it; server text kept here (a token's name
or a text id) passes through the scrubber the client hands in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .secret import Secret

__all__ = ["Balance", "NewToken", "QUOTA_PER_CREDIT", "CREDITS_PER_USD", "MAX_TOKEN_NAME", "KEY_PREFIX"]

QUOTA_PER_CREDIT = 2500  # the vendor's internal units: 500000 = 1 USD = 200 credits
CREDITS_PER_USD = 200
MAX_TOKEN_NAME = 50
KEY_PREFIX = "sk-"  # the usable key is "sk-" + the `key` POST /v1/tokens returns


@dataclass(frozen=True)
class Balance:
    """A balance in credits. `remaining_credits` is None when `unlimited` (and when the reply
    states only a display amount); the display amounts are the service's own figures, -1
    remaining when unlimited."""

    remaining_credits: float | None
    used_credits: float | None
    unlimited: bool
    remaining_balance: float | None = None  # display units (USD by default), as sent
    used_balance: float | None = None
    credits_per_usd: float | None = None
    scope: str = "key"  # "key": GET /v1/balance; "account": GET /v1/user/balance

    @classmethod
    def from_json(cls, data: Any, *, scope: str = "key") -> Balance:
        """Read a balance reply; ValueError if it is not one. (A `success: false` reply is the
        caller's to refuse first: it carries a message, not a balance.)"""
        if not isinstance(data, dict):
            raise ValueError("the reply is not a JSON object")
        places = _places(data)
        remain_credits = amount(_pick(places, "remain_credits", "remaining_credits"))
        if remain_credits is None:
            remain_credits = _quota_credits(_pick(places, "remain_quota"))
        used_credits = amount(_pick(places, "used_credits"))
        if used_credits is None:
            used_credits = _quota_credits(_pick(places, "used_quota"))
        remain_balance = amount(_pick(places, "remain_balance", "remaining_balance"))
        used_balance = amount(_pick(places, "used_balance"))
        unlimited = _flag(_pick(places, "unlimited_quota", "unlimited"))
        if unlimited is None:
            unlimited = remain_balance == -1 or remain_credits == -1
        if not unlimited and remain_credits is None and remain_balance is None:
            raise ValueError("it states no remaining balance")
        return cls(
            remaining_credits=None if unlimited else remain_credits,
            used_credits=used_credits,
            unlimited=unlimited,
            remaining_balance=remain_balance,
            used_balance=used_balance,
            credits_per_usd=amount(_pick(places, "credits_per_usd", "credit_rate")),
            scope=scope,
        )


@dataclass(frozen=True)
class NewToken:
    """An API key made with POST /v1/tokens. `key.reveal()` gives the usable key ("sk-...");
    nothing else does. `credits` is None when the key is unlimited, `expires_at` (Unix s) None
    when it never expires; `model_limits` is empty when the key may use any model."""

    key: Secret
    id: int | str | None
    name: str
    credits: float | None
    expires_at: int | None
    model_limits: tuple[str, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a NewToken cannot be pickled: that would write the API key out")

    def __copy__(self) -> NewToken:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> NewToken:
        return self

    @classmethod
    def from_json(
        cls, data: Any, *, sent: dict[str, Any], scrub: Callable[[str], str] | None = None, key: Secret | None = None
    ) -> NewToken:
        """Read a POST /v1/tokens reply; ValueError if it carries no usable key. `sent` is the
        body that was sent: a field the reply leaves out is taken from it. `key`: the key
        already taken out of the reply (with `secret_key`), so the reply's text can be
        cleaned of it before it is read here."""
        clean = scrub or (lambda text: text)
        if not isinstance(data, dict):
            raise ValueError("the reply is not a JSON object")
        places = _places(data)
        if key is None:
            key = secret_key(data)
        if key is None:
            raise ValueError("the reply carries no key")

        token_id = _pick(places, "id")
        if isinstance(token_id, str) and token_id:
            token_id = clean(token_id)
        elif isinstance(token_id, bool) or not isinstance(token_id, int):
            token_id = None
        name = _pick(places, "name")
        name = clean(name) if isinstance(name, str) and name else sent.get("name", "")

        unlimited = _flag(_pick(places, "unlimited_quota"))
        if unlimited is None:
            unlimited = bool(sent.get("unlimited_quota", False))
        credits = amount(_pick(places, "remain_credits"))
        if credits is None:
            credits = _quota_credits(_pick(places, "remain_quota"))
        if credits is None:
            credits = _quota_credits(sent.get("remain_quota"))

        expires = amount(_pick(places, "expired_time"))
        if expires is None:
            expires = amount(sent.get("expired_time"))
        expires_at = None if expires is None or expires == -1 else int(expires)

        enabled = _flag(_pick(places, "model_limits_enabled"))
        if enabled is None:
            enabled = bool(sent.get("model_limits_enabled", False))
        limits = _pick(places, "model_limits")
        if not isinstance(limits, str):
            limits = sent.get("model_limits", "") if isinstance(sent.get("model_limits"), str) else ""
        models = tuple(clean(m.strip()) for m in limits.split(",") if m.strip()) if enabled else ()

        return cls(
            key=key,
            id=token_id,
            name=name,
            credits=None if unlimited else credits,
            expires_at=expires_at,
            model_limits=models,
        )


def secret_key(data: Any) -> Secret | None:
    """The usable key of a POST /v1/tokens reply as a Secret ("sk-" added unless present);
    None if it has none; ValueError (worded without it) if it cannot be a key."""
    raw = raw_key(data)
    if raw is None:
        return None
    try:
        return Secret(raw if raw.startswith(KEY_PREFIX) else KEY_PREFIX + raw)
    except Exception:  # a ConfigError, worded without the key; the new error is raised outside it
        pass
    finally:
        del raw
    raise ValueError("the key in the reply is not usable (a blank, control or non-ASCII character)")


def raw_key(data: Any) -> str | None:
    """The key text a POST /v1/tokens reply carries (`data.key`, or a top-level `key`), if any."""
    if not isinstance(data, dict):
        return None
    value = _pick(_places(data), "key")
    return value.strip() if isinstance(value, str) and value.strip() else None


# -- liberal reading --------------------------------------------------------------------------
def _places(data: dict[str, Any]) -> list[dict[str, Any]]:
    inner = data.get("data")
    return [inner, data] if isinstance(inner, dict) else [data]


def _pick(places: list[dict[str, Any]], *names: str) -> Any:
    for place in places:
        for name in names:
            if place.get(name) is not None:
                return place[name]
    return None


def amount(value: Any) -> float | None:
    """A finite number from a JSON number or its text; None otherwise (a flag is not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", "").replace("_", ""))
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _quota_credits(value: Any) -> float | None:
    quota = amount(value)
    if quota is None:
        return None
    return -1.0 if quota == -1 else quota / QUOTA_PER_CREDIT


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
    return None
