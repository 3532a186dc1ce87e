"""Results that show wherever a notebook is opened: a still in every saved output, no path of
this machine, embedded videos where relative files cannot play (Colab, VS Code: emulated in
a real kernel), the key from Colab Secrets, and a grid without dead controls."""

from __future__ import annotations

import base64
import json
import re

import pytest

from kling_nb import parse
from kling_nb.engine.generation import Generation, Snapshot, State
from kling_nb.notebook import frontends, render
from kling_nb.sim import SimConfig, Simulator

from .kernel_harness import FAST_CONFIG, SECRET, notebook, run, sim_env

JPEG = b"\xff\xd8\xff"


@pytest.fixture
def sim():
    with Simulator(config=SimConfig(queue_s=0.1, run_s=1.0)) as s:
        yield s


def bundles(nb):
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if "data" in o:
                yield cell, o["data"]


def video_bundles(nb):
    return [d for _, d in bundles(nb) if "<video" in d.get("text/html", "")]


def test_every_saved_shape_carries_stills_and_no_path_of_this_machine(sim, tmp_path):
    nb = run(
        notebook(
            FAST_CONFIG,
            "%%kling --name one --wait\n---\nA lantern in a dark room",
            "%%kling --name pair --wait\nsweep:\n  duration: [5, 10]\n---\nA lantern on a stair",
            "%%kling --name broken --wait\n---\nsim:fail a lantern",
            "%kling compare one pair",
            "%kling history",
            "%kling show one",
            "%%kling --dry-run\nimages: [media/frame.png]\n---\nA <<<image_1>>> lantern",
        ),
        tmp_path,
        sim_env(sim),
        setup=_make_image,
    )
    found = video_bundles(nb)
    assert len(found) == 4  # single, grid, compare, show
    for data in found:
        html = data["text/html"]
        assert base64.b64decode(data["image/jpeg"]).startswith(JPEG)  # the image entry of static viewers
        stills = re.findall(r'poster="data:image/jpeg;base64,([^"]+)"', html)
        assert stills and all(base64.b64decode(s).startswith(JPEG) for s in stills)
        assert all(len(base64.b64decode(s)) <= 20_000 for s in stills)
        assert re.search(r'<img src="kling_outputs/[^"]+\.jpg"', html)  # where a sanitizer strips <video>
    grid = found[1]["text/html"]
    assert len(re.findall(r"<video ", grid)) == 2 and len(re.findall(r'poster="data:', grid)) == 2
    failure = [d for c, d in bundles(nb) if "broken" in c.source and "text/html" in d][0]
    assert 'class="kling-badge"' in failure["text/html"] and ">failed</span>" in failure["text/html"]
    saved = (tmp_path / "executed.ipynb").read_text()
    for private in (str(tmp_path), "/root", "/home/", "/tmp/"):
        assert private not in saved, private
    assert SECRET not in saved


def _make_image(folder):
    from PIL import Image

    (folder / "media").mkdir()
    Image.new("RGB", (320, 180), (200, 120, 40)).save(folder / "media" / "frame.png")


def test_ten_results_stay_under_300_kb(sim, tmp_path):
    cells = [FAST_CONFIG] + [f"%%kling --name r{i}\n---\nA lantern, take {i}" for i in range(10)] + ["%kling wait"]
    nb = run(notebook(*cells), tmp_path, sim_env(sim))
    assert len(video_bundles(nb)) == 10
    size = (tmp_path / "executed.ipynb").stat().st_size
    assert size < 300_000, size


# -- Colab and VS Code, emulated in a real kernel ------------------------------------------------
COLAB_STANDIN = '''\
"""A stand-in for Colab's package: Secrets hold the key, as in Colab's sidebar."""
'''
USERDATA = """\
import os


class SecretNotFoundError(Exception):
    pass


def get(name):
    if name != "TOAPIS_API_KEY":
        raise SecretNotFoundError(name)
    return os.environ["STANDIN_COLAB_SECRET"]
"""


def colab_site(tmp_path):
    site = tmp_path / "site"
    (site / "google" / "colab").mkdir(parents=True)
    (site / "google" / "__init__.py").write_text("")
    (site / "google" / "colab" / "__init__.py").write_text(COLAB_STANDIN)
    (site / "google" / "colab" / "userdata.py").write_text(USERDATA)
    return site


def colab_env(sim, tmp_path):
    # No TOAPIS_API_KEY: the key must come from the stand-in's Secrets, and the simulator
    # accepts only that key (so a completed generation proves it was found).
    return {
        "TOAPIS_BASE_URL": sim.base_url,
        "TOAPIS_API_KEY": "",
        "PYTHONPATH": str(colab_site(tmp_path)),
        "STANDIN_COLAB_SECRET": SECRET,
    }


@pytest.fixture
def keyed_sim():
    with Simulator(key=SECRET, config=SimConfig(queue_s=0.1, run_s=1.0)) as s:
        yield s


def test_colab_finds_the_key_in_secrets_and_embeds_the_video(keyed_sim, tmp_path):
    nb = run(
        notebook(
            "import google.colab  # Colab imports it before any cell runs",
            FAST_CONFIG,
            "%%kling --name lit --wait\n---\nA lantern is lit",
        ),
        tmp_path,
        colab_env(keyed_sim, tmp_path),
    )
    [data] = video_bundles(nb)
    assert keyed_sim.count("submit") == 1
    assert re.search(r'<video src="data:video/mp4;base64,', data["text/html"])
    src = re.search(r'<video src="data:video/mp4;base64,([^"]+)"', data["text/html"]).group(1)
    assert base64.b64decode(src)[4:8] == b"ftyp"
    assert SECRET not in json.dumps(nb)


