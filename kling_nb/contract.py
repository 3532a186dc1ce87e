"""The remote API's rules as data: one place that the parser, the client and the simulator
all read, so the three cannot drift apart (source: docs/api-contract.md, from the vendor's pages).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

MODEL = "kling-video-o1"
DEFAULT_BASE_URL = "https://toapis.com"
SUBMIT_PATH = "/v1/videos/generations"
STATUS_PATH = "/v1/videos/generations/{task_id}"
UPLOAD_PATH = "/v1/uploads/images"

MODES = {"std": "720P", "pro": "1080P"}
DEFAULT_MODE = "std"
DURATIONS = (5, 10)
DEFAULT_DURATION = 5
COMMON_ASPECT_RATIOS = ("16:9", "9:16", "1:1")
DEFAULT_ASPECT_RATIO = "16:9"
IMAGE_TYPES = ("first_frame", "end_frame")
REFER_TYPES = ("base", "feature")
KEEP_ORIGINAL_SOUND = ("yes", "no")
ELEMENT_TYPES = ("image",)

FINAL_STATUSES = frozenset({"completed", "failed"})
# Anything else (queued, in_progress, the vendor's `submitted`, or a status added later)
# means "still pending": an unknown status is never an error.

RESULT_LIFETIME_S = 24 * 3600
MAX_IMAGE_BYTES = 10 * 1024 * 1024

# <<<image_1>>>, <<<video_2>>>, <<<element_3>>>; anything else between <<< and >>> is malformed.
PLACEHOLDER = re.compile(r"<<<(image|video|element)_([1-9][0-9]*)>>>")
ANY_TRIPLE_ANGLE = re.compile(r"<<<(.*?)>>>", re.S)
# Which list each placeholder kind indexes, as a path into the body.
PLACEHOLDER_LISTS = {
    "image": ("metadata", "image_list"),
    "video": ("video_list",),
    "element": ("metadata", "element_list"),
}

IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")


def sniff_image(head: bytes) -> str | None:
    """The image MIME type from the first bytes of a file, or None if it is not one we accept."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def sniff_video(head: bytes) -> str | None:
    """'video/mp4' or 'video/webm' from the first bytes of a file, else None."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def billing_class(body: dict) -> str:
    """What a request is billed as, in the vendor's words: e.g. '1080P 10s Sound'."""
    mode = body.get("mode", DEFAULT_MODE)
    parts = [MODES.get(mode, str(mode)), f"{body.get('duration', DEFAULT_DURATION)}s"]
    if body.get("video_list"):
        parts.append("Video")
    elif body.get("audio") is True:
        parts.append("Sound")
    return " ".join(parts)


def is_loopback_host(host: str | None) -> bool:
    """True only for a loopback IP address (127.0.0.0/8, ::1) or exactly `localhost`.
    A name that merely starts like one (`127.attacker.example`, `localhost.evil.com`) is not."""
    host = (host or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_scheme(url: object) -> str:
    """A URL's scheme in lower case (schemes are case-insensitive), or '' if it has none."""
    if not isinstance(url, str):
        return ""
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""


def is_http_url(url: object) -> bool:
    """An http(s) URL with a host, whatever the case of its scheme."""
    if not isinstance(url, str) or url_scheme(url) not in ("http", "https"):
        return False
    try:
        return bool(urlsplit(url.strip()).hostname)
    except ValueError:
        return False
