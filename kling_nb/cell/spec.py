"""The %%kling cell language: magic line + YAML header + prompt -> Request(s). No network.

A cell is an optional YAML header, a line that is exactly `---`, then the prompt:

    %%kling --name wave --wait
    mode: pro
    images: [media/portrait.png]
    ---
    Make the person in <<<image_1>>> wave at the camera

- A leading `---` line (front matter) is accepted; a cell without `---` is all prompt; the
  prompt may instead be `prompt:` in the header (not both).
- Header keys are the API's own (a JSON body pasted from the docs is valid YAML), plus the
  shorthands `images:`, `videos:`, `elements:` and, for variants, `sweep:` and `variants:`.
- YAML is read the way people write it: `16:9` stays a string (YAML 1.1 would make it the
  number 969), `no` stays the word no (booleans are only true/false; `audio: yes` and
  `keep_original_sound: no` are then read as what they say), dates stay strings.
  Anchors/aliases and tags are refused (they let a few bytes expand into gigabytes).
- Python variables: `{name}`, `{obj.attr}`, `{x:.2f}` in the prompt and in string values;
  `{{` and `}}` are literal braces. An unknown name is an error that names it.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..contract import MODEL, billing_class
from ..errors import SpecError
from .fields import BATCH_KEYS, REFERENCE_PREFIX, TOP_LEVEL, Lines, LocalFile, Reference, build_body
from .sweep import expand, labels

__all__ = ["Batch", "LINE_HELP", "LocalFile", "Options", "Request", "from_fields", "parse", "parse_batch"]

MAX_CELL_CHARS = 256 * 1024
MAX_HEADER_CHARS = 64 * 1024
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Options:
    name: str | None = None
    wait: bool = False
    force: bool = False
    dry_run: bool = False
    yes: bool = False


@dataclass(frozen=True)
class Request:
    body: dict
    uploads: tuple[LocalFile, ...] = ()
    warnings: tuple[str, ...] = ()
    options: Options = Options()
    label: dict = field(default_factory=dict)
    references: tuple[Reference, ...] = ()  # images/videos taken from earlier generations
    name: str | None = None  # a shot's own name (NAME_1, NAME_2, ...); else the cell's --name

    @property
    def identity(self) -> str:
        """sha256 of the canonical body, each local file standing for its content hash: the
        same request gives the same identity wherever its images live."""
        return self.identity_for({})

    def identity_for(self, upstream: Mapping[str, str]) -> str:
        """The identity when the references stand for what they refer to: each by the identity
        of the generation it names (`upstream`: name -> identity) and the frame chosen, so a
        re-run of a finished story is recognised even though no URL is known yet."""
        body = copy.deepcopy(self.body)
        for local in self.uploads:
            _set(body, local.where, f"sha256:{local.sha256}")
        for ref in self.references:
            _set(body, ref.where, ref.token.replace(ref.name, upstream.get(ref.name, ref.name), 1))
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def billing_class(self) -> str:
        return billing_class(self.body)

    def with_urls(self, urls: Mapping[str, str], resolved: Mapping[tuple, str] | None = None) -> dict:
        """The body to POST once local files are uploaded (sha256 -> URL) and references are
        resolved (place in the body -> URL)."""
        body = copy.deepcopy(self.body)
        for local in self.uploads:
            _set(body, local.where, urls[local.sha256])
        for where, url in (resolved or {}).items():
            _set(body, where, url)
        return body

    def curl(self, base_url: str) -> str:
        data = json.dumps(self.body, indent=2, ensure_ascii=False).replace("'", "'\\''")
        return (
            f"curl --request POST \\\n  --url {base_url.rstrip('/')}/v1/videos/generations \\\n"
            f'  --header "Authorization: Bearer $TOAPIS_API_KEY" \\\n'
            f"  --header 'Content-Type: application/json' \\\n  --data '{data}'"
        )

    @classmethod
    def from_body(cls, body: dict) -> Request:
        """A request for a body from the journal; references still standing in it (a story
        whose kernel stopped before they were resolved) are references again."""
        return cls(body=copy.deepcopy(body), references=tuple(_references_in(body, ())))


def _references_in(node: object, where: tuple) -> list[Reference]:
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in _references_in(v, where + (k,))]
    if isinstance(node, list):
        return [r for i, v in enumerate(node) for r in _references_in(v, where + (i,))]
    if isinstance(node, str) and node.startswith(REFERENCE_PREFIX):
        name, _, choice = node[len(REFERENCE_PREFIX) :].partition("#")
        if choice == "video":
            return [Reference(where, name, "video")]
        try:
            frame: str | float = choice if choice in ("first", "last") else float(choice)
        except ValueError:
            return []
        return [Reference(where, name, "frame", frame)]
    return []


@dataclass(frozen=True)
class Batch:
    requests: tuple[Request, ...]
    options: Options
    warnings: tuple[str, ...] = ()
    film: str | None = None  # a `shots:` cell: the name its stitched film is shown under


def parse(
    cell: str, line: str = "", namespace: dict | None = None, *, allowed_models=(MODEL,), base_dir=None
) -> Request:
    """Exactly one request from a cell; SpecError for anything wrong (or for a sweep)."""
    batch = parse_batch(cell, line, namespace, allowed_models=allowed_models, base_dir=base_dir)
    if len(batch.requests) != 1:
        raise SpecError(f"this cell expands to {len(batch.requests)} requests; use parse_batch", field="sweep")
    return batch.requests[0]


def parse_batch(
    cell: str, line: str = "", namespace: dict | None = None, *, allowed_models=(MODEL,), base_dir=None
) -> Batch:
    """Every request a cell asks for (one, or one per variant), validated."""
    if not isinstance(cell, str) or not isinstance(line, str):
        raise SpecError("cell and line must be text")
    if len(cell) > MAX_CELL_CHARS:
        raise SpecError(f"the cell is {len(cell)} characters; at most {MAX_CELL_CHARS}")
    if "\x00" in cell:
        raise SpecError("the cell contains a NUL character (binary data?)")
    options = parse_line(line)
    header_text, first_line, body_prompt, body_prompt_line = split_cell(cell)
    header, lines = load_header(header_text, first_line)
    base = Path(base_dir) if base_dir is not None else Path(os.getcwd())
    if "shots" in header:
        return _shots(header, lines, body_prompt, options, base, namespace, tuple(allowed_models))
    variants = expand(header, lines)
    requests = []
    for (variant, _changed), label in zip(variants, labels([c for _, c in variants]), strict=True):
        prompt = _prompt(variant, header, body_prompt, lines)
        prompt_line = body_prompt_line if prompt == body_prompt else None
        fields = {k: v for k, v in variant.items() if k != "prompt"}
        requests.append(_request(fields, prompt, lines, base, namespace, allowed_models, prompt_line, options, label))
    seen: dict[str, int] = {}
    for i, request in enumerate(requests, 1):
        if request.identity in seen:  # two tiles of one request would be one billed task, twice
            raise SpecError(
                f"variants {seen[request.identity]} and {i} are the same request; list each value once",
                field="sweep",
                line=lines.of("sweep") or lines.of("variants"),
            )
        seen[request.identity] = i
    return Batch(tuple(requests), options)


def _request(
    fields, prompt, lines, base, namespace, allowed_models, prompt_line, options, label, name: str | None = None
) -> Request:
    body, uploads, warnings, references = build_body(
        fields,
        prompt,
        lines=lines,
        base_dir=base,
        namespace=namespace if namespace is not None else {},
        allowed_models=tuple(allowed_models),
        prompt_line=prompt_line,
    )
    if len(json.dumps(body)) > MAX_BODY_BYTES:
        raise SpecError(f"the request body would be over {MAX_BODY_BYTES // 1024} KB; keep it small")
    own = name or options.name
    for ref in references:
        if ref.name == own:
            raise SpecError(
                f"`from: {ref.name}` refers to this very generation",
                field="from",
                line=lines.of("images") or lines.of("videos"),
            )
    return Request(body, tuple(uploads), tuple(warnings), options, label, tuple(references), name)


_SHOT_PLACEHOLDER = re.compile(r"<<<image_([1-9][0-9]*)>>>")


def _shots(header, lines, style, options, base, namespace, allowed_models) -> Batch:
    """`shots:` — a sequence generated in order, each continuing from the previous shot's last
    frame (unless `continue: false`), then stitched into one film named by --name."""
    if options.name is None:
        raise SpecError(
            "a `shots:` cell needs --name: the film's name (its shots are NAME_1, NAME_2, ...)",
            field="shots",
            line=lines.of("shots"),
        )
    if "sweep" in header or "variants" in header:
        raise SpecError("`shots:` cannot be combined with sweep or variants", field="shots", line=lines.of("shots"))
    shots = header["shots"]
    if not isinstance(shots, list) or not shots:
        raise SpecError(
            "must be a list of shots: each a prompt, or a mapping with `prompt` and header fields",
            field="shots",
            line=lines.of("shots"),
        )
    base_fields = {k: v for k, v in header.items() if k not in ("shots", "prompt")}
    requests = []
    for i, shot in enumerate(shots, 1):
        line = lines.of("shots", i - 1)
        if isinstance(shot, str):
            shot = {"prompt": shot}
        if not isinstance(shot, dict) or not isinstance(shot.get("prompt"), str):
            raise SpecError("each shot is a prompt, or a mapping with `prompt`", field=f"shots[{i - 1}]", line=line)
        fields = {**base_fields, **{k: v for k, v in shot.items() if k not in ("prompt", "continue")}}
        prompt = shot["prompt"] + (f", {style}" if style else "")
        keep_going = shot.get("continue", True)
        if not isinstance(keep_going, bool):
            raise SpecError("`continue` must be true or false", field=f"shots[{i - 1}].continue", line=line)
        if i > 1 and keep_going:
            # The previous shot's last frame becomes image 1 (the first frame); the shot's own
            # images, if any, move up one place, and so do their placeholders.
            prompt = "Continuing from <<<image_1>>>: " + _SHOT_PLACEHOLDER.sub(
                lambda m: f"<<<image_{int(m.group(1)) + 1}>>>", prompt
            )
            own = fields.get("images", [])
            fields["images"] = [
                {"from": f"{options.name}_{i - 1}", "frame": "last", "type": "first_frame"},
                *(own if isinstance(own, list) else [own]),
            ]
        requests.append(
            _request(
                fields,
                prompt,
                lines,
                base,
                namespace,
                allowed_models,
                None,
                options,
                {"shot": i},
                name=f"{options.name}_{i}",
            )
        )
    return Batch(tuple(requests), options, film=options.name)


def from_fields(prompt: str, fields: dict, *, base_dir=None, allowed_models=(MODEL,)) -> Request:
    """A request from Python values (kling_nb.generate): the same rules as a cell, no YAML,
    no brace filling (Python has f-strings)."""
    if not isinstance(prompt, str):
        raise SpecError("the prompt must be a string", field="prompt")
    base = Path(base_dir) if base_dir is not None else Path(os.getcwd())
    body, uploads, warnings, references = build_body(
        dict(fields), prompt, lines=Lines(), base_dir=base, namespace=None, allowed_models=tuple(allowed_models)
    )
    return Request(body, tuple(uploads), tuple(warnings), references=tuple(references))


# -- the magic line ----------------------------------------------------------------------
class _LineParser(argparse.ArgumentParser):
    def error(self, message):
        raise SpecError(f"{message} (options: --name NAME, --wait, --force, --dry-run, --yes)", field="magic line")


# The one declaration of the magic line's options; `%%kling?` prints LINE_HELP, made from it.
_LINE = _LineParser(prog="%%kling", add_help=False, allow_abbrev=False, exit_on_error=False)
_LINE.add_argument(
    "--name", metavar="NAME", help="keep the result in the variable NAME (a Generation, or a list for a sweep)"
)
_LINE.add_argument(
    "--wait", action="store_true", help="block until the video is ready (Ctrl-C stops the waiting, not the generation)"
)
_LINE.add_argument(
    "--force", action="store_true", help="generate again even if the journal already has this exact request (billed)"
)
_LINE.add_argument(
    "--dry-run",
    action="store_true",
    help="show the exact JSON body, the curl command (key redacted) and the billing class; send nothing",
)
_LINE.add_argument(
    "--yes",
    action="store_true",
    help="confirm a cell that starts more generations than KlingMagics.confirm_above (default 8)",
)


def _option_usage(action: argparse.Action) -> str:
    """`--name NAME`: the option's strings, then its metavar if it takes a value (a plain str for
    every option of the magic line; a tuple metavar is for nargs > 1, which it has none of)."""
    metavar = action.metavar
    return " ".join(action.option_strings) + (" " + metavar if isinstance(metavar, str) and metavar else "")


LINE_HELP = "\n".join(f"{_option_usage(a):<14}{a.help}" for a in _LINE._actions)


def parse_line(line: str) -> Options:
    try:
        words = shlex.split(line)
    except ValueError as err:
        raise SpecError(f"cannot read the magic line: {err}", field="magic line") from None
    try:
        args = _LINE.parse_args(words)
    except argparse.ArgumentError as err:
        raise SpecError(str(err), field="magic line") from None
    if args.name is not None and not (args.name.isidentifier() and not args.name.startswith("_")):
        raise SpecError(f"--name must be a Python variable name, not {args.name!r}", field="magic line")
    return Options(args.name, args.wait, args.force, args.dry_run, args.yes)


# -- the cell ----------------------------------------------------------------------------
def split_cell(cell: str) -> tuple[str, int, str, int]:
    """(header text, cell line where it starts, prompt text, cell line where the prompt starts)."""
    rows = cell.replace("\r\n", "\n").split("\n")
    marks = [i for i, row in enumerate(rows) if row.rstrip() == "---"]
    if not marks:
        if _is_pasted_body(cell):  # a JSON body from the vendor's docs: all header
            return cell, 1, "", 1
        for i, row in enumerate(rows):
            if row.strip():
                key = _HEADER_KEY.match(row)
                if key:
                    raise SpecError(
                        f"this cell has no `---` line, so `{key.group(1)}:` would be sent as part of the prompt; "
                        "did you forget the `---` line after the header?",
                        field="header",
                        line=i + 1,
                    )
                break
        return "", 1, *_trim(rows, 0)
    first_text = next((i for i, row in enumerate(rows) if row.strip()), None)
    if marks[0] == first_text and len(marks) > 1:  # front matter: --- header --- prompt
        start, end = marks[0], marks[1]
        return "\n".join(rows[start + 1 : end]), start + 2, *_trim(rows[end + 1 :], end + 1)
    if marks[0] == first_text:  # a lone leading ---: no header
        return "", 1, *_trim(rows[marks[0] + 1 :], marks[0] + 1)
    return "\n".join(rows[: marks[0]]), 1, *_trim(rows[marks[0] + 1 :], marks[0] + 1)


# A first line such as `mode: pro` or `duration: 10` in a cell without `---`.
_HEADER_KEY = re.compile(r"^\s*(" + "|".join(map(re.escape, TOP_LEVEL + BATCH_KEYS)) + r")\s*:(\s|$)")


def _is_pasted_body(cell: str) -> bool:
    text = cell.strip()
    if not text.startswith("{"):
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "prompt" in data


def _trim(rows: list[str], offset: int) -> tuple[str, int]:
    """The rows without outer blank lines, and the 1-based cell line of the first one kept
    (`offset` is the 0-based index of rows[0] in the cell)."""
    while rows and not rows[0].strip():
        rows, offset = rows[1:], offset + 1
    while rows and not rows[-1].strip():
        rows = rows[:-1]
    return "\n".join(rows), offset + 1


def _prompt(variant: dict, header: dict, body_prompt: str, lines: Lines) -> str:
    if "prompt" in header and body_prompt:
        raise SpecError(
            "the prompt is given twice: as `prompt:` and after `---`", field="prompt", line=lines.of("prompt")
        )
    prompt = variant.get("prompt", body_prompt if body_prompt else header.get("prompt", ""))
    if not isinstance(prompt, str):
        raise SpecError(f"must be text, not {type(prompt).__name__}", field="prompt", line=lines.of("prompt"))
    return prompt


# -- YAML, read as people mean it --------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style scalars (no sexagesimals, no yes/no booleans, no
    dates), no anchors or aliases, and no tags."""

    yaml_implicit_resolvers: dict = {}

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise SpecError(
                "anchors and aliases (&, *) are not supported in the header",
                field="header",
                line=event.start_mark.line + 1,
            )
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise SpecError(
                "anchors and aliases (&, *) are not supported in the header",
                field="header",
                line=event.start_mark.line + 1,
            )
        if getattr(event, "tag", None) is not None:  # explicit tags: !!python/object and friends
            raise SpecError(
                f"YAML tags such as {event.tag} are not supported", field="header", line=event.start_mark.line + 1
            )
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


