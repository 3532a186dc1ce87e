"""Run All is safe and a dead kernel loses nothing: proven with real kernels, a real SQLite
journal and the simulator's log of what was actually sent (and billed)."""

from __future__ import annotations

import time

import pytest
from jupyter_client import KernelManager

from kling_nb.engine.journal import Journal
from kling_nb.sim import Faults, SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, SECRET, html_of, notebook, run, sim_env, text_of

CELL = "%%kling --name kite\n---\nA red kite over green hills"


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.2, run_s=3.0)) as s:
        yield s


def start_and_kill(folder, env, source, until):
    """Run `source` in a kernel, wait for `until()`, then SIGKILL the kernel."""
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(folder), env={**__import__("os").environ, **env})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        kc.execute(source)
        deadline = time.monotonic() + 60
        while not until():
            assert time.monotonic() < deadline, "the kernel never got that far"
            time.sleep(0.05)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)  # SIGKILL: nothing gets to clean up


def journal_has_task(folder):
    path = folder / "kling_outputs" / "journal.sqlite"
    if not path.exists():
        return False
    j = Journal(path)
    try:
        return any(r.task_id for r in j.history())
    finally:
        j.close()


def test_kernel_killed_mid_generation_then_rerun_reattaches(sim, tmp_path):
    start_and_kill(
        tmp_path,
        sim_env(sim),
        FAST_CONFIG + "\n" + "get_ipython().run_cell_magic('kling', '--name kite', 'A red kite over green hills')",
        lambda: journal_has_task(tmp_path),
    )
    assert sim.count("submit") == 1
    nb = run(notebook(FAST_CONFIG, CELL, "%kling wait"), tmp_path, sim_env(sim))
    assert sim.count("submit") == 1  # re-attached, not submitted again
    assert '<video src="kling_outputs/' in html_of(nb.cells[1])
    assert "re-attached" in html_of(nb.cells[1]) + text_of(nb.cells[1])


def test_resume_after_restart(sim, tmp_path):
    start_and_kill(
        tmp_path,
        sim_env(sim),
        FAST_CONFIG + "\n" + "get_ipython().run_cell_magic('kling', '--name kite', 'A red kite over green hills')",
        lambda: journal_has_task(tmp_path),
    )
    nb = run(notebook(FAST_CONFIG, "%kling resume", "%kling wait"), tmp_path, sim_env(sim))
    assert "re-attached to 1 task" in text_of(nb.cells[1])
    assert '<video src="kling_outputs/' in html_of(nb.cells[1])
    assert sim.count("submit") == 1


def test_failed_generation_is_submitted_again_on_rerun(sim, tmp_path):
    cell = "%%kling --name bad --wait\n---\nsim:fail a storm"
    first = run(notebook(FAST_CONFIG, cell), tmp_path, sim_env(sim))
    assert "generation_failed" in html_of(first.cells[1])
    run(notebook(FAST_CONFIG, cell), tmp_path, sim_env(sim))
    assert sim.count("submit") == 2


def test_unknown_outcome_is_not_resubmitted_by_a_rerun(sim, tmp_path):
    sim.set_faults(Faults(rate=1.0, kinds=("drop_after_accept",)))
    first = run(notebook(FAST_CONFIG, CELL.replace("kite", "kite --wait", 1)), tmp_path, sim_env(sim))
    assert "may have been accepted and billed" in html_of(first.cells[1])
    sim.set_faults(Faults())
    second = run(notebook(FAST_CONFIG, CELL.replace("kite", "kite --wait", 1)), tmp_path, sim_env(sim))
    assert "--force" in html_of(second.cells[1])
    assert sim.count("submit") == 1
    run(notebook(FAST_CONFIG, CELL.replace("kite", "kite --wait --force", 1)), tmp_path, sim_env(sim))
    assert sim.count("submit") == 2


def test_same_local_image_is_uploaded_once_across_kernels(sim, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "face.png")
    (tmp_path / "copy.png").write_bytes((tmp_path / "face.png").read_bytes())
    a = "%%kling --wait\nimages: [face.png]\n---\n<<<image_1>>> waves"
    b = "%%kling --wait\nmode: pro\nimages: [copy.png]\n---\n<<<image_1>>> waves"
    run(notebook(FAST_CONFIG, a), tmp_path, sim_env(sim))
    run(notebook(FAST_CONFIG, b), tmp_path, sim_env(sim))
    assert sim.count("upload") == 1 and sim.count("submit") == 2


def test_expired_and_missing_says_so_plainly(tmp_path):
    with Simulator(config=SimConfig(queue_s=0.1, run_s=0.3, result_lifetime_s=1.0)) as sim:
        run(notebook(FAST_CONFIG, CELL + "\n", "%kling wait"), tmp_path, sim_env(sim))
        for video in (tmp_path / "kling_outputs").glob("*.mp4"):
            video.unlink()
        time.sleep(1.2)
        nb = run(notebook(FAST_CONFIG, CELL, "%kling wait"), tmp_path, sim_env(sim))
        shown = html_of(nb.cells[1])
        assert "expired at" in shown and "--force" in shown and "404" not in shown
        assert sim.count("submit") == 1


def test_missing_video_with_a_live_url_is_downloaded_again(sim, tmp_path):
    run(notebook(FAST_CONFIG, CELL, "%kling wait"), tmp_path, sim_env(sim))
    for video in (tmp_path / "kling_outputs").glob("*.mp4"):
        video.unlink()
    nb = run(notebook(FAST_CONFIG, CELL, "%kling wait"), tmp_path, sim_env(sim))
    assert '<video src="kling_outputs/' in html_of(nb.cells[1])
    assert list((tmp_path / "kling_outputs").glob("*.mp4")) and sim.count("submit") == 1


def test_key_is_nowhere_in_the_journal(sim, tmp_path):
    run(notebook(FAST_CONFIG, CELL, "%kling wait"), tmp_path, sim_env(sim))
    for f in (tmp_path / "kling_outputs").iterdir():
        assert SECRET.encode() not in f.read_bytes()
