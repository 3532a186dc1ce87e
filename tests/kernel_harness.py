"""Run notebooks in a real kernel (nbclient) against a simulator started by the test.

The kernel gets TOAPIS_BASE_URL pointing at the test's simulator and a distinctive key, so a
test can count what the kernel sent (the simulator's log) and scan everything it left behind
for the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

SECRET = "sk-test-SECRET-7f3a9c"

FAST_CONFIG = """\
%load_ext kling_nb
%config KlingMagics.poll_first_s = 0.2
%config KlingMagics.poll_interval_s = 0.5
%config KlingMagics.poll_min_s = 0.1"""


def notebook(*cells: str | tuple[str, list[str]]) -> nbformat.NotebookNode:
    """Cells are source strings, or (source, tags)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        c = nbformat.v4.new_code_cell(source)
        if tags:
            c.metadata["tags"] = tags
        nb.cells.append(c)
    return nb


def run(nb, folder: Path, env: dict[str, str], *, timeout: int = 120, setup=None) -> nbformat.NotebookNode:
    """Execute in a fresh kernel whose working directory is `folder`; save it there too.
    `setup(folder)` prepares the folder first (sample images, say)."""
    if setup is not None:
        setup(folder)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment of the process starting it
    try:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    nbformat.write(nb, folder / "executed.ipynb")
    return nb


def sim_env(sim) -> dict[str, str]:
    return {"TOAPIS_BASE_URL": sim.base_url, "TOAPIS_API_KEY": SECRET}


def outputs(cell) -> list[dict]:
    return list(cell.get("outputs", []))


def html_of(cell) -> str:
    return "\n".join(o["data"]["text/html"] for o in outputs(cell) if "data" in o and "text/html" in o["data"])


def text_of(cell) -> str:
    parts = []
    for o in outputs(cell):
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif "data" in o and "text/plain" in o["data"]:
            parts.append(o["data"]["text/plain"])
        elif o.get("output_type") == "error":
            parts.append(o["ename"] + ": " + o["evalue"])
    return "\n".join(parts)


def as_text(nb) -> str:
    return json.dumps(nb)
