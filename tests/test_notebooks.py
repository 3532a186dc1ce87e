"""Every teaching notebook runs top to bottom with no key, as a student on Binder would.

nbclient fails on any error output except in cells tagged `raises-exception` (which must
then really raise); every generating cell must leave a relative <video> whose file exists,
except one tagged `refused`, which must show the service's refusal instead.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

from .kernel_harness import html_of, run

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
VIDEO_SRC = re.compile(r'<video src="([^"]+\.mp4)"')


def generating(cell) -> bool:
    src = cell.source
    return (
        cell.cell_type == "code"
        and src.startswith("%%kling")
        and "--dry-run" not in src.splitlines()[0]
        and not {"raises-exception", "refused"} & set(cell.metadata.get("tags", []))
    )


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_keyless_and_keeps_its_videos(name, tmp_path):
    shutil.copy(NOTEBOOKS / name, tmp_path / name)
    shutil.copytree(NOTEBOOKS / "media", tmp_path / "media")
    nb = nbformat.read(tmp_path / name, as_version=4)
    assert nb.cells[-1].source.strip() == "%kling wait", "headless runs keep every output only after a wait"
    nb = run(nb, tmp_path, {"TOAPIS_API_KEY": "", "TOAPIS_BASE_URL": ""}, timeout=300)
    # A notebook that starts a simulated service of its own (07) points kling_nb at it as at the
    # real one: those outputs cannot know they are simulated. Every other one must say so.
    own_service = any("KlingMagics.base_url" in c.source for c in nb.cells)

    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" in tags:
            assert errors, f"cell meant to show an error did not raise:\n{cell.source}"
            assert len(errors[0].traceback) == 1, "a kling_nb error is one short line, no traceback"
        if "refused" in tags:  # the service says no: one failure line, no video
            assert 'class="kling-error"' in html_of(cell) and "<video" not in html_of(cell)
        if generating(cell):
            srcs = VIDEO_SRC.findall(html_of(cell))
            assert srcs, f"no video in the output of:\n{cell.source}"
            for src in srcs:
                assert not src.startswith(("/", "http")), src  # relative to the notebook
                assert (tmp_path / src).stat().st_size > 1000
            if not own_service:
                assert "Simulated" in html_of(cell) or "simulated" in html_of(cell)
