"""Where the notebook is shown, and how a saved video is referenced there.

    JupyterLab, Notebook 7, nbconvert   a <video> whose src is relative to the notebook
    VS Code, Colab                      the video embedded as a data: URI (a relative file
                                        never plays there), under a size cap
    Voilà                               the live widget stays: the page has rendered each
                                        cell once, and only widgets reach it afterwards
    GitHub, PDF, PyCharm, a sanitizer   the poster still: an image/jpeg entry of the output
                                        and an <img> inside the <video>, plus a link

(docs/design-notes.md section 6 has what each viewer does.) Detection is by what each
frontend leaves in the kernel: Colab's `google.colab` module, VS Code's environment.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..engine.generation import Snapshot
from . import render

EMBED_MODES = ("auto", "always", "never")
VSCODE_VARIABLES = ("VSCODE_PID", "VSCODE_CWD", "VSCODE_IPC_HOOK_CLI")


def frontend(environ: Mapping[str, str] = os.environ, modules: Mapping[str, object] = sys.modules) -> str:
    """'colab', 'vscode', 'voila' or 'jupyter' (anything that loads files relative to the notebook)."""
    if "google.colab" in modules:
        return "colab"
    if any(environ.get(name) for name in VSCODE_VARIABLES):
        return "vscode"
    if environ.get("VOILA_KERNEL_ID") or environ.get("SERVER_SOFTWARE", "").startswith("voila"):
        return "voila"
    return "jupyter"


def should_embed(mode: str, where: str) -> bool:
    return mode == "always" or (mode == "auto" and where in ("colab", "vscode"))


def colab_key(modules: Mapping[str, object] = sys.modules) -> str | None:
    """The key from Colab Secrets (the key icon in Colab's sidebar), if this is Colab and the
    notebook was granted access; None otherwise. Never raises, never prints the key."""
    if "google.colab" not in modules:
        return None
    try:
        from google.colab import userdata

        value = userdata.get("TOAPIS_API_KEY")
    except Exception:  # not granted, not set, or not Colab after all
        return None
    return value if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True)
class Embedding:
    mode: str = "auto"
    max_bytes: int = 20 * 1024 * 1024
    where: str = "jupyter"

    @classmethod
    def here(cls, mode: str = "auto", max_bytes: int = 20 * 1024 * 1024) -> Embedding:
        return cls(mode, max_bytes, frontend())

    def media(self, s: Snapshot) -> render.Media | None:
        """How this finished generation's video is referenced in its output (None: no video)."""
        if s.video_path is None or s.status != "completed":
            return None
        still = _b64(s.poster_path)
        still_src = render.relative_src(s.poster_path) if still and s.poster_path else None
        src, note = render.relative_src(s.video_path), ""
        if should_embed(self.mode, self.where):
            size = s.video_path.stat().st_size if s.video_path.is_file() else 0
            if 0 < size <= self.max_bytes:
                src = "data:video/mp4;base64," + base64.b64encode(s.video_path.read_bytes()).decode()
            else:
                note = (
                    f"not embedded: {_size(size)} is over the {_size(self.max_bytes)} cap "
                    "(%config KlingMagics.embed_max_mb)"
                )
        return render.Media(src=src, still=still, still_src=still_src, note=note)


def contact_sheet(stills: list[str | None], columns: int) -> str | None:
    """One JPEG of a grid's stills side by side (the grid's image entry), as base64."""
    from PIL import Image

    images = [Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB") for s in stills if s]
    if not images:
        return None
    w = max(i.width for i in images)
    h = max(i.height for i in images)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (w * min(columns, len(images)), h * rows), (255, 255, 255))
    for n, image in enumerate(images):
        sheet.paste(image, ((n % columns) * w, (n // columns) * h))
    scale = min(1.0, 640 / sheet.width)
    if scale < 1:
        sheet = sheet.resize((round(sheet.width * scale), round(sheet.height * scale)))
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=50, optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 104858 else f"{n:,} bytes"


def _b64(path: Path | None) -> str | None:
    if path is None or not path.is_file() or path.is_symlink():
        return None
    return base64.b64encode(path.read_bytes()).decode()
