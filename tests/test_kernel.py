"""%%kling in a real kernel (nbclient) against the simulator over loopback.

The saved notebook is the proof: every video as a relative <video> whose file exists, the
service's refusal as text, the key nowhere, and the journal keeping a re-run from billing.
"""

from __future__ import annotations

import re

import pytest

from kling_nb.sim import SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, SECRET, as_text, html_of, notebook, run, sim_env, text_of

VIDEO_SRC = re.compile(r'<video src="(kling_outputs/[^"]+\.mp4)"')


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.2, run_s=2.0)) as s:
        yield s


def make_notebook():
    return notebook(
        FAST_CONFIG,
        "%%kling --name a\nmode: std\n---\nA red kite over green hills",
        # the cell above returned before its generation finished...
        "assert a.status != 'completed', a.status\np0 = a.progress",
        # ...and the poller thread keeps tracking while this cell blocks the main thread
        "import time\ntime.sleep(1.5)\nprint('advanced' if a.progress > p0 or a.done else 'stuck')",
        "%%kling --name b --wait\nduration: 10\naspect_ratio: 9:16\n---\nA paper boat on a <b>rainy</b> street",
        "%%kling --name refused\n---\nsim:reject a forbidden scene <script>alert(1)</script>",
        "%kling wait",
    )


def test_cells_return_at_once_and_the_saved_notebook_keeps_every_video(sim, tmp_path):
    nb = run(make_notebook(), tmp_path, sim_env(sim))
    cells = nb.cells
    assert "advanced" in text_of(cells[3])

    for i in (1, 4):  # the non-waiting cell (finalized by %kling wait) and the --wait cell
        html = html_of(cells[i])
        match = VIDEO_SRC.search(html)
        assert match, f"cell {i} has no relative <video>: {html[:300]}"
        assert (tmp_path / match.group(1)).stat().st_size > 1000
        assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in cells[i].outputs)

    refused = html_of(cells[5]) + text_of(cells[5])
    assert "422" in refused and "content_policy" in refused
    assert "<script>alert(1)</script>" not in html_of(cells[5])  # prompt shown as text
    assert "&lt;script&gt;" in html_of(cells[5])
    assert "<b>rainy</b>" not in html_of(cells[4])

    saved = (tmp_path / "executed.ipynb").read_text()
    assert SECRET not in saved and SECRET not in as_text(nb)
    assert sim.count("submit") == 2  # a, b; the refused one was not accepted


def test_rerun_in_a_fresh_kernel_sends_nothing_and_shows_the_saved_videos(sim, tmp_path):
    run(make_notebook(), tmp_path, sim_env(sim))
    submits = sim.count("submit")
    again = notebook(
        FAST_CONFIG,
        "%%kling --name a\nmode: std\n---\nA red kite over green hills",
        "%%kling --name b --wait\nduration: 10\naspect_ratio: 9:16\n---\nA paper boat on a <b>rainy</b> street",
        "%kling wait",
    )
    nb = run(again, tmp_path, sim_env(sim))
    assert sim.count("submit") == submits
    for i in (1, 2):
        assert VIDEO_SRC.search(html_of(nb.cells[i]))
        assert "nothing sent" in html_of(nb.cells[i]) + text_of(nb.cells[i])


def test_force_submits_again(sim, tmp_path):
    cell = "%%kling --name a --wait{}\n---\nA red kite"
    run(notebook(FAST_CONFIG, cell.format("")), tmp_path, sim_env(sim))
    run(notebook(FAST_CONFIG, cell.format(" --force")), tmp_path, sim_env(sim))
    assert sim.count("submit") == 2


def test_a_mistake_is_one_short_error_and_nothing_is_sent(sim, tmp_path):
    nb = run(
        notebook(FAST_CONFIG, ("%%kling\nmode: ultra\n---\nA kite", ["raises-exception"])),
        tmp_path,
        sim_env(sim),
    )
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert len(errors) == 1
    assert "mode" in errors[0].evalue and "ultra" in errors[0].evalue
    assert len(errors[0].traceback) == 1  # one line, no Python traceback
    assert sim.count("submit") == 0
