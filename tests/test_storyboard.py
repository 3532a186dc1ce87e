"""Storyboards: a shot continued from the last frame of another, references by name, a film
stitched from the shots, chains that run in the background and never bill twice."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import requests
from PIL import Image

from kling_nb import SpecError, parse, parse_batch
from kling_nb.engine.generation import State
from kling_nb.engine.schedule import PollSchedule
from kling_nb.engine.session import Runtime
from kling_nb.media import frames, stitch
from kling_nb.sim import SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, html_of, notebook, run, sim_env

FAST = PollSchedule(first_s=0.2, interval_s=0.2, min_s=0.1, max_s=0.5)


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.1, run_s=0.8)) as s:
        yield s


@pytest.fixture
def runtime(sim, tmp_path):
    rt = Runtime(output_dir=tmp_path / "kling_outputs", base_url=sim.base_url, api_key="sk-story", schedule=FAST)
    yield rt
    rt.close()


def chained_pair(rt):
    shot1 = rt.run(parse("A lantern is lit in a dark room", "--name shot1"), name="shot1")
    shot2 = rt.run(
        parse(
            "images: [{from: shot1, frame: last, type: first_frame}]\n---\n"
            "From <<<image_1>>> the lantern is carried down a staircase",
            "--name shot2",
        ),
        name="shot2",
    )
    return shot1, shot2


def test_a_continued_shot_starts_from_the_exact_last_frame_of_the_first(runtime, sim):
    shot1, shot2 = chained_pair(runtime)
    assert shot2.status == State.WAITING and shot2.snapshot().waiting_for == "shot1"
    assert shot2.wait(60).status == State.COMPLETED and shot1.status == State.COMPLETED
    # what was uploaded is, pixel for pixel, the real last frame of shot1's video
    url = sim.accepted_bodies()[1]["metadata"]["image_list"][0]["image_url"]
    uploaded = np.asarray(Image.open(io.BytesIO(requests.get(url, timeout=10).content)).convert("RGB"))
    last = np.asarray(frames.frame(shot1.video_path, "last"))
    assert uploaded.shape == last.shape and (uploaded == last).all()
    assert not (last == np.asarray(frames.frame(shot1.video_path, "first"))).all()  # the clip moves
    # ...and shot2's video opens on it (H.264 is lossy: close, not equal)
    first2 = np.asarray(frames.frame(shot2.video_path, "first"), dtype=int)
    assert np.abs(first2 - last.astype(int)).mean() < 4
    # shot2 was submitted only after shot1's video was on disk
    submits = [e for e in sim.log if e["kind"] == "submit" and e["status"] == 200]
    downloads = [e for e in sim.log if e["kind"] == "download"]
    assert len(submits) == 2 and submits[1]["t"] > downloads[0]["t"]


def test_a_failed_shot_fails_the_one_that_continues_it_and_sends_nothing_for_it(runtime, sim):
    shot1 = runtime.run(parse("sim:fail a lantern"), name="shot1")
    shot2 = runtime.run(parse("images: [{from: shot1, type: first_frame}]\n---\n<<<image_1>>> then"), name="shot2")
    assert shot2.wait(60).status == State.FAILED and shot1.status == State.FAILED
    assert "shot1" in shot2.error.message and "nothing was sent" in shot2.error.message
    assert sim.count("submit") == 1 and sim.count("upload") == 0


def test_a_finished_story_run_again_in_a_fresh_kernel_sends_and_uploads_nothing(sim, tmp_path, runtime):
    first = chained_pair(runtime)
    for g in first:
        g.wait(60)
    film = runtime.stitch(["shot1", "shot2"], name="film").wait(60)
    assert film.status == State.COMPLETED
    submits, uploads = sim.count("submit"), sim.count("upload")
    fresh = Runtime(output_dir=tmp_path / "kling_outputs", base_url=sim.base_url, api_key="sk-story", schedule=FAST)
    try:
        again = chained_pair(fresh)
        film2 = fresh.stitch(["shot1", "shot2"], name="film").wait(30)
        assert all(g.wait(30).origin == "reused" for g in again) and film2.origin == "reused"
        assert film2.video_path == film.video_path
    finally:
        fresh.close()
    assert (sim.count("submit"), sim.count("upload")) == (submits, uploads)


def test_references_are_checked_before_anything_is_sent(runtime, sim):
    with pytest.raises(SpecError, match="no generation named 'ghost'"):
        runtime.check_references(parse_batch("images: [{from: ghost}]\n---\n<<<image_1>>>").requests)
    with pytest.raises(SpecError, match="this very generation"):
        parse("images: [{from: me}]\n---\n<<<image_1>>>", "--name me")
    assert sim.count("submit") == 0


def test_a_reference_video_is_the_earlier_result_url(runtime, sim):
    shot1 = runtime.run(parse("A dancer"), name="dance").wait(60)
    mimic = runtime.run(
        parse("videos: [{from: dance, refer_type: feature}]\n---\nA robot copies <<<video_1>>>"), name="robot"
    ).wait(60)
    assert mimic.status == State.COMPLETED
    assert sim.accepted_bodies()[1]["video_list"][0]["video_url"] == shot1.url


def test_stitched_films_play_for_the_summed_length(tmp_path):
    from kling_nb.sim.video import render_mp4

    a = render_mp4(tmp_path / "a.mp4", "one", mode="std", duration=5, aspect_ratio="16:9")
    b = render_mp4(tmp_path / "b.mp4", "two", mode="std", duration=10, aspect_ratio="16:9")
    c = render_mp4(tmp_path / "c.mp4", "three", mode="pro", duration=5, aspect_ratio="9:16")
    same = stitch.stitch([a, b], tmp_path / "same.mp4")
    mixed = stitch.stitch([a, c], tmp_path / "mixed.mp4")
    for film, seconds in ((same, 15.0), (mixed, 10.0)):
        decoded = list(frames.frames(film))  # every frame decodes
        assert abs(len(decoded) / 12 - seconds) < 0.2 and abs(stitch.probe_duration(film) - seconds) < 0.2
    assert decoded[0].shape == np.asarray(frames.frame(a, "first")).shape  # re-encoded to the first's size
    assert not list(tmp_path.glob(".kling-*"))


def test_frames_are_data_for_analysis(runtime):
    gen = runtime.run(parse("A kite")).wait(60)
    assert gen.frame("last").size == gen.frame(0.5).size
    arrays = list(gen.frames())
    assert arrays[0].ndim == 3 and arrays[0].shape[2] == 3 and len(arrays) >= 12


def test_a_shots_cell_in_a_real_kernel_returns_at_once_and_ends_with_the_film(sim, tmp_path):
    cell = (
        "%%kling --name tale\nshots:\n  - A lantern is lit in a dark room\n"
        "  - The lantern is carried down a staircase\n  - {prompt: The lantern is set on a sill, duration: 10}\n"
        "---\nwarm cinematic light"
    )
    nb = run(
        notebook(
            FAST_CONFIG,
            "import time\nt0 = time.monotonic()",
            cell,
            "print('returned', round(time.monotonic() - t0, 2), tale.status)",
            "%kling wait",
            "print(tale.status, tale.video_path.name)",
        ),
        tmp_path,
        sim_env(sim),
        timeout=180,
    )
    returned = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert "returned" in returned and "completed" not in returned  # the cell did not wait for the film
    submits = [e for e in sim.log if e["kind"] == "submit" and e["status"] == 200]
    downloads = [e for e in sim.log if e["kind"] == "download"]
    assert len(submits) == 3 and sim.count("upload") == 2
    assert submits[1]["t"] > downloads[0]["t"] and submits[2]["t"] > submits[1]["t"]
    film_html = html_of(nb.cells[2])
    assert "-film-" in film_html
    film = next((tmp_path / "kling_outputs").glob("tale-film-*.mp4"))
    assert abs(stitch.probe_duration(film) - 20.0) < 0.5
    # run the notebook again: nothing is sent
    count = sim.count("submit")
    started = time.monotonic()
    run(notebook(FAST_CONFIG, cell, "%kling wait"), tmp_path, sim_env(sim))
    assert sim.count("submit") == count and sim.count("upload") == 2
    assert time.monotonic() - started < 60


def test_a_story_cut_off_by_a_dead_kernel_resumes_and_bills_each_shot_once(tmp_path):
    from .test_rerun import journal_has_task, start_and_kill

    shots = "shots:\n  - A lantern is lit\n  - The lantern goes down the stairs\n---\n"
    with Simulator(config=SimConfig(queue_s=0.2, run_s=3.0)) as slow:
        start_and_kill(
            tmp_path,
            sim_env(slow),
            FAST_CONFIG + f"\nget_ipython().run_cell_magic('kling', '--name tale', {shots!r})",
            # shot 1 is running (its task id recorded); shot 2 and the film wait on it
            lambda: journal_has_task(tmp_path),
        )
        nb = run(
            notebook(
                FAST_CONFIG,
                "%kling resume",
                "%kling wait",
                "print(sorted(g.name for g in "
                "get_ipython().find_magic('kling').__self__.runtime.generations if g.status == 'completed'))",
            ),
            tmp_path,
            sim_env(slow),
            timeout=180,
        )
        assert slow.count("submit") == 2  # shot 1 re-attached, shot 2 sent once, after it
    done = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert "'tale', 'tale_1', 'tale_2'" in done
    assert next((tmp_path / "kling_outputs").glob("tale-film-*.mp4")).stat().st_size > 1000
