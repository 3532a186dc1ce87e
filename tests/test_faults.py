"""100 generations through a misbehaving network: every one ends completed or with a clear
final error, nothing is submitted twice, no finished video is lost, the caller never blocks."""

from __future__ import annotations

from collections import Counter

import pytest

from kling_nb import KlingError
from kling_nb.cell.spec import from_fields
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.session import Runtime
from kling_nb.sim import Faults, SimConfig, Simulator

KINDS = ("429", "500", "502", "503", "drop", "slow", "truncate", "drop_after_accept")


@pytest.mark.timeout(300)
def test_hundred_generations_with_a_fifth_of_requests_faulted(tmp_path):
    with Simulator(config=SimConfig(queue_s=0.2, run_s=1.0)) as sim:
        sim.set_faults(Faults(rate=0.2, kinds=KINDS, seed=20261124, retry_after=0.05, slow_s=3.0))
        runtime = Runtime(
            output_dir=tmp_path / "kling_outputs",
            base_url=sim.base_url,
            api_key="sk-faults",
            schedule=PollSchedule(0.2, 0.5, 0.1, max_s=1.0),
            workers=8,
            environ={},
            client_options={"read_timeout": 2.0, "backoff_base": 0.02, "backoff_cap": 0.2, "max_retries": 8},
        )
        try:
            gens = [runtime.run(from_fields(f"Fault test {i}", {})) for i in range(100)]
            # run() never waits on the network: it returned before any generation could finish
            assert sum(g.done for g in gens) < 100
            for g in gens:
                g.wait(240)
        finally:
            runtime.close()
        log = sim.log
        sent = sim.accepted_bodies()
    assert max(Counter(b["prompt"] for b in sent).values()) == 1  # no prompt billed twice

    faulted = [e for e in log if e["fault"]]
    assert len({e["fault"] for e in faulted}) >= 6, "the faults did not cover the kinds"

    completed = [g for g in gens if g.status == "completed" and g.video_path]
    failed = [g for g in gens if g.error]
    assert len(completed) + len(failed) == 100
    for g in failed:  # a clear, final, KlingError message: nothing vanished silently
        assert isinstance(g.error, KlingError) and g.error.message and g.done
    for g in completed:  # no finished video lost, none half-written
        assert g.video_path.stat().st_size > 1000 and g.video_path.read_bytes()[4:8] == b"ftyp"
    assert not list((tmp_path / "kling_outputs").glob("*.part"))

    accepted = [e for e in log if e.get("accepted")]
    # every accepted task is tracked by its generation, or that generation says its submit
    # "may have been accepted" (the reply was lost): nothing was billed behind the user's back
    tracked = [g for g in gens if g.task_id]
    unknown = [g for g in failed if "may have been accepted" in g.error.message]
    assert len(tracked) <= len(accepted) <= len(tracked) + len(unknown)
    assert len(completed) >= 60


def test_a_broken_journal_is_reported_on_the_generation_not_swallowed(tmp_path):
    with Simulator(config=SimConfig(queue_s=0.05, run_s=0.2)) as sim:
        runtime = Runtime(
            output_dir=tmp_path,
            base_url=sim.base_url,
            api_key="k",
            environ={},
            schedule=PollSchedule(0.05, 0.1, 0.05, max_s=0.2),
        )
        try:
            gen = runtime.run(from_fields("A kite", {}))

            def broken(*args, **kwargs):
                raise OSError("disk full")

            runtime.journal.record_status = broken
            gen.wait(30)
        finally:
            runtime.close()
    assert gen.error is not None and "disk full" in gen.error.message and "resume" in gen.error.message
