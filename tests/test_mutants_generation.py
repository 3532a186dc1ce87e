"""The Generation a user holds, at its edges (gaps found by mutation testing, `make mutate`): its
repr, the combined wait of a sweep, and asking for frames of a video that is not there."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from kling_nb import parse
from kling_nb.engine.generation import Generation, Generations, State
from kling_nb.errors import DeadlineError, KlingError
from kling_nb.sim.video import render_mp4


def test_the_repr_says_name_status_progress_task_and_video():
    gen = Generation(parse("A kite"), name="kite")
    assert repr(gen) == "<Generation 'kite', status='waiting', progress=0, task_id=None>"
    gen._transition(State.IN_PROGRESS, progress=40, task_id="video_1")
    gen._transition(State.DOWNLOADING, progress=100)
    gen._transition(State.COMPLETED, video_path=Path("/out/kite-video_1.mp4"))
    assert repr(gen) == (
        "<Generation 'kite', status='completed', progress=100, task_id='video_1', video='kite-video_1.mp4'>"
    )
    assert repr(Generation(parse("A kite"))) == "<Generation status='waiting', progress=0, task_id=None>"


def test_frames_of_a_generation_without_a_video_say_which_and_why():
    gen = Generation(parse("A kite"), name="kite")
    with pytest.raises(KlingError) as err:
        gen.frame()
    assert err.value.message == "kite has no saved video (waiting)"
    with pytest.raises(KlingError) as err:
        Generation(parse("A kite")).frames()
    assert err.value.message == "this generation has no saved video (waiting)"


def test_the_last_frame_is_the_default(tmp_path):
    path = render_mp4(tmp_path / "v.mp4", "a kite", mode="std", duration=5, aspect_ratio="16:9")
    gen = Generation(parse("A kite"))
    gen._transition(State.DOWNLOADING, progress=100)
    gen._transition(State.COMPLETED, video_path=path)
    assert (np.asarray(gen.frame()) == np.asarray(gen.frame("last"))).all()
    assert (np.asarray(gen.frame()) != np.asarray(gen.frame("first"))).any()


def test_a_sweep_waits_for_all_and_its_timeout_covers_them_all():
    gens = Generations([Generation(parse(f"shot {i}")) for i in range(3)])
    assert not gens.done
    for gen in gens:
        gen._transition(State.FAILED)
    assert gens.wait(1) is gens and gens.done and gens.wait() is gens
    finished = Generation(parse("a"))
    finished._transition(State.FAILED)
    slow = Generations([finished, Generation(parse("b"))])
    started = time.monotonic()
    with pytest.raises(DeadlineError):
        slow.wait(0.5)
    assert 0.4 <= time.monotonic() - started < 0.9  # one budget for the whole sweep


def test_the_services_words_map_to_states():
    from kling_nb.engine.generation import state_for_service

    assert state_for_service("in_progress") == State.IN_PROGRESS
    assert state_for_service("completed") == State.DOWNLOADING  # the video still has to be saved
    assert state_for_service("failed") == State.FAILED
    assert state_for_service("submitted") == state_for_service("something new") == State.QUEUED


def test_elapsed_time_stops_when_the_generation_ends():
    now = [100.0]
    gen = Generation(parse("A kite"), clock=lambda: now[0])
    now[0] = 103.5
    assert gen.snapshot().elapsed_s == 3.5
    gen._transition(State.FAILED)
    now[0] = 200.0
    assert gen.snapshot().elapsed_s == 3.5 and gen.elapsed == 3.5


def test_listeners_get_the_elapsed_time_of_each_step():
    now = [10.0]
    gen = Generation(parse("A kite"), clock=lambda: now[0])
    seen = []
    gen.add_listener(seen.append)
    now[0] = 12.5
    gen._transition(State.SUBMITTING)
    now[0] = 14.0
    gen._transition(State.FAILED)
    assert [s.elapsed_s for s in seen] == [2.5, 4.0]


def test_an_illegal_transition_names_both_states():
    from kling_nb.engine.generation import IllegalTransition

    gen = Generation(parse("A kite"))
    gen._transition(State.SUBMITTING)
    with pytest.raises(IllegalTransition) as err:
        gen._transition(State.UPLOADING)
    assert err.value.message == "a generation cannot go from submitting to uploading"


def test_a_wait_that_runs_out_says_the_generation_goes_on():
    with pytest.raises(DeadlineError) as err:
        Generation(parse("A kite")).wait(0.01)
    assert err.value.message == (
        "stopped waiting after 0.01 s; the generation goes on (wait again, or `%kling resume` after a restart)"
    )


def test_a_new_generation_already_shows_what_will_be_asked():
    gen = Generation(parse("mode: pro\n---\nA kite"))
    assert gen.body == {"model": "kling-video-o1", "prompt": "A kite", "mode": "pro"} and gen.prompt == "A kite"


def test_a_broken_listener_is_logged_and_the_generation_goes_on(caplog):
    import logging

    gen = Generation(parse("A kite"))

    def broken(snapshot):
        raise RuntimeError("a view broke")

    gen.add_listener(broken)
    with caplog.at_level(logging.ERROR, logger="kling_nb.generation"):
        gen._transition(State.FAILED)
    assert gen.done and gen.wait(1) is gen
    assert "a kling_nb listener failed" in caplog.messages
