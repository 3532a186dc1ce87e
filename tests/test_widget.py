"""Without a browser: the live widget through a recording comm, and the magics in a headless
IPython shell (the terminal frontend: no kernel, so plain status lines)."""

from __future__ import annotations

import re
from pathlib import Path

import comm
import pytest
from IPython.core.interactiveshell import InteractiveShell

from kling_nb import parse
from kling_nb.engine.generation import Generation, State
from kling_nb.service.status import TaskStatus
from kling_nb.sim import SimConfig, Simulator


class RecordingComm:
    """Stands in for the kernel's comm: keeps every message a widget sends."""

    sent: list[dict] = []

    def __init__(self, *args, **kwargs):
        self.comm_id = f"comm-{len(RecordingComm.sent)}-{id(self)}"
        self.kernel = "fake"
        RecordingComm.sent.append({"open": kwargs.get("data", {}).get("state", {})})

    def open(self, *args, **kwargs):
        pass

    def on_msg(self, *args, **kwargs):
        pass

    def send(self, data=None, metadata=None, buffers=None):
        RecordingComm.sent.append(data or {})

    def close(self, *args, **kwargs):
        pass


@pytest.fixture
def recording(monkeypatch):
    import ipywidgets

    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield RecordingComm.sent
    ipywidgets.Widget.close_all()  # while the fake comm is in place, not at interpreter exit


def card_updates(sent):
    """The card HTML of every update a view sent."""
    return [
        m["state"]["outputs"][0]["data"]["text/html"]
        for m in sent
        if m.get("method") == "update" and m.get("state", {}).get("outputs")
    ]


def make_gen(prompt="A kite <script>alert(1)</script>"):
    return Generation(parse(f"mode: pro\n---\n{prompt}"), name="kite")


def test_card_shows_prompt_escaped_and_params(recording):
    from kling_nb.notebook.widget import GenerationView

    view = GenerationView(make_gen())
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in view.card_html
    assert "<script>" not in view.card_html
    assert "1080P 5s" in view.card_html and "waiting" in view.card_html


def test_updates_are_coalesced_but_the_final_state_always_arrives(recording, monkeypatch):
    from kling_nb.notebook import widget

    gen = make_gen("A kite")
    view = widget.GenerationView(gen)
    clock = [1000.0]
    monkeypatch.setattr(widget.time, "monotonic", lambda: clock[0])
    view._last_sent = clock[0]
    before = len(card_updates(recording))
    for p in range(1, 100):  # 99 progress updates within 10 ms of each other
        clock[0] += 0.0001
        gen._transition(State.IN_PROGRESS, progress=p, task_id="video_1")
    assert len(card_updates(recording)) - before == 0
    gen._transition(State.FAILED, error=__import__("kling_nb").GenerationFailed("flagged", code="policy"))
    last = card_updates(recording)[-1]
    assert 'data-status="failed"' in last and "policy: flagged" in last


def test_progress_reaches_the_widget(recording, monkeypatch):
    from kling_nb.notebook import widget

    gen = make_gen("A kite")
    widget.GenerationView(gen)
    monkeypatch.setattr(widget, "MIN_REFRESH_S", 0)
    for p in (10, 50, 90):
        gen._transition(State.IN_PROGRESS, progress=p)
    values = [u for u in card_updates(recording) if 'value="' in u]
    assert any('value="50"' in v for v in values) and any('value="90"' in v for v in values)


def test_completed_view_holds_a_relative_video(recording, tmp_path, monkeypatch):
    from kling_nb.notebook.widget import GenerationView

    monkeypatch.chdir(tmp_path)
    (tmp_path / "kling_outputs").mkdir()
    video = tmp_path / "kling_outputs" / "kite-1.mp4"
    video.write_bytes(b"\0\0\0\x18ftypisom")
    gen = make_gen("A kite")
    view = GenerationView(gen)
    gen._transition(State.COMPLETED, progress=100, video_path=video)
    assert '<video src="kling_outputs/kite-1.mp4"' in view.card_html
    assert '<video src="kling_outputs/kite-1.mp4"' in card_updates(recording)[-1]  # the frontend got the video
    sent = len(recording)
    view.retire()
    assert view.out.outputs == ()
    assert [list(m["state"]["outputs"]) for m in recording[sent:] if m.get("method") == "update"] == [[]]


def test_status_from_the_service_is_plain_data():
    s = TaskStatus.from_json({"id": "video_1", "status": "submitted", "progress": 3, "extra": {"x": 1}})
    assert s.status == "submitted" and not s.is_final


