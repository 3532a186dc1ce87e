"""The cell language: every seed example round-trips, every rule holds both ways, and no
text at all makes the parser raise anything but a KlingError."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kling_nb import KlingError, SpecError, parse, parse_batch
from kling_nb.cell.spec import from_fields

# The five examples of the vendor's page (docs/api-contract.md, "The vendor's page"), verbatim.
SEED = {
    "text-to-video": {
        "model": "kling-video-o1",
        "prompt": "Golden hour city skyline, cinematic lens quality",
        "mode": "std",
        "duration": 5,
        "aspect_ratio": "16:9",
    },
    "image-reference": {
        "model": "kling-video-o1",
        "prompt": "Make the person in <<<image_1>>> wave at the camera",
        "mode": "pro",
        "duration": 5,
        "metadata": {"image_list": [{"image_url": "https://example.com/portrait.jpg"}]},
    },
    "first-and-end-frame": {
        "model": "kling-video-o1",
        "prompt": "Transition from <<<image_1>>> to <<<image_2>>>",
        "mode": "pro",
        "duration": 5,
        "metadata": {
            "image_list": [
                {"image_url": "https://example.com/start.jpg", "type": "first_frame"},
                {"image_url": "https://example.com/end.jpg", "type": "end_frame"},
            ]
        },
    },
    "reference-video": {
        "model": "kling-video-o1",
        "prompt": "Transform <<<video_1>>> into a moonlit cyberpunk street",
        "mode": "std",
        "video_list": [
            {"video_url": "https://example.com/source-video.mp4", "refer_type": "base", "keep_original_sound": "no"}
        ],
    },
    "subject-plus-motion": {
        "model": "kling-video-o1",
        "prompt": "Make <<<element_1>>> imitate the motion from <<<video_1>>>",
        "mode": "pro",
        "video_list": [
            {
                "video_url": "https://example.com/motion-reference.mp4",
                "refer_type": "feature",
                "keep_original_sound": "no",
            }
        ],
        "metadata": {
            "element_list": [{"url": "https://example.com/character.jpg", "type": "image", "role": "subject"}]
        },
    },
}

# The same requests as a person writes them: YAML header, shorthands, prompt after ---.
SEED_AS_PEOPLE_WRITE = {
    "text-to-video": "mode: std\nduration: 5\naspect_ratio: 16:9\n---\n"
    "Golden hour city skyline, cinematic lens quality",
    "image-reference": "mode: pro\nduration: 5\nimages:\n  - https://example.com/portrait.jpg\n---\n"
    "Make the person in <<<image_1>>> wave at the camera",
    "first-and-end-frame": "mode: pro\nduration: 5\nimages:\n"
    "  - {url: https://example.com/start.jpg, type: first_frame}\n"
    "  - {url: https://example.com/end.jpg, type: end_frame}\n---\n"
    "Transition from <<<image_1>>> to <<<image_2>>>",
    "reference-video": "mode: std\nvideos:\n  - url: https://example.com/source-video.mp4\n    refer_type: base\n"
    "    keep_original_sound: no\n---\nTransform <<<video_1>>> into a moonlit cyberpunk street",
    "subject-plus-motion": "mode: pro\nvideos:\n  - url: https://example.com/motion-reference.mp4\n"
    "    refer_type: feature\n    keep_original_sound: false\nelements:\n"
    "  - url: https://example.com/character.jpg\n    role: subject\n---\n"
    "Make <<<element_1>>> imitate the motion from <<<video_1>>>",
}


@pytest.mark.parametrize("name", SEED, ids=list(SEED))
def test_seed_body_pasted_as_json_header_round_trips(name):
    assert parse(json.dumps(SEED[name], indent=2) + "\n---\n").body == SEED[name]


@pytest.mark.parametrize("name", SEED, ids=list(SEED))
def test_seed_body_pasted_as_front_matter_with_prompt_after(name):
    body = dict(SEED[name])
    prompt = body.pop("prompt")
    assert parse("---\n" + json.dumps(body) + "\n---\n" + prompt).body == SEED[name]


@pytest.mark.parametrize("name", SEED_AS_PEOPLE_WRITE, ids=list(SEED_AS_PEOPLE_WRITE))
def test_seed_request_written_as_yaml_with_shorthands(name):
    assert parse(SEED_AS_PEOPLE_WRITE[name]).body == SEED[name]


# -- the format ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell, prompt",
    [
        ("A cat", "A cat"),
        ("\n\n  A cat\n  on a mat\n\n", "  A cat\n  on a mat"),
        ("mode: pro\n---\n\nA cat\n\n", "A cat"),
        ("---\nA cat", "A cat"),
        ("---\nmode: pro\n---\nA cat", "A cat"),
        ("prompt: A cat\nmode: pro\n---\n", "A cat"),
        ("A kite: it flies\nmode of travel: air", "A kite: it flies\nmode of travel: air"),  # a colon is fine
    ],
    ids=[
        "all-prompt",
        "outer-blank-lines-trimmed",
        "header-then-prompt",
        "leading-dashes",
        "front-matter",
        "prompt-in-header",
        "no-dashes-prompt-with-colons",
    ],
)
def test_cell_shapes(cell, prompt):
    assert parse(cell).body["prompt"] == prompt


@pytest.mark.parametrize(
    "cell", ["mode: pro\nduration: 10\nA kite", "\n  duration: 10\nA kite", "sweep:\n  mode: [std, pro]"]
)
def test_a_header_without_its_dashes_is_refused_before_anything_is_sent(cell):
    with pytest.raises(SpecError, match="forget the `---` line") as err:
        parse_batch(cell)
    assert err.value.field == "header"


def test_a_json_body_pasted_from_the_docs_is_the_header():
    body = {"model": "kling-video-o1", "prompt": "Golden hour city skyline", "mode": "pro", "duration": 10}
    assert parse(json.dumps(body, indent=2)).body == body


@pytest.mark.parametrize(
    "cell, field, words",
    [
        ("metadata: {x: .inf}\n---\nA kite", "metadata.x", "finite"),
        ("metadata:\n  x: .nan\n---\nA kite", "metadata.x", "finite"),
        ("A kite {broken}", "prompt", "surrogate"),
        ("images: ['{broken}.png']\n---\nA <<<image_1>>>", "images.0", "surrogate"),
        ("metadata: {note: '{nul}'}\n---\nA kite", "metadata.note", "NUL"),
    ],
)
def test_values_json_or_the_file_system_cannot_carry_are_refused(cell, field, words):
    with pytest.raises(SpecError, match=words) as err:
        parse(cell, namespace={"broken": "x\udc80y", "nul": "a\x00b"})
    assert err.value.field == field


def test_placeholders_out_of_order_are_an_error_with_the_fix():
    cell = "images: [https://a.example/1.png, https://a.example/2.png]\n---\nFrom <<<image_2>>>\nto <<<image_1>>>"
    with pytest.raises(SpecError, match=r"renumber them \[1, 2\]") as err:
        parse(cell)
    assert err.value.line == 3


def test_audio_with_an_empty_video_list_sends_no_video_list():
    request = parse("audio: true\nvideo_list: []\n---\nA kite")
    assert "video_list" not in request.body and request.body["audio"] is True
    assert any("empty video list" in w for w in request.warnings)


def test_duplicate_variants_are_refused():
    with pytest.raises(SpecError, match="same request"):
        parse_batch("sweep:\n  mode: [pro, pro]\n---\nA kite")


def test_prompt_twice_is_an_error():
    with pytest.raises(SpecError, match="given twice"):
        parse("prompt: A\n---\nB")


@pytest.mark.parametrize(
    "header, field, value",
    [
        ("aspect_ratio: 16:9", "aspect_ratio", "16:9"),  # YAML 1.1 would read 969
        ("aspect_ratio: 1:1", "aspect_ratio", "1:1"),
        ("aspect_ratio: 9:16", "aspect_ratio", "9:16"),
        ("audio: yes", "audio", True),
        ("audio: off", "audio", False),
        ("audio: true", "audio", True),
        ("duration: '10'", "duration", 10),
        ("duration: 10", "duration", 10),
        ("mode: pro", "mode", "pro"),
    ],
)
def test_yaml_means_what_people_typed(header, field, value):
    assert parse(f"{header}\n---\nA kite").body[field] == value


@pytest.mark.parametrize("typed, sent", [("no", "no"), ("yes", "yes"), ("false", "no"), ("true", "yes"), ("off", "no")])
def test_keep_original_sound_booleans_become_words(typed, sent):
    cell = f"videos:\n  - url: https://a.example/v.mp4\n    keep_original_sound: {typed}\n---\n<<<video_1>>> at night"
    assert parse(cell).body["video_list"][0]["keep_original_sound"] == sent


def test_metadata_other_keys_pass_through():
    body = parse("metadata:\n  seed: 7\n  note: x\n---\nA kite").body
    assert body["metadata"] == {"seed": 7, "note": "x"}


# -- validation, both ways ------------------------------------------------------------------
REFUSED = [
    ("model: kling-v2\n---\nA kite", "model", 1),
    ("mode: ultra\n---\nA kite", "mode", 1),
    ("duration: 7\n---\nA kite", "duration", 1),
    ("duration: true\n---\nA kite", "duration", 1),
    ("audio: maybe\n---\nA kite", "audio", 1),
    ("aspect_ratio: wide\n---\nA kite", "aspect_ratio", 1),
    ("mode: std\n---\n   \n", "prompt", None),
    ("\n\n", "prompt", None),
    ("audio: true\nvideos: [https://a.example/v.mp4]\n---\n<<<video_1>>>", "audio", 1),
    ("---\n<<<image_1>>> waves", "prompt", 2),
    ("images: [https://a.example/i.png]\n---\n\nA kite\n<<<image_2>>> waves", "prompt", 5),
    ("images: [https://a.example/i.png]\n---\n<<<image_0>>> waves", "prompt", 3),
    ("---\n<<<picture_1>>> waves", "prompt", 2),
    ("---\nmode: pro\n---\n<<<image_one>>> waves", "prompt", 4),
    ("images: [data:image/png;base64,iVBORw0KGgo=]\n---\n<<<image_1>>>", "images[0]", 1),
    ("images: [ftp://a.example/i.png]\n---\n<<<image_1>>>", "images[0]", 1),
    ("images:\n  - {url: https://a.example/i.png, type: middle_frame}\n---\n<<<image_1>>>", "images[0].type", 2),
    ("videos:\n  - {url: https://a.example/v.mp4, refer_type: style}\n---\n<<<video_1>>>", "videos[0].refer_type", 2),
    (
        "videos:\n  - {url: https://a.example/v.mp4, keep_original_sound: maybe}\n---\n<<<video_1>>>",
        "videos[0].keep_original_sound",
        2,
    ),
    (
        "images: [https://a.example/i.png]\nmetadata:\n  image_list: [{image_url: https://a.example/i.png}]\n---\n"
        "<<<image_1>>>",
        "images",
        1,
    ),
    (
        "videos: [https://a.example/v.mp4]\nvideo_list: [{video_url: https://a.example/v.mp4}]\n---\n<<<video_1>>>",
        "videos",
        1,
    ),
    ("mode: pro\nduraton: 5\n---\nA kite", "header", 2),
    ("images:\n  - {urll: https://a.example/i.png}\n---\n<<<image_1>>>", "images[0]", 2),
    ("- mode\n- pro\n---\nA kite", "header", 1),
    ("mode: pro\nmode: std\n---\nA kite", "mode", 2),
    ("a: &x [1]\nb: *x\n---\nA kite", "header", 1),
    ("m: !!python/object/apply:os.system [ls]\n---\nA kite", "header", 1),
    ("mode: [unclosed\n---\nA kite", "header", None),
    ("videos: [clip.mp4]\n---\n<<<video_1>>>", "videos[0]", 1),
]


@pytest.mark.parametrize(
    "cell, field, line", REFUSED, ids=[f"{i:02d}-{c.splitlines()[0][:30]}" for i, (c, _, _) in enumerate(REFUSED)]
)
def test_mistakes_are_refused_naming_field_and_line(cell, field, line):
    with pytest.raises(SpecError) as err:
        parse(cell)
    assert err.value.field == field
    if line is not None:
        assert err.value.line == line
    assert "Traceback" not in err.value.message and len(err.value.message) < 400


def test_did_you_mean():
    with pytest.raises(SpecError, match="did you mean `duration`"):
        parse("duraton: 5\n---\nA kite")


@pytest.mark.parametrize(
    "cell, warning",
    [
        ("aspect_ratio: 4:3\n---\nA kite", "not one of the common values"),
        ("images: [https://a.example/1.png, https://a.example/2.png]\n---\n<<<image_1>>> only", "not referred"),
    ],
    ids=["uncommon-ratio", "unused-item"],
)
def test_warnings_do_not_stop_the_cell(cell, warning):
    request = parse(cell)
    assert any(warning in w for w in request.warnings)


def test_clean_request_has_no_warnings():
    assert parse(SEED_AS_PEOPLE_WRITE["first-and-end-frame"]).warnings == ()


# -- magic line ---------------------------------------------------------------------------
def test_line_options():
    opts = parse("A kite", "--name kite --wait --force --dry-run --yes").options
    assert (opts.name, opts.wait, opts.force, opts.dry_run, opts.yes) == ("kite", True, True, True, True)


@pytest.mark.parametrize("line", ["--name 9lives", "--name", "--colour red", "--wait extra", "--name 'a"])
def test_bad_line_options(line):
    with pytest.raises(SpecError) as err:
        parse("A kite", line)
    assert err.value.field == "magic line"


# -- interpolation ------------------------------------------------------------------------
class Scene:
    place = "harbour"


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("---\nA {animal} at dusk", "A fox at dusk"),
        ("---\nA fox in the {scene.place}", "A fox in the harbour"),
        ("---\nA fox, {speed:.1f}x speed", "A fox, 1.5x speed"),
        ("---\nLiteral {{braces}} stay", "Literal {braces} stay"),
        ("---\n<<<image_1>>> {animal}\n", None),
    ],
    ids=["name", "attribute", "format-spec", "literal-braces", "placeholders-untouched"],
)
def test_interpolation(cell, expected):
    ns = {"animal": "fox", "scene": Scene(), "speed": 1.5}
    if expected is None:
        cell = "images: [https://a.example/i.png]\n" + cell
        assert parse(cell, namespace=ns).body["prompt"] == "<<<image_1>>> fox"
    else:
        assert parse(cell, namespace=ns).body["prompt"] == expected


def test_interpolation_in_string_values():
    body = parse('mode: "{m}"\nduration: "{d}"\n---\nA kite', namespace={"m": "pro", "d": 10}).body
    assert (body["mode"], body["duration"]) == ("pro", 10)


def test_unknown_name_is_named():
    with pytest.raises(SpecError, match=r"unknown name \{colour\}"):
        parse("---\nA {colour} kite", namespace={})


# -- local files --------------------------------------------------------------------------
@pytest.fixture
def media(tmp_path):
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "same.png").write_bytes((tmp_path / "red.png").read_bytes())
    Image.new("RGB", (32, 32), (10, 200, 10)).save(tmp_path / "green.png")
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (11 * 1024 * 1024))
    (tmp_path / "notes.png").write_text("just text")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "clip.mp4").write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 100)
    return tmp_path


def test_local_image_is_listed_for_upload(media):
    request = parse("images: [red.png]\n---\n<<<image_1>>> waves", base_dir=media)
    (local,) = request.uploads
    assert local.where == ("metadata", "image_list", 0, "image_url")
    assert local.mime == "image/png" and local.path == (media / "red.png").resolve()
    body = request.with_urls({local.sha256: "https://cdn.example/red.png"})
    assert body["metadata"]["image_list"][0]["image_url"] == "https://cdn.example/red.png"
    assert request.body["metadata"]["image_list"][0]["image_url"] == "red.png"  # unchanged


def test_identity_follows_content_not_path(media):
    a = parse("images: [red.png]\n---\n<<<image_1>>> waves", base_dir=media)
    b = parse("images: [copy/same.png]\n---\n<<<image_1>>> waves", base_dir=media)
    c = parse("images: [green.png]\n---\n<<<image_1>>> waves", base_dir=media)
    assert a.identity == b.identity != c.identity
    assert parse("mode: pro\n---\nx").identity != parse("mode: std\n---\nx").identity


@pytest.mark.parametrize(
    "name, reason",
    [
        ("big.png", "the upload limit is 10,485,760 bytes"),
        ("notes.png", "not an image"),
        ("empty.png", "empty"),
        ("clip.mp4", "is a video"),
        ("missing.png", "no such file"),
    ],
)
def test_bad_local_images(media, name, reason):
    with pytest.raises(SpecError, match=reason):
        parse(f"images: [{name}]\n---\n<<<image_1>>> waves", base_dir=media)


def test_element_from_local_path(media):
    request = parse("elements:\n  - {path: red.png, role: subject}\n---\n<<<element_1>>> dances", base_dir=media)
    assert request.body["metadata"]["element_list"] == [{"url": "red.png", "type": "image", "role": "subject"}]
    assert request.uploads[0].where == ("metadata", "element_list", 0, "url")


# -- dry run material -----------------------------------------------------------------------
def test_curl_redacts_the_key_and_quotes_safely():
    request = parse("---\nIt's a kite")
    curl = request.curl("https://toapis.com")
    assert "$TOAPIS_API_KEY" in curl and "https://toapis.com/v1/videos/generations" in curl
    assert "It'\\''s a kite" in curl


@pytest.mark.parametrize(
    "header, billing",
    [
        ("mode: std", "720P 5s"),
        ("mode: pro\nduration: 10", "1080P 10s"),
        ("audio: true", "720P 5s Sound"),
        ("videos: [https://a.example/v.mp4]", "720P 5s Video"),
    ],
)
def test_billing_class(header, billing):
    prompt = "<<<video_1>>> x" if "videos" in header else "x"
    assert parse(f"{header}\n---\n{prompt}").billing_class == billing


def test_from_fields_uses_the_same_rules():
    assert from_fields("A {literal} kite", {"mode": "pro"}).body["prompt"] == "A {literal} kite"
    with pytest.raises(SpecError):
        from_fields("A kite", {"duration": 7})


# -- hostile input --------------------------------------------------------------------------
def test_billion_laughs_is_refused():
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(SpecError, match="anchors"):
        parse(bomb + "---\nA kite")


def test_huge_header_is_refused():
    with pytest.raises(SpecError, match="header"):
        parse("metadata:\n  note: " + "x" * 70_000 + "\n---\nA kite")


def test_binary_junk_is_refused():
    with pytest.raises(SpecError):
        parse("\x00\x01\x02\xff---\n\x00")


# -- property-based: never anything but a request or a KlingError ---------------------------
YAMLISH = st.lists(
    st.sampled_from(
        [
            "mode",
            "duration",
            "aspect_ratio",
            "audio",
            "images",
            "videos",
            "elements",
            "metadata",
            "model",
            "prompt",
            "sweep",
            "variants",
            "- ",
            "  ",
            ":",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a",
            "*a",
            "!!",
            "---",
            "\n",
            "<<<image_1>>>",
            "<<<video_2>>>",
            "16:9",
            "yes",
            "no",
            "10",
            "pro",
            "https://a.example/x.png",
            "data:x",
            "'",
            '"',
            "#",
            "|",
            ">",
            "~",
            "{x}",
            "{{",
            "}}",
            "\t",
            "é",
            "\x00",
        ]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cell=st.one_of(st.text(max_size=300), YAMLISH),
    line=st.one_of(
        st.text(max_size=40), st.sampled_from(["--name x", "--wait", "--dry-run --yes", "--force --name _", "--"])
    ),
)
def test_fuzz_only_requests_or_kling_errors(cell, line):
    try:
        batch = parse_batch(cell, line, namespace={"x": 1})
    except KlingError:
        return
    for request in batch.requests:
        json.dumps(request.body)  # always serialisable
        assert request.body["model"] == "kling-video-o1"
