"""The service's rules for a submitted body, as the simulator enforces them.

Deliberately written apart from kling_nb.spec (which validates the *cell*): the simulator
checks the *wire body* the way the service would, so a client bug cannot hide behind a
lenient fake. Both read their constants from kling_nb.contract.
"""

from __future__ import annotations

import re
from typing import Any

from ..contract import (
    ANY_TRIPLE_ANGLE,
    ELEMENT_TYPES,
    IMAGE_TYPES,
    KEEP_ORIGINAL_SOUND,
    MODEL,
    MODES,
    PLACEHOLDER,
    PLACEHOLDER_LISTS,
    REFER_TYPES,
)

RATIO = re.compile(r"^([1-9][0-9]{0,3}):([1-9][0-9]{0,3})$")


class Invalid(Exception):
    """A 400 invalid_request, with the message the service would give."""


def check_body(body: Any) -> None:
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")
    if body.get("model") != MODEL:
        raise Invalid(f"model must be '{MODEL}'")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Invalid("prompt is required")
    if "mode" in body and body["mode"] not in MODES:
        raise Invalid("mode must be one of: std, pro")
    if "duration" in body and (type(body["duration"]) is not int or body["duration"] not in (5, 10)):
        raise Invalid("duration must be 5 or 10")
    if "aspect_ratio" in body and not (isinstance(body["aspect_ratio"], str) and RATIO.match(body["aspect_ratio"])):
        raise Invalid("aspect_ratio must look like 16:9")
    if "audio" in body and not isinstance(body["audio"], bool):
        raise Invalid("audio must be a boolean")
    videos = body.get("video_list")
    if videos is not None:
        _list_of_objects(videos, "video_list")
        for i, v in enumerate(videos):
            _url(v.get("video_url"), f"video_list[{i}].video_url")
            if v.get("refer_type", "base") not in REFER_TYPES:
                raise Invalid(f"video_list[{i}].refer_type must be base or feature")
            if v.get("keep_original_sound", "no") not in KEEP_ORIGINAL_SOUND:
                raise Invalid(f"video_list[{i}].keep_original_sound must be yes or no")
    if body.get("audio") is True and videos is not None:  # present at all, as the vendor's page says
        raise Invalid("audio and video_list are mutually exclusive")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise Invalid("metadata must be an object")
    meta = meta or {}
    if "image_list" in meta:
        _list_of_objects(meta["image_list"], "metadata.image_list")
        for i, item in enumerate(meta["image_list"]):
            _url(item.get("image_url"), f"metadata.image_list[{i}].image_url")
            if "type" in item and item["type"] not in IMAGE_TYPES:
                raise Invalid(f"metadata.image_list[{i}].type must be first_frame or end_frame")
    if "element_list" in meta:
        _list_of_objects(meta["element_list"], "metadata.element_list")
        for i, item in enumerate(meta["element_list"]):
            _url(item.get("url"), f"metadata.element_list[{i}].url")
            if item.get("type", "image") not in ELEMENT_TYPES:
                raise Invalid(f"metadata.element_list[{i}].type must be image")
    _check_placeholders(prompt, body)


def _check_placeholders(prompt: str, body: dict) -> None:
    for match in ANY_TRIPLE_ANGLE.finditer(prompt):
        if not PLACEHOLDER.fullmatch(match.group(0)):
            raise Invalid(f"malformed placeholder {match.group(0)[:40]!r}")
    for match in PLACEHOLDER.finditer(prompt):
        kind, n = match.group(1), int(match.group(2))
        node: Any = body
        for key in PLACEHOLDER_LISTS[kind]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, list) or n > len(node):
            raise Invalid(
                f"{match.group(0)} refers to item {n} of {'.'.join(PLACEHOLDER_LISTS[kind])}, which does not exist"
            )


def _list_of_objects(value: Any, where: str) -> None:
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise Invalid(f"{where} must be an array of objects")


def _url(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise Invalid(f"{where} is required")
    if value[:5].lower() == "data:" or not re.match(r"^https?://[^\s/]+", value, re.I):  # schemes ignore case
        raise Invalid(f"{where} must be a publicly reachable http(s) URL (base64/data URIs are not accepted)")