# -- the magics in a headless shell (no kernel: terminal behaviour) ---------------------------
@pytest.fixture
def shell(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with Simulator(config=SimConfig(queue_s=0.05, run_s=0.3)) as sim:
        monkeypatch.setenv("TOAPIS_BASE_URL", sim.base_url)
        monkeypatch.setenv("TOAPIS_API_KEY", "sk-shell-SECRET")
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "kling_nb")
        ip.run_line_magic("config", "KlingMagics.poll_first_s = 0.1")
        ip.run_line_magic("config", "KlingMagics.poll_interval_s = 0.2")
        ip.run_line_magic("config", "KlingMagics.poll_min_s = 0.05")
        yield ip, sim
        ip.run_line_magic("unload_ext", "kling_nb")
        InteractiveShell.clear_instance()


def test_dry_run_sends_nothing(shell, capsys):
    ip, sim = shell
    ip.run_cell_magic("kling", "--dry-run", "mode: pro\nduration: 10\n---\nA kite")
    out = capsys.readouterr().out
    assert "Billed as: 1080P 10s" in out and '"mode": "pro"' in out and "$TOAPIS_API_KEY" in out
    assert "sk-shell-SECRET" not in out and sim.count("submit") == 0


def test_terminal_gets_status_lines_and_the_object(shell, capsys):
    ip, sim = shell
    ip.run_cell("%%kling --name kite --wait\n---\nA kite")
    out = capsys.readouterr().out
    kite = ip.user_ns["kite"]
    assert kite.status == "completed" and kite.video_path.exists()
    lines = out.splitlines()
    assert len(lines) == 2, out  # one line when the cell starts, one when the generation is done
    assert re.fullmatch(r"… kite: \w+ \d+% \([^)]*\)( task video_\w+)?", lines[0]), lines[0]
    assert lines[1].startswith("✓ kite: completed in ")
    assert lines[1].endswith(f", video: kling_outputs/{kite.video_path.name} task {kite.task_id}"), lines[1]
    assert repr(kite).startswith(f"<Generation 'kite', status='completed', progress=100, task_id='{kite.task_id}'")
    ip.run_line_magic("kling", "list")
    assert capsys.readouterr().out.splitlines() == [lines[1]]


def test_errors_are_one_short_line(shell, capsys):
    ip, sim = shell
    result = ip.run_cell("%%kling\nmode: ultra\n---\nA kite")
    assert not result.success
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "SpecError: `mode` at line 1" in text and "Traceback" not in text
    assert sim.count("submit") == 0


def test_config_traits(shell):
    ip, _ = shell
    ip.run_line_magic("config", "KlingMagics.output_dir = 'renders'")
    magics = [c for c in ip.configurables if type(c).__name__ == "KlingMagics"][0]
    assert magics.output_dir == "renders"
    assert magics.runtime.output_dir == (Path.cwd() / "renders").resolve()  # relative to the notebook's folder


def test_history_show_and_generate_from_python(shell, capsys):
    ip, sim = shell
    import kling_nb

    gen = kling_nb.generate("A kite from Python", mode="pro", name="py")
    assert gen.wait(30).status == "completed" and gen.body["mode"] == "pro"
    ip.run_line_magic("kling", "history")
    capsys.readouterr()
    ip.run_line_magic("kling", "show 1")
    out = capsys.readouterr().out
    assert "✓ py: completed" in out and "nothing sent" in out
    assert sim.count("submit") == 1
    assert not ip.run_cell("%kling show 99").success


def test_login_reads_the_key_without_echo(shell, monkeypatch, capsys):
    ip, sim = shell
    import getpass

    monkeypatch.setattr(getpass, "getpass", lambda prompt="": "sk-typed-SECRET")
    ip.run_line_magic("kling", "login")
    out = capsys.readouterr().out
    assert "key set" in out and "sk-typed-SECRET" not in out
    magics = [c for c in ip.configurables if type(c).__name__ == "KlingMagics"][0]
    assert "sk-typed-SECRET" not in repr(magics.runtime) and "sk-typed-SECRET" not in repr(
        magics.runtime.backend.client
    )


def test_grid_tiles_show_the_labels_they_are_given(recording):
    from kling_nb.notebook.widget import GridView

    gens = [make_gen("A calm sea"), make_gen("A rough sea")]
    grid = GridView(gens, title="compare", labels=[{"name": "calm"}, {"name": "rough"}])
    assert "name=calm" in grid.tiles[0].card_html and "name=rough" in grid.tiles[1].card_html
    assert gens[0].label == {}  # the generations' own labels are untouched
