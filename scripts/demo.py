"""`make demo`: run the quickstart notebook headless on the embedded simulator and say where
the executed notebook and its videos are.

A copy of notebooks/ goes to demo-output/ first, so the demo never touches the repository's
notebooks and can be run again from scratch (delete demo-output/ to start over; re-running
without deleting shows the journal at work: nothing is generated twice).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01-quickstart.ipynb"


def main() -> int:
    out = ROOT / "demo-output"
    out.mkdir(exist_ok=True)
    for item in (ROOT / "notebooks").iterdir():
        if item.suffix == ".ipynb" or item.name == "media":
            target = out / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    env_key = "TOAPIS_API_KEY" in os.environ
    print(f"Running {NOTEBOOK} on {'the real service' if env_key else 'the embedded simulator (no key set)'} ...")
    nb = nbformat.read(out / NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as sockets:
        # IPC sockets in a private folder: no TCP port, so no "running over TCP without
        # encryption" warning, and nothing else on the machine can talk to the kernel.
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        try:
            NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(out)}}).execute()
        finally:
            if km.has_kernel:
                km.shutdown_kernel()
    executed = out / NOTEBOOK
    nbformat.write(nb, executed)
    videos = sorted((out / "kling_outputs").glob("*.mp4"))
    print(f"Executed notebook: {executed}")
    print(f"Journal:           {out / 'kling_outputs' / 'journal.sqlite'}")
    for v in videos:
        print(f"Video:             {v} ({v.stat().st_size // 1024} KB)")
    if not videos:
        print("No video was produced: see the notebook's outputs.", file=sys.stderr)
        return 1
    print("Open it in JupyterLab (jupyter lab demo-output/) to watch the videos inline.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
