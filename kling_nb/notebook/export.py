"""One HTML file with every result of a notebook, for an LMS, an email or a web page.

    %kling export NOTEBOOK.ipynb [--embed]      python -m kling_nb export NOTEBOOK.ipynb [--embed]

nbconvert writes the page. Without --embed the videos stay files beside it (the page works
next to its kling_outputs/ folder); with --embed every video and still the outputs refer to
is put into the page as a data: URI, so the one file is enough. Only files inside the
notebook's folder are ever read (a received notebook is hostile input), and the size of
what is embedded is reported first.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import ConfigError
from ..media.files import atomic_file

_MEDIA = {".mp4": "video/mp4", ".webm": "video/webm", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
_SRC = re.compile(r'\b(src|poster|href)="([^"]+)"')


@dataclass(frozen=True)
class Export:
    path: Path
    embedded: dict[str, int]  # relative file -> bytes put into the page

    @property
    def report(self) -> str:
        total = sum(self.embedded.values())
        lines = [f"wrote {self.path.name} ({self.path.stat().st_size / 1048576:.1f} MiB)"]
        if self.embedded:
            lines.append(
                f"embedded {len(self.embedded)} file(s), {total / 1048576:.1f} MiB before base64 (+33% in the page)"
            )
        return "\n".join(lines)


def plan(notebook: Path) -> dict[str, int]:
    """What --embed would put into the page: each media file the outputs refer to, and its size."""
    folder = notebook.resolve().parent
    found: dict[str, int] = {}
    for text in _html_outputs(_read(notebook)):
        for _, ref in _SRC.findall(text):
            path = _inside(folder, ref)
            if path is not None:
                found[ref] = path.stat().st_size
    return found


def export(notebook: str | os.PathLike, *, embed: bool = False, out: str | os.PathLike | None = None) -> Export:
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    nb = _read(notebook)
    folder = notebook.resolve().parent
    embedded: dict[str, int] = {}
    if embed:
        cache: dict[str, str] = {}

        def inline(match: re.Match[str]) -> str:
            attr, ref = match.group(1), html.unescape(match.group(2))
            path = _inside(folder, ref)
            if path is None:
                return match.group(0)
            if ref not in cache:
                data = path.read_bytes()
                embedded[ref] = len(data)
                cache[ref] = f"data:{_MEDIA[path.suffix.lower()]};base64,{base64.b64encode(data).decode()}"
            return f'{attr}="{cache[ref]}"'

        for cell in nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "text/html" in data:
                    text = data["text/html"]
                    data["text/html"] = _SRC.sub(inline, "".join(text) if isinstance(text, list) else text)
    body, _ = HTMLExporter().from_notebook_node(nb)
    dest = Path(out) if out is not None else notebook.with_suffix(".html")
    with atomic_file(dest, "w") as f:
        f.write(body)
    return Export(dest, embedded)


def _read(notebook: Path):
    import nbformat

    if not notebook.is_file():
        raise ConfigError(f"no such notebook: {notebook.name}")
    try:
        return nbformat.read(notebook, as_version=4)
    except Exception as err:  # nbformat raises several kinds for a file that is not a notebook
        raise ConfigError(f"{notebook.name} is not a readable notebook ({type(err).__name__})") from None


def _html_outputs(nb) -> list[str]:
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/html")
            if text:
                texts.append("".join(text) if isinstance(text, list) else text)
    return texts


def _inside(folder: Path, ref: str) -> Path | None:
    """The media file `ref` points to, if it is a relative path to a file inside `folder`."""
    ref = unquote(html.unescape(ref))
    if not ref or ":" in ref.split("/")[0] or ref.startswith(("/", "\\")):
        return None  # a URL, a data: URI, or an absolute path
    path = folder / ref
    if path.suffix.lower() not in _MEDIA or path.is_symlink() or not path.is_file():
        return None
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return None
    return path
