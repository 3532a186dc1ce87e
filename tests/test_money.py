"""Money in a real kernel against the simulator: the balance as the service reports it, spend
measured from it, a budget that refuses a cell before anything is sent, keys for a class made
with the vendor's token API (written only to their CSV), and a student's key running out."""

from __future__ import annotations

import csv
import stat

import pytest

from kling_nb.service.client import Client
from kling_nb.sim import SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, SECRET, as_text, notebook, run, sim_env, text_of

SIXTY = SimConfig(queue_s=0.1, run_s=0.6, rates=dict(std=12, pro=20, sound=4, video=6))  # a 5 s std cell: 60


@pytest.fixture
def sim():
    with Simulator(key=SECRET, config=SIXTY) as s:
        yield s


def errors_of(cell):
    return [o for o in cell.outputs if o.output_type == "error"]


def test_a_budget_refuses_the_cell_that_would_pass_it_before_anything_is_sent(sim, tmp_path):
    nb = run(
        notebook(
            FAST_CONFIG,
            "%config KlingMagics.budget_credits = 100",
            "%%kling --name one --wait\n---\nA lantern",
            "%%kling --name two --wait\n---\nA second lantern",
            ("%%kling --name three --wait\n---\nA third lantern", ["raises-exception"]),
            "%kling spend",
            "%kling balance",
            "%%kling --name one --wait\n---\nA lantern",  # a re-run of a saved result is never refused
        ),
        tmp_path,
        sim_env(sim),
    )
    assert sim.count("submit") == 2
    [refused] = errors_of(nb.cells[4])
    assert refused.ename == "BudgetError" and len(refused.traceback) == 1
    assert "spent 120 credits" in refused.evalue and "budget is 100" in refused.evalue
    assert "KlingMagics.budget_credits" in refused.evalue
    assert "this session: 120 credits" in text_of(nb.cells[5]) and "2 x 720P 5s, about 60 credits each" in text_of(
        nb.cells[5]
    )
    assert "unlimited; 120 used" in text_of(nb.cells[6])
    assert not errors_of(nb.cells[7])
    assert sum(1 for e in sim.log if e["kind"] == "balance") <= 6  # coalesced: never one per poll


def test_class_keys_go_only_into_their_csv_and_work(sim, tmp_path):
    nb = run(
        notebook(
            "import logging\nlogging.basicConfig(filename='kling.log', level=logging.DEBUG, force=True)",
            FAST_CONFIG,
            "%kling classroom keys 3 --credits 100 --expires 2099-12-31 --prefix pupil --out class.csv",
            "%kling classroom usage class.csv",
            ("%kling classroom keys 2 --credits 5 --out class.csv", ["raises-exception"]),
        ),
        tmp_path,
        sim_env(sim),
    )
    out = tmp_path / "class.csv"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["pupil_1", "pupil_2", "pupil_3"]
    assert all(r["credits"] == "100" and r["expires"] == "2099-12-31" for r in rows)
    keys = [r["key"] for r in rows]
    assert all(k.startswith("sk-") and len(k) == 51 for k in keys)
    sent = [e for e in sim.log if e["kind"] == "tokens"]
    assert len(sent) == 3
    for key in keys:
        with Client(sim.base_url, key) as client:
            assert client.balance().remaining_credits == 100
    assert "pupil_1: 100 credits left" in text_of(nb.cells[3])
    assert "exists already" in errors_of(nb.cells[4])[0].evalue
    text = as_text(nb)
    for key in keys:
        bare = key[3:]
        assert bare not in text
        for path in tmp_path.rglob("*"):
            if path.is_file() and path != out:
                assert bare.encode() not in path.read_bytes(), path.name


def test_a_students_key_running_out_ends_with_one_clear_line_and_one_submit(sim, tmp_path):
    with Client(sim.base_url, SECRET) as teacher:
        student = teacher.create_token("student_1", credits=100).key.reveal()
    cell = "%%kling --name second --wait\n---\nA second lantern"
    nb = run(
        notebook(FAST_CONFIG, "%%kling --name first --wait\n---\nA lantern", cell, cell),
        tmp_path,
        {"TOAPIS_BASE_URL": sim.base_url, "TOAPIS_API_KEY": student},
    )
    refusals = [e for e in sim.log if e["kind"] == "submit" and e["status"] == 402]
    assert sim.count("submit") == 1 and len(refusals) == 1  # the re-run did not send it again
    line = text_of(nb.cells[2])
    assert (
        "this key's quota is used up" in line
        and "40 credits left" in line
        and "It has 40 credits left" in line
        and "--force" in line
    )
    assert "nothing was billed" in line
    assert student[3:] not in as_text(nb)


def test_keyless_balance_is_the_simulators_and_says_so(tmp_path):
    nb = run(notebook(FAST_CONFIG, "%kling balance"), tmp_path, {"TOAPIS_API_KEY": "", "TOAPIS_BASE_URL": ""})
    assert "the simulator (simulated credits)" in text_of(nb.cells[1]) and "unlimited" in text_of(nb.cells[1])