def test_colab_above_the_cap_keeps_the_still_and_says_why(keyed_sim, tmp_path):
    nb = run(
        notebook(
            "import google.colab",
            FAST_CONFIG + "\n%config KlingMagics.embed_max_mb = 0.001",
            "%%kling --name lit --wait\n---\nA lantern is lit",
        ),
        tmp_path,
        colab_env(keyed_sim, tmp_path),
    )
    [data] = video_bundles(nb)
    assert '<video src="kling_outputs/' in data["text/html"] and "over the 1,048 bytes cap" in data["text/html"]
    assert base64.b64decode(data["image/jpeg"]).startswith(JPEG)


def test_vscode_gets_an_embedded_video(sim, tmp_path):
    env = {**sim_env(sim), "VSCODE_PID": "4242"}
    nb = run(notebook(FAST_CONFIG, "%%kling --name lit --wait\n---\nA lantern is lit"), tmp_path, env)
    [data] = video_bundles(nb)
    assert data["text/html"].count("data:video/mp4;base64,") == 1


def test_detection_needs_the_frontend_itself():
    assert frontends.frontend({}, {}) == "jupyter"
    assert frontends.frontend({"VSCODE_PID": "1"}, {}) == "vscode"
    assert frontends.frontend({}, {"google.colab": object()}) == "colab"
    assert frontends.frontend({"VOILA_KERNEL_ID": "k"}, {}) == "voila"
    assert frontends.frontend({"SERVER_SOFTWARE": "voila/0.5.13"}, {}) == "voila"
    assert frontends.frontend({"VSCODE_PID": ""}, {"google": object()}) == "jupyter"
    assert frontends.should_embed("auto", "vscode") and not frontends.should_embed("auto", "jupyter")
    assert frontends.should_embed("always", "jupyter") and not frontends.should_embed("never", "colab")


# -- the grid's HTML --------------------------------------------------------------------------------
def snap(**kw):
    base = dict(status=State.COMPLETED, body={"prompt": "p", "mode": "pro"}, elapsed_s=1.0)
    return Snapshot(**{**base, **kw})


def test_grid_controls_are_built_by_its_script_so_none_are_dead_without_it():
    media = render.Media(src="kling_outputs/a.mp4", still="AAAA", still_src="kling_outputs/a.jpg")
    html = render.grid_html([(snap(label={"mode": "pro"}), media), (snap(label={"mode": "std"}), media)], title="t")
    static = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert "<button" not in static and "<input" not in static and " hidden" not in static
    assert static.index("kling-grid-tiles") > static.index(">t</div>")  # the title sits above the tiles


def test_badges_never_wrap_and_colours_follow_the_theme():
    s = snap(status=State.IN_PROGRESS, progress=40)
    card = render.live_card_html(s)
    assert "white-space:nowrap" in render.badge_html("in_progress")
    assert "var(--jp-ui-font-color2" in card
    caption = render.video_html(s, render.Media(src="x.mp4"))
    assert "var(--jp-ui-font-color1" in caption


def test_a_generation_as_a_cell_value_shows_its_card():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "kling_nb")
        gen = Generation(parse("A kite"), name="kite")
        data, _ = ip.display_formatter.format(gen)
        assert "kite" in data["text/plain"] and 'class="kling-pending"' in data["text/html"]
    finally:
        ip.run_line_magic("unload_ext", "kling_nb")
        InteractiveShell.clear_instance()


# -- sharing in one file -------------------------------------------------------------------------
def test_export_writes_a_page_and_embed_makes_it_self_contained(sim, tmp_path):
    from kling_nb.__main__ import main

    run(notebook(FAST_CONFIG, "%%kling --name lit --wait\n---\nA lantern is lit"), tmp_path, sim_env(sim))
    nb = tmp_path / "executed.ipynb"
    assert main(["export", str(nb)]) == 0
    page = (tmp_path / "executed.html").read_text()
    assert re.search(r'<video [^>]*src="kling_outputs/[^"]+\.mp4"', page) and "data:video/mp4" not in page
    assert main(["export", str(nb), "--embed", "--out", str(tmp_path / "one.html")]) == 0
    page = (tmp_path / "one.html").read_text()
    assert re.search(r'<video [^>]*src="data:video/mp4;base64,', page) and 'src="kling_outputs/' not in page
    assert re.search(r'<video [^>]*poster="data:image/jpeg;base64,', page)
    assert 'src="kling_outputs/' not in page.split("<body")[1]


def test_export_never_reads_outside_the_notebook_folder(tmp_path):
    import nbformat

    from kling_nb.notebook.export import export

    outside = tmp_path / "private.mp4"
    outside.write_bytes(b"\0\0\0\x18ftypisom PRIVATE")
    folder = tmp_path / "received"
    folder.mkdir()
    (folder / "link.mp4").symlink_to(outside)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    html = (
        f'<video src="../private.mp4"></video><video src="{outside}"></video><video src="link.mp4"></video>'
        '<video src="%2E%2E/private.mp4"></video>'
    )
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": html})]
    nb.cells.append(cell)
    nbformat.write(nb, folder / "hostile.ipynb")
    result = export(folder / "hostile.ipynb", embed=True)
    assert result.embedded == {}
    assert (
        "PRIVATE" not in result.path.read_text()
        and base64.b64encode(b"PRIVATE").decode() not in result.path.read_text()
    )
