"""Header fields -> the exact JSON body, with every rule of the API checked on the way.

Input is a plain dict (the YAML header, with the prompt) plus where each key stood in the
cell; output is the body, the local files to upload, and warnings. Each rule names the field
and, where known, the line. Nothing here touches the network; local media are read only to
check them (size, signature) and hash them.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import (
    ANY_TRIPLE_ANGLE,
    COMMON_ASPECT_RATIOS,
    DURATIONS,
    ELEMENT_TYPES,
    IMAGE_TYPES,
    MAX_IMAGE_BYTES,
    MODEL,
    MODES,
    PLACEHOLDER,
    PLACEHOLDER_LISTS,
    REFER_TYPES,
    sniff_image,
    sniff_video,
)
from ..errors import SpecError

TOP_LEVEL = (
    "model",
    "prompt",
    "mode",
    "duration",
    "aspect_ratio",
    "audio",
    "video_list",
    "metadata",
    "images",
    "videos",
    "elements",
)
# Keys of the cell header that are not request fields: they make several requests.
BATCH_KEYS = ("sweep", "variants", "shots")
IMAGE_KEYS = ("url", "path", "type", "from", "frame")
VIDEO_KEYS = ("url", "refer_type", "keep_original_sound", "from")
# The body holds this where a reference to an earlier generation stands, until the engine
# puts the real URL there (a frame of it, uploaded; or its video's URL).
REFERENCE_PREFIX = "kling-ref:"
ELEMENT_KEYS = ("url", "path", "type", "role")
API_IMAGE_KEYS = ("image_url", "type")
API_VIDEO_KEYS = ("video_url", "refer_type", "keep_original_sound")
API_ELEMENT_KEYS = ("url", "type", "role")
MAX_PROMPT_CHARS = 10_000
TRUE_WORDS = {"true", "yes", "on", "y"}
FALSE_WORDS = {"false", "no", "off", "n"}
_RATIO = re.compile(r"^\s*([1-9][0-9]{0,3})\s*:\s*([1-9][0-9]{0,3})\s*$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BASE64ISH = re.compile(r"^[A-Za-z0-9+/=\s]{200,}$")


@dataclass(frozen=True)
class Reference:
    """An image or video taken from an earlier generation, by its --name."""

    where: tuple  # the place in the body that gets the URL
    name: str
    kind: str  # "frame" (an image: a frame of its video, uploaded) or "video" (its result URL)
    frame: str | float = "last"  # for "frame": "first", "last" or a time in seconds

    @property
    def token(self) -> str:
        """What the body holds until the reference is resolved."""
        return f"{REFERENCE_PREFIX}{self.name}#{self.frame if self.kind == 'frame' else 'video'}"


@dataclass(frozen=True)
class LocalFile:
    """A local image that will be uploaded; its URL replaces the path at `where` in the body."""

    where: tuple
    path: Path
    sha256: str
    mime: str
    size: int


class Lines:
    """Where each header key stood in the cell (1-based), for error messages."""

    def __init__(self, table: dict[tuple, int] | None = None):
        self.table = table or {}

    def of(self, *path) -> int | None:
        while path:
            if path in self.table:
                return self.table[path]
            path = path[:-1]
        return None


def build_body(
    header: dict,
    prompt: str,
    *,
    lines: Lines,
    base_dir: Path,
    namespace: dict | None,
    allowed_models: tuple[str, ...] = (MODEL,),
    prompt_line: int | None = None,
) -> tuple[dict, list[LocalFile], list[str], list[Reference]]:
    """The body to POST, the local files to upload, warnings, and references to earlier
    generations; SpecError on any mistake.
    `prompt_line` is the cell line where the prompt starts, when it was written after `---`."""
    for key in header:
        if key not in TOP_LEVEL:
            _unknown(key, TOP_LEVEL, "header", lines.of(key))
    h = _interpolate(header, namespace, lines) if namespace is not None else header
    if namespace is not None:
        prompt = _format(prompt, namespace, "prompt", lines.of("prompt"))
    _check_values(h, (), lines)  # before any value is used as a file name or sent
    _check_values(prompt, ("prompt",), lines)
    warnings: list[str] = []
    body: dict[str, Any] = {}

    model = h.get("model", MODEL)
    if model not in allowed_models:
        raise SpecError(
            f"unknown model {model!r}; this tool drives {', '.join(allowed_models)}",
            field="model",
            line=lines.of("model"),
        )
    body["model"] = model

    if not isinstance(prompt, str) or not prompt.strip():
        raise SpecError("the prompt is empty: write it after the `---` line (or as `prompt:`)", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SpecError(f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}", field="prompt")
    body["prompt"] = prompt

    if "mode" in h:
        mode = h["mode"]
        if mode not in MODES:
            raise SpecError(f"must be std (720P) or pro (1080P), not {mode!r}", field="mode", line=lines.of("mode"))
        body["mode"] = mode
    if "duration" in h:
        body["duration"] = _duration(h["duration"], lines.of("duration"))
    if "aspect_ratio" in h:
        ratio = h["aspect_ratio"]
        m = _RATIO.match(ratio) if isinstance(ratio, str) else None
        if not m:
            raise SpecError(f"must look like 16:9, not {ratio!r}", field="aspect_ratio", line=lines.of("aspect_ratio"))
        ratio = f"{m.group(1)}:{m.group(2)}"
        if ratio not in COMMON_ASPECT_RATIOS:
            warnings.append(f"aspect_ratio {ratio} is not one of the common values {', '.join(COMMON_ASPECT_RATIOS)}")
        body["aspect_ratio"] = ratio
    if "audio" in h:
        body["audio"] = _boolean(h["audio"], "audio", lines.of("audio"))

    uploads: list[LocalFile] = []
    references: list[Reference] = []
    videos = _videos(h, lines, references)
    if videos:
        body["video_list"] = videos
    elif videos is not None:
        # The service refuses audio with a video_list that is present at all; an empty list
        # means "no reference video", so it is left out (the simulator refuses both together).
        warnings.append("an empty video list was left out of the body")
    meta = h.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise SpecError("must be a mapping", field="metadata", line=lines.of("metadata"))
    meta = dict(meta or {})
    images = _images(h, meta, lines, references)
    elements = _elements(h, meta, lines)
    if images is not None:
        meta["image_list"] = images
    if elements is not None:
        meta["element_list"] = elements
    if meta or "metadata" in h:
        body["metadata"] = meta

    if body.get("audio") is True and body.get("video_list"):
        raise SpecError(
            "audio: true cannot go with a reference video (video_list): the service generates sound "
            "or follows a video, never both",
            field="audio",
            line=lines.of("audio"),
        )

    taken = {r.where for r in references}  # references get their URL later, not from a file
    for items, where, key, name in (
        (body.get("video_list", []), ("video_list",), "video_url", "videos"),
        (meta.get("image_list", []), ("metadata", "image_list"), "image_url", "images"),
        (meta.get("element_list", []), ("metadata", "element_list"), "url", "elements"),
    ):
        for i, item in enumerate(items):
            place = (*where, i, key)
            if place not in taken:
                line = lines.of(name, i) or lines.of(*where, i)
                _media(item, key, place, name, line, base_dir, uploads, video=name == "videos")

    warnings.extend(_placeholders(prompt, body, prompt_line))
    return body, uploads, warnings, references


def _check_values(value, path: tuple, lines: Lines) -> None:
    """Refuse what JSON or the file system cannot carry: NaN and Infinity (not JSON), NUL
    characters and lone surrogates (not text that can be encoded)."""
    field = ".".join(map(str, path)) or "header"
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"must be a finite number, not {value}", field=field, line=lines.of(*path))
    if isinstance(value, str):
        if "\x00" in value:
            raise SpecError("contains a NUL character", field=field, line=lines.of(*path))
        if any("\ud800" <= c <= "\udfff" for c in value):
            raise SpecError("contains a lone surrogate (broken Unicode text)", field=field, line=lines.of(*path))
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_values(key, path, lines)
            _check_values(item, path + (key,), lines)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(item, path + (i,), lines)


# -- scalar fields ---------------------------------------------------------------------
def _duration(value: Any, line: int | None) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int or value not in DURATIONS:
        raise SpecError(f"must be 5 or 10 (seconds), not {value!r}", field="duration", line=line)
    return value


def _boolean(value: Any, name: str, line: int | None) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise SpecError(f"must be true or false, not {value!r}", field=name, line=line)


def _yes_no(value: Any, name: str, line: int | None) -> str:
    return "yes" if _boolean(value, name, line) else "no"


def _choice(value: Any, allowed: tuple[str, ...], name: str, line: int | None) -> str:
    if value not in allowed:
        raise SpecError(f"must be {' or '.join(allowed)}, not {value!r}", field=name, line=line)
    return value


# -- media lists -----------------------------------------------------------------------
def _as_list(value: Any, name: str, line: int | None) -> list:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise SpecError("must be a list", field=name, line=line)
    return value


def _item(item: Any, allowed: tuple[str, ...], name: str, line: int | None) -> dict:
    if not isinstance(item, dict):
        raise SpecError("each item must be a URL, a path, or a mapping", field=name, line=line)
    for key in item:
        if key not in allowed:
            _unknown(key, allowed, name, line)
    return item


def _url_or_path(item: dict, name: str, line: int | None) -> str:
    given = [k for k in ("url", "path") if k in item]
    if len(given) != 1:
        raise SpecError("give exactly one of `url` or `path`", field=name, line=line)
    value = item[given[0]]
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"`{given[0]}` must be a non-empty string", field=name, line=line)
    return value.strip()


def _exclusive(h: dict, meta: dict, short: str, api: str, api_where: str, lines: Lines) -> None:
    if short in h and api in meta:
        raise SpecError(f"give either `{short}` or `{api_where}`, not both", field=short, line=lines.of(short))


def _reference(item: dict, where: tuple, kind: str, name: str, line: int | None) -> Reference:
    """`{from: shot1, frame: last}`: a frame (or the video) of an earlier generation."""
    source = item["from"]
    if not isinstance(source, str) or not source.isidentifier():
        raise SpecError(f"`from` must be the --name of an earlier generation, not {source!r}", field=name, line=line)
    if any(k in item for k in ("url", "path")):
        raise SpecError("give `from` or a `url`/`path`, not both", field=name, line=line)
    frame: str | float = "last"
    if kind == "frame" and "frame" in item:
        frame = item["frame"]
        if isinstance(frame, bool) or not (
            frame in ("first", "last") or (isinstance(frame, (int, float)) and 0 <= frame < 3600)
        ):
            raise SpecError(f"`frame` must be first, last or a time in seconds, not {frame!r}", field=name, line=line)
    return Reference(where, source, kind, float(frame) if isinstance(frame, int) else frame)


def _images(h: dict, meta: dict, lines: Lines, references: list[Reference]) -> list | None:
    _exclusive(h, meta, "images", "image_list", "metadata.image_list", lines)
    out = []
    if "images" in h:
        for i, item in enumerate(_as_list(h["images"], "images", lines.of("images"))):
            line = lines.of("images", i)
            if isinstance(item, str):
                out.append({"image_url": item})
                continue
            item = _item(item, IMAGE_KEYS, f"images[{i}]", line)
            if "from" in item:
                ref = _reference(item, ("metadata", "image_list", i, "image_url"), "frame", f"images[{i}]", line)
                references.append(ref)
                entry = {"image_url": ref.token}
                if "type" in item:
                    entry["type"] = _choice(item["type"], IMAGE_TYPES, f"images[{i}].type", line)
                out.append(entry)
                continue
            if "frame" in item:
                raise SpecError(
                    "`frame` goes with `from` (a frame of an earlier generation)", field=f"images[{i}]", line=line
                )
            entry = {"image_url": _url_or_path(item, f"images[{i}]", line)}
            if "type" in item:
                entry["type"] = _choice(item["type"], IMAGE_TYPES, f"images[{i}].type", line)
            out.append(entry)
        return out
    if "image_list" in meta:
        return _api_list(
            meta["image_list"],
            "metadata.image_list",
            ("metadata", "image_list"),
            API_IMAGE_KEYS,
            "image_url",
            {"type": _one_of(IMAGE_TYPES)},
            lines,
        )
    return None


def _videos(h: dict, lines: Lines, references: list[Reference]) -> list | None:
    if "videos" in h and "video_list" in h:
        raise SpecError("give either `videos` or `video_list`, not both", field="videos", line=lines.of("videos"))
    out = []
    if "videos" in h:
        for i, item in enumerate(_as_list(h["videos"], "videos", lines.of("videos"))):
            line = lines.of("videos", i)
            if isinstance(item, str):
                item = {"url": item}
            item = _item(item, VIDEO_KEYS, f"videos[{i}]", line)
            if "from" in item:
                ref = _reference(item, ("video_list", i, "video_url"), "video", f"videos[{i}]", line)
                references.append(ref)
                url = ref.token
            elif not isinstance(item.get("url"), str) or not item["url"].strip():
                raise SpecError(
                    "needs a `url` (or `from: NAME` for an earlier generation)", field=f"videos[{i}]", line=line
                )
            else:
                url = item["url"].strip()
            out.append(
                {
                    "video_url": url,
                    "refer_type": _choice(item.get("refer_type", "base"), REFER_TYPES, f"videos[{i}].refer_type", line),
                    "keep_original_sound": _yes_no(
                        item.get("keep_original_sound", "no"), f"videos[{i}].keep_original_sound", line
                    ),
                }
            )
        return out
    if "video_list" in h:
        return _api_list(
            h["video_list"],
            "video_list",
            ("video_list",),
            API_VIDEO_KEYS,
            "video_url",
            {"refer_type": _one_of(REFER_TYPES), "keep_original_sound": _yes_no},
            lines,
        )
    return None


def _elements(h: dict, meta: dict, lines: Lines) -> list | None:
    _exclusive(h, meta, "elements", "element_list", "metadata.element_list", lines)
    out = []
    if "elements" in h:
        for i, item in enumerate(_as_list(h["elements"], "elements", lines.of("elements"))):
            line = lines.of("elements", i)
            if isinstance(item, str):
                item = {"url": item}
            item = _item(item, ELEMENT_KEYS, f"elements[{i}]", line)
            role = item.get("role", "subject")
            if not isinstance(role, str) or not role.strip():
                raise SpecError("`role` must be a word such as subject", field=f"elements[{i}].role", line=line)
            out.append(
                {
                    "url": _url_or_path(item, f"elements[{i}]", line),
                    "type": _choice(item.get("type", "image"), ELEMENT_TYPES, f"elements[{i}].type", line),
                    "role": role,
                }
            )
        return out
    if "element_list" in meta:
        return _api_list(
            meta["element_list"],
            "metadata.element_list",
            ("metadata", "element_list"),
            API_ELEMENT_KEYS,
            "url",
            {"type": _one_of(ELEMENT_TYPES)},
            lines,
        )
    return None


def _api_list(
    items: Any, where: str, path: tuple, allowed: tuple[str, ...], url_key: str, checks: dict, lines: Lines
) -> list:
    """A list written in the API's own shape (pasted from the docs): every key known, the URL
    present, enumerated values checked (and booleans turned into the API's words)."""
    out = []
    for i, item in enumerate(_as_list(items, where, lines.of(*path))):
        line = lines.of(*path, i)
        item = dict(_item(item, allowed, f"{where}[{i}]", line))
        if not isinstance(item.get(url_key), str):
            raise SpecError(f"needs a {url_key}", field=f"{where}[{i}]", line=line)
        for key, check in checks.items():
            if key in item:
                item[key] = check(item[key], f"{where}[{i}].{key}", line)
        out.append(item)
    return out


def _one_of(allowed: tuple[str, ...]):
    return lambda value, name, line: _choice(value, allowed, name, line)


def _media(
    item: dict,
    key: str,
    where: tuple,
    name: str,
    line: int | None,
    base_dir: Path,
    uploads: list[LocalFile],
    *,
    video: bool = False,
) -> None:
    """Check one media reference: a public http(s) URL, or (images only) a local file."""
    value = item[key].strip()
    item[key] = value
    field = f"{name}[{where[-2]}]"
    if value.lower().startswith("data:") or _BASE64ISH.match(value):
        raise SpecError(
            "base64 / data URIs are refused by the service: give a public http(s) URL"
            + ("" if video else " or a local file path (kling_nb uploads it)"),
            field=field,
            line=line,
        )
    if re.match(r"^https?://", value, re.I):
        if not re.match(r"^https?://[^\s/?#]+", value, re.I):
            raise SpecError(f"{value!r} is not a complete URL", field=field, line=line)
        return
    if _SCHEME.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):
        raise SpecError(f"only public http(s) URLs can be used, not {value.split(':')[0]}:", field=field, line=line)
    path = (base_dir / Path(value).expanduser()).resolve()
    if video:
        raise SpecError(
            f"{value!r} is a local file, but the service has no upload endpoint for videos: "
            "host it somewhere public and give its http(s) URL",
            field=field,
            line=line,
        )
    if not path.is_file():
        raise SpecError(f"no such file: {value}", field=field, line=line)
    size = path.stat().st_size
    if size == 0:
        raise SpecError(f"{value} is empty", field=field, line=line)
    if size > MAX_IMAGE_BYTES:
        raise SpecError(
            f"{value} is {size:,} bytes; the upload limit is {MAX_IMAGE_BYTES:,} bytes (10 MiB)", field=field, line=line
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(64)
        digest.update(head)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    mime = sniff_image(head)
    if mime is None:
        what = "a video" if sniff_video(head) else "not an image"
        raise SpecError(
            f"{value} is {what}: images must be JPEG, PNG, WebP or GIF (checked by content)", field=field, line=line
        )
    uploads.append(LocalFile(where, path, digest.hexdigest(), mime, size))


# -- placeholders ----------------------------------------------------------------------
def _placeholders(prompt: str, body: dict, prompt_line: int | None) -> list[str]:
    def line_of(match) -> int | None:
        return None if prompt_line is None else prompt_line + prompt.count("\n", 0, match.start())

    warnings = []
    for match in ANY_TRIPLE_ANGLE.finditer(prompt):
        if not PLACEHOLDER.fullmatch(match.group(0)):
            raise SpecError(
                f"malformed placeholder {match.group(0)[:40]!r}: write <<<image_N>>>, <<<video_N>>> or <<<element_N>>>",
                field="prompt",
                line=line_of(match),
            )
    for kind, path in PLACEHOLDER_LISTS.items():
        node: Any = body
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        items = node if isinstance(node, list) else []
        where = ".".join(path)
        order = []
        for match in PLACEHOLDER.finditer(prompt):
            if match.group(1) != kind:
                continue
            n = int(match.group(2))
            if n > len(items):
                have = f"has {len(items)} item{'s' * (len(items) != 1)}" if items else "is empty"
                raise SpecError(
                    f"{match.group(0)} refers to item {n} of {where}, which {have}", field="prompt", line=line_of(match)
                )
            if n not in order:
                order.append(n)
        if order != sorted(order):
            first = next(
                m
                for m in PLACEHOLDER.finditer(prompt)
                if m.group(1) == kind
                and int(m.group(2)) == next(a for a, n in zip(order, sorted(order), strict=True) if a != n)
            )
            raise SpecError(
                f"<<<{kind}_N>>> placeholders first appear in the order {order}, but the service requires {where} "
                f"in the order of the prompt: renumber them {sorted(order)} in reading order and list the items "
                "in that order",
                field="prompt",
                line=line_of(first),
            )
        unused = [i for i in range(1, len(items) + 1) if i not in order]
        if unused:
            warnings.append(
                f"{where} item(s) {', '.join(map(str, unused))} are not referred to in the prompt "
                f"(add <<<{kind}_{unused[0]}>>>): the service inserts nothing for you"
            )
    return warnings


# -- interpolation ---------------------------------------------------------------------
class _Names(dict):
    def __init__(self, namespace: dict):
        super().__init__()
        self.namespace = namespace

    def __missing__(self, key):
        if key in self.namespace:
            return self.namespace[key]
        raise KeyError(key)


def _format(text: str, namespace: dict, field: str, line: int | None) -> str:
    """`{name}`, `{obj.attr}`, `{x:.2f}` from the namespace; `{{` and `}}` are literal braces."""
    if "{" not in text and "}" not in text:
        return text
    try:
        return string.Formatter().vformat(text, (), _Names(namespace))
    except KeyError as err:
        raise SpecError(
            f"unknown name {{{err.args[0]}}} (write {{{{ and }}}} for literal braces)", field=field, line=line
        ) from None
    except (ValueError, IndexError) as err:
        raise SpecError(
            f"cannot fill in braces: {err}; write {{{{ and }}}} for literal braces", field=field, line=line
        ) from None
    except Exception as err:  # the user's own object failed to format
        raise SpecError(f"filling in braces failed: {type(err).__name__}: {err}", field=field, line=line) from None


def _interpolate(value: Any, namespace: dict, lines: Lines, path: tuple = ()) -> Any:
    if isinstance(value, str):
        return _format(value, namespace, ".".join(map(str, path)) or "value", lines.of(*path))
    if isinstance(value, dict):
        return {k: _interpolate(v, namespace, lines, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, namespace, lines, path + (i,)) for i, v in enumerate(value)]
    return value


def _unknown(key: Any, allowed: tuple[str, ...], where: str, line: int | None) -> None:
    guess = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"; did you mean `{guess[0]}`?" if guess else f"; known: {', '.join(allowed)}"
    raise SpecError(f"unknown key `{key}`{hint}", field=where, line=line)


def deep_copy(body: dict) -> dict:
    return copy.deepcopy(body)