def load_header(text: str, first_line: int) -> tuple[dict, Lines]:
    """The header as a dict, and the cell line of every key and list item."""
    if not text.strip():
        return {}, Lines()
    if len(text) > MAX_HEADER_CHARS:
        raise SpecError(f"the header is {len(text)} characters; at most {MAX_HEADER_CHARS}", field="header")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, Lines()
        data = loader.construct_document(node)
    except SpecError as err:
        raise SpecError(err.reason, field="header", line=(err.line or 1) + first_line - 1) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise SpecError(
            f"the header is not valid YAML: {problem}", field="header", line=mark.line + first_line if mark else None
        ) from None
    except (ValueError, TypeError, RecursionError) as err:
        raise SpecError(f"the header is not valid YAML: {type(err).__name__}", field="header") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(
            "the header must be `key: value` lines (a mapping), then `---`, then the prompt",
            field="header",
            line=first_line,
        )
    table: dict[tuple, int] = {}
    _walk(node, (), table, first_line)
    if any(not isinstance(k, str) for k in data):
        raise SpecError("header keys must be words", field="header", line=first_line)
    return data, Lines(table)


def _walk(node, path: tuple, table: dict, first_line: int) -> None:
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise SpecError(
                    f"`{key}` is given twice",
                    field=".".join(map(str, path + (key,))),
                    line=key_node.start_mark.line + first_line,
                )
            seen.add(key)
            table[path + (key,)] = key_node.start_mark.line + first_line
            _walk(value_node, path + (key,), table, first_line)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            table[path + (i,)] = item.start_mark.line + first_line
            _walk(item, path + (i,), table, first_line)


def _set(body: dict, where: tuple, value) -> None:
    node = body
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
