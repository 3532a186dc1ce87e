"""Variants in one cell, in a real kernel: concurrent, labelled, partial failures contained,
re-runs free, and a saved grid that shows again without a kernel."""

from __future__ import annotations

import re

import pytest

from kling_nb.sim import SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, html_of, notebook, run, sim_env, text_of

QUEUE_S, RUN_S = 0.2, 2.0
SWEEP = "%%kling --name modes\nsweep:\n  mode: [std, pro]\n  duration: [5, 10]\n---\nA hummingbird"


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=QUEUE_S, run_s=RUN_S)) as s:
        yield s


def videos(html):
    return re.findall(r'<video src="(kling_outputs/[^"]+)"', html)


def test_sweep_runs_concurrently_and_fills_a_labelled_grid(sim, tmp_path):
    nb = run(notebook(FAST_CONFIG, SWEEP, "%kling wait"), tmp_path, sim_env(sim))
    submits = [e for e in sim.log if e["kind"] == "submit"]
    assert len(submits) == 4
    # every variant was submitted before the first one could have finished: concurrent
    assert max(e["t"] for e in submits) < min(e["t"] for e in submits) + QUEUE_S + RUN_S
    grid = html_of(nb.cells[1])
    assert 'class="kling-grid"' in grid and len(videos(grid)) == 4
    for label in ("mode=std · duration=5", "mode=std · duration=10", "mode=pro · duration=5", "mode=pro · duration=10"):
        assert label in grid
    assert all((tmp_path / v).exists() for v in videos(grid))
    assert "4 generations: 1 x 720P 5s, 1 x 720P 10s, 1 x 1080P 5s, 1 x 1080P 10s" in text_of(nb.cells[1])
    assert "kling-grid-controls" in grid and "<script>" in grid  # lockstep controls for live sessions


def test_rerunning_a_sweep_sends_nothing(sim, tmp_path):
    run(notebook(FAST_CONFIG, SWEEP, "%kling wait"), tmp_path, sim_env(sim))
    nb = run(notebook(FAST_CONFIG, SWEEP, "%kling wait"), tmp_path, sim_env(sim))
    assert sim.count("submit") == 4 and len(videos(html_of(nb.cells[1]))) == 4


def test_a_failed_variant_stays_in_its_tile(sim, tmp_path):
    cell = (
        "%%kling --name mixed\nvariants:\n  - prompt: A calm sea\n  - prompt: sim:fail a storm\n"
        "  - prompt: A harbour\n---\n"
    )
    nb = run(notebook(FAST_CONFIG, cell, "%kling wait"), tmp_path, sim_env(sim))
    grid = html_of(nb.cells[1])
    assert len(videos(grid)) == 2 and grid.count('class="kling-error"') == 1
    assert "generation_failed" in grid


def test_confirmation_limit(sim, tmp_path):
    cell = "%%kling{}\nsweep:\n  duration: [5, 10]\n  mode: [std, pro]\n---\nA kite"
    nb = run(
        notebook(
            FAST_CONFIG,
            "%config KlingMagics.confirm_above = 3",
            (cell.format(""), ["raises-exception"]),
            cell.format(" --yes"),
            "%kling wait",
        ),
        tmp_path,
        sim_env(sim),
    )
    refused = [o for o in nb.cells[2].outputs if o.output_type == "error"][0]
    assert "4 billed generations" in refused.evalue and "--yes" in refused.evalue
    assert sim.count("submit") == 4  # only the confirmed cell


def test_compare_named_generations_from_different_cells(sim, tmp_path):
    nb = run(
        notebook(
            FAST_CONFIG,
            "%%kling --name calm\n---\nA calm sea",
            "%%kling --name rough\nmode: pro\n---\nA rough sea",
            "%kling wait",
            "%kling compare calm rough",
            "import kling_nb\ngens = kling_nb.compare([calm, rough])\nprint(len(gens))",
        ),
        tmp_path,
        sim_env(sim),
    )
    grid = html_of(nb.cells[4])
    assert len(videos(grid)) == 2 and "name=calm" in grid and "name=rough" in grid
    assert len(videos(html_of(nb.cells[5]))) == 2 and "2" in text_of(nb.cells[5])


def test_compare_reads_earlier_runs_from_the_journal(sim, tmp_path):
    run(notebook(FAST_CONFIG, SWEEP, "%kling wait"), tmp_path, sim_env(sim))
    nb = run(notebook(FAST_CONFIG, "%kling compare modes"), tmp_path, sim_env(sim))
    assert len(videos(html_of(nb.cells[1]))) == 4 and sim.count("submit") == 4


def test_compare_unknown_name(sim, tmp_path):
    nb = run(notebook(FAST_CONFIG, ("%kling compare nobody", ["raises-exception"])), tmp_path, sim_env(sim))
    assert "no generation named 'nobody'" in nb.cells[1].outputs[0].evalue
