"""The API key, held so it cannot leak by accident, and the scrubber for text the server sends.

`Secret` keeps the key out of reprs, str(), f-strings, pickles and copies; only `reveal()`
gives it back, and the client calls that in exactly one place (building the Authorization
header). A key is checked once, when it is read: surrounding whitespace (the trailing
newline of a file or an environment variable) is dropped, and a key with a control,
invisible or non-ASCII character inside is refused, because it could not be sent in a
header anyway and is almost always a copy-and-paste accident.

`scrub()` is applied once, by the client, to every piece of server text that can end up in
an error or a TaskStatus: a server (or a proxy in front of it) that echoes the request's
headers must not put the key on the screen, in a journal or in a saved notebook.
"""

from __future__ import annotations

import hmac
import re
from typing import NoReturn

from ..errors import ConfigError

__all__ = ["MAX_SERVER_TEXT", "Secret", "scrub"]

MAX_SERVER_TEXT = 500  # characters of server text kept in a message
_MIN_KEY = 4

# `Bearer <token>` as a header, a query string (`Bearer+x`, `Bearer%20x`) or a `key=value` pair.
_BEARER = re.compile(r"\bbearer(?:\s|%20|\+|:|=)+[^\s\"'<>,;]+", re.I)


class Secret:
    """An API key. `repr()` and `str()` show `Secret('***')`; `reveal()` returns the key."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret):
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            del value
            raise ConfigError("the API key must be text")
        value = value.strip()
        if not value:
            problem = "the API key is empty"
        elif not all(c.isprintable() for c in value):
            problem = (
                "the API key contains a control or invisible character (a line break, a tab or a "
                "zero-width space, often from copying it): paste it again"
            )
        elif not value.isascii():
            problem = (
                "the API key contains a non-ASCII character (a typographic quote or dash, often from "
                "copying it): paste it again"
            )
        else:
            problem = None
        if problem:
            del value  # a verbose traceback shows this frame's locals
            raise ConfigError(problem)
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]  # equal keys need not be usable as dict keys

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: that would write the API key out")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self


def scrub(text: object, key: Secret | str | None, *, limit: int = MAX_SERVER_TEXT) -> str:
    """Server text made safe to show: control and invisible characters become spaces, the key
    (also without its `sk-` prefix, as the vendor's token endpoint returns it) and anything
    shaped like `Bearer <token>` become `***`, and the result is capped at `limit` characters.
    The key is removed before the cap, so a cut can never leave part of it behind.

    The key is matched exactly, as it was sent. A "key" under 4 characters (a test's `"k"`) is
    not looked for: it cannot be hidden anyway, and every word holding it would be mangled."""
    text = "".join(c if c.isprintable() else " " for c in str(text))
    secret = key.reveal() if isinstance(key, Secret) else key
    if secret and len(secret) >= _MIN_KEY:
        text = text.replace(secret, "***")
        if secret.startswith("sk-") and len(secret) - 3 >= 8:
            text = text.replace(secret[3:], "***")
    text = _BEARER.sub("***", text)
    if len(text) > limit:
        text = text[: max(0, limit - 1)] + "…"
    return text
