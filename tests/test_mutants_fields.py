"""Every rule of the cell's fields, checked to the exact message a user reads (gaps found by
mutation testing, `make mutate`): the field and line it names, the words that say what to do,
and the exact body, uploads, references and warnings of the cells that are accepted."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from kling_nb import SpecError, parse
from kling_nb.cell.fields import Lines, Reference, deep_copy
from kling_nb.cell.spec import from_fields


@pytest.fixture
def media(tmp_path):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "red.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("just text")
    (tmp_path / "clip.png").write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 100)  # a video named .png
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 + 1))
    return tmp_path


# (cell, the one line the user reads)
REFUSED = [
    (
        "model: kling-v2\n---\nA kite",
        "`model` at line 1: unknown model 'kling-v2'; this tool drives kling-video-o1",
    ),
    (
        "mode: ultra\n---\nA kite",
        "`mode` at line 1: must be std (720P) or pro (1080P), not 'ultra'",
    ),
    (
        "duration: 7\n---\nA kite",
        "`duration` at line 1: must be 5 or 10 (seconds), not 7",
    ),
    (
        "duration: 5.5\n---\nA kite",
        "`duration` at line 1: must be 5 or 10 (seconds), not 5.5",
    ),
    (
        "aspect_ratio: wide\n---\nA kite",
        "`aspect_ratio` at line 1: must look like 16:9, not 'wide'",
    ),
    (
        "aspect_ratio: 16\n---\nA kite",
        "`aspect_ratio` at line 1: must look like 16:9, not 16",
    ),
    (
        "audio: maybe\n---\nA kite",
        "`audio` at line 1: must be true or false, not 'maybe'",
    ),
    (
        "metadata: [1, 2]\n---\nA kite",
        "`metadata` at line 1: must be a mapping",
    ),
    (
        "mode: std\n---\n   \n",
        "`prompt`: the prompt is empty: write it after the `---` line (or as `prompt:`)",
    ),
    (
        "x" * 10_001,
        "`prompt`: the prompt is 10001 characters; at most 10000",
    ),
    (
        "audio: true\nvideos: [https://a.example/v.mp4]\n---\n<<<video_1>>>",
        (
            "`audio` at line 1: audio: true cannot go with a reference video (video_list): the service generates "
            "sound or follows a video, never both"
        ),
    ),
    (
        "mode: .nan\n---\nA kite",
        "`mode` at line 1: must be a finite number, not nan",
    ),
    (
        "metadata:\n  seed: .inf\n---\nA kite",
        "`metadata.seed` at line 2: must be a finite number, not inf",
    ),
    (
        'images: ["https://a.example/i\\0.png"]\n---\n<<<image_1>>>',
        "`images.0` at line 1: contains a NUL character",
    ),
    (
        "images: 7\n---\n<<<image_1>>>",
        "`images` at line 1: must be a list",
    ),
    (
        "images:\n  - 7\n---\n<<<image_1>>>",
        "`images[0]` at line 2: each item must be a URL, a path, or a mapping",
    ),
    (
        "images:\n  - {urll: https://a.example/i.png}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: unknown key `urll`; did you mean `url`?",
    ),
    (
        "images:\n  - {url: https://a.example/i.png, path: red.png}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: give exactly one of `url` or `path`",
    ),
    (
        "images:\n  - {type: first_frame}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: give exactly one of `url` or `path`",
    ),
    (
        "images:\n  - {url: '  '}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `url` must be a non-empty string",
    ),
    (
        "images:\n  - {url: https://a.example/i.png, frame: last}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `frame` goes with `from` (a frame of an earlier generation)",
    ),
    (
        "images:\n  - {url: https://a.example/i.png, type: middle}\n---\n<<<image_1>>>",
        "`images[0].type` at line 2: must be first_frame or end_frame, not 'middle'",
    ),
    (
        "images:\n  - {from: 9lives}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `from` must be the --name of an earlier generation, not '9lives'",
    ),
    (
        "images:\n  - {from: shot1, url: https://a.example/i.png}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: give `from` or a `url`/`path`, not both",
    ),
    (
        "images:\n  - {from: shot1, frame: middle}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `frame` must be first, last or a time in seconds, not 'middle'",
    ),
    (
        "images:\n  - {from: shot1, frame: true}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `frame` must be first, last or a time in seconds, not True",
    ),
    (
        "images:\n  - {from: shot1, frame: -1}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `frame` must be first, last or a time in seconds, not -1",
    ),
    (
        "images:\n  - {from: shot1, frame: 3600}\n---\n<<<image_1>>>",
        "`images[0]` at line 2: `frame` must be first, last or a time in seconds, not 3600",
    ),
    (
        "images:\n  - {from: shot1, type: middle}\n---\n<<<image_1>>>",
        "`images[0].type` at line 2: must be first_frame or end_frame, not 'middle'",
    ),
    (
        (
            "images: [https://a.example/i.png]\nmetadata:\n  image_list: [{image_url: "
            "https://a.example/i.png}]\n---\n<<<image_1>>>"
        ),
        "`images` at line 1: give either `images` or `metadata.image_list`, not both",
    ),
    (
        "metadata:\n  image_list:\n    - {url: https://a.example/i.png}\n---\n<<<image_1>>>",
        "`metadata.image_list[0]` at line 3: unknown key `url`; known: image_url, type",
    ),
    (
        "metadata:\n  image_list:\n    - {image_url: https://a.example/i.png, type: middle}\n---\n<<<image_1>>>",
        "`metadata.image_list[0].type` at line 3: must be first_frame or end_frame, not 'middle'",
    ),
    (
        "metadata:\n  image_list: 7\n---\n<<<image_1>>>",
        "`metadata.image_list` at line 2: must be a list",
    ),
    (
        "videos: [https://a.example/v.mp4]\nvideo_list: [{video_url: https://a.example/v.mp4}]\n---\n<<<video_1>>>",
        "`videos` at line 1: give either `videos` or `video_list`, not both",
    ),
    (
        "videos:\n  - {refer_type: base}\n---\n<<<video_1>>>",
        "`videos[0]` at line 2: needs a `url` (or `from: NAME` for an earlier generation)",
    ),
    (
        "videos:\n  - {url: https://a.example/v.mp4, refer_type: style}\n---\n<<<video_1>>>",
        "`videos[0].refer_type` at line 2: must be base or feature, not 'style'",
    ),
    (
        "videos:\n  - {url: https://a.example/v.mp4, keep_original_sound: maybe}\n---\n<<<video_1>>>",
        "`videos[0].keep_original_sound` at line 2: must be true or false, not 'maybe'",
    ),
    (
        "videos:\n  - {from: shot1, url: https://a.example/v.mp4}\n---\n<<<video_1>>>",
        "`videos[0]` at line 2: give `from` or a `url`/`path`, not both",
    ),
    (
        "videos: 7\n---\n<<<video_1>>>",
        "`videos` at line 1: must be a list",
    ),
    (
        "video_list:\n  - {video_url: https://a.example/v.mp4, refer_type: style}\n---\n<<<video_1>>>",
        "`video_list[0].refer_type` at line 2: must be base or feature, not 'style'",
    ),
    (
        "video_list:\n  - {video_url: https://a.example/v.mp4, keep_original_sound: maybe}\n---\n<<<video_1>>>",
        "`video_list[0].keep_original_sound` at line 2: must be true or false, not 'maybe'",
    ),
    (
        "video_list:\n  - {refer_type: base}\n---\n<<<video_1>>>",
        "`video_list[0]` at line 2: needs a video_url",
    ),
    (
        "video_list:\n  - {video_url: https://a.example/v.mp4, colour: red}\n---\n<<<video_1>>>",
        "`video_list[0]` at line 2: unknown key `colour`; known: video_url, refer_type, keep_original_sound",
    ),
    (
        "elements:\n  - {url: https://a.example/e.png, role: ''}\n---\n<<<element_1>>>",
        "`elements[0].role` at line 2: `role` must be a word such as subject",
    ),
    (
        "elements:\n  - {url: https://a.example/e.png, role: 3}\n---\n<<<element_1>>>",
        "`elements[0].role` at line 2: `role` must be a word such as subject",
    ),
    (
        "elements:\n  - {url: https://a.example/e.png, type: sound}\n---\n<<<element_1>>>",
        "`elements[0].type` at line 2: must be image, not 'sound'",
    ),
    (
        "elements:\n  - {role: subject}\n---\n<<<element_1>>>",
        "`elements[0]` at line 2: give exactly one of `url` or `path`",
    ),
    (
        (
            "elements: [https://a.example/e.png]\nmetadata:\n  element_list: [{url: "
            "https://a.example/e.png}]\n---\n<<<element_1>>>"
        ),
        "`elements` at line 1: give either `elements` or `metadata.element_list`, not both",
    ),
    (
        "metadata:\n  element_list:\n    - {url: https://a.example/e.png, type: sound}\n---\n<<<element_1>>>",
        "`metadata.element_list[0].type` at line 3: must be image, not 'sound'",
    ),
    (
        "metadata:\n  element_list:\n    - {type: image}\n---\n<<<element_1>>>",
        "`metadata.element_list[0]` at line 3: needs a url",
    ),
    (
        "images: [data:image/png;base64,iVBORw0KGgo=]\n---\n<<<image_1>>>",
        (
            "`images[0]` at line 1: base64 / data URIs are refused by the service: give a public http(s) URL or a "
            "local file path (kling_nb uploads it)"
        ),
    ),
    (
        "videos: [data:video/mp4;base64,AAAA]\n---\n<<<video_1>>>",
        "`videos[0]` at line 1: base64 / data URIs are refused by the service: give a public http(s) URL",
    ),
    (
        "images: [" + "QUJD" * 60 + "]\n---\n<<<image_1>>>",
        (
            "`images[0]` at line 1: base64 / data URIs are refused by the service: give a public http(s) URL or a "
            "local file path (kling_nb uploads it)"
        ),
    ),
    (
        "images: ['https://']\n---\n<<<image_1>>>",
        "`images[0]` at line 1: 'https://' is not a complete URL",
    ),
    (
        "images: [ftp://a.example/i.png]\n---\n<<<image_1>>>",
        "`images[0]` at line 1: only public http(s) URLs can be used, not ftp:",
    ),
    (
        "videos: [clip.mp4]\n---\n<<<video_1>>>",
        (
            "`videos[0]` at line 1: 'clip.mp4' is a local file, but the service has no upload endpoint for "
            "videos: host it somewhere public and give its http(s) URL"
        ),
    ),
    (
        "images: [missing.png]\n---\n<<<image_1>>>",
        "`images[0]` at line 1: no such file: missing.png",
    ),
    (
        "images: [empty.png]\n---\n<<<image_1>>>",
        "`images[0]` at line 1: empty.png is empty",
    ),
    (
        "images: [big.png]\n---\n<<<image_1>>>",
        "`images[0]` at line 1: big.png is 10,485,769 bytes; the upload limit is 10,485,760 bytes (10 MiB)",
    ),
    (
        "images: [notes.png]\n---\n<<<image_1>>>",
        (
            "`images[0]` at line 1: notes.png is not an image: images must be JPEG, PNG, WebP or GIF (checked by "
            "content)"
        ),
    ),
    (
        "images: [clip.png]\n---\n<<<image_1>>>",
        "`images[0]` at line 1: clip.png is a video: images must be JPEG, PNG, WebP or GIF (checked by content)",
    ),
    (
        "elements: [notes.png]\n---\n<<<element_1>>>",
        (
            "`elements[0]` at line 1: notes.png is not an image: images must be JPEG, PNG, WebP or GIF (checked "
            "by content)"
        ),
    ),
    (
        "---\n<<<picture_1>>> waves",
        (
            "`prompt` at line 2: malformed placeholder '<<<picture_1>>>': write <<<image_N>>>, <<<video_N>>> or "
            "<<<element_N>>>"
        ),
    ),
    (
        "images: [https://a.example/i.png]\n---\nA kite\n\n<<<image_2>>> waves",
        "`prompt` at line 5: <<<image_2>>> refers to item 2 of metadata.image_list, which has 1 item",
    ),
    (
        "---\nA kite <<<image_1>>> waves",
        "`prompt` at line 2: <<<image_1>>> refers to item 1 of metadata.image_list, which is empty",
    ),
    (
        "images: [https://a.example/1.png, https://a.example/2.png]\n---\n<<<image_2>>> then\n<<<image_1>>>",
        (
            "`prompt` at line 3: <<<image_N>>> placeholders first appear in the order [2, 1], but the service "
            "requires metadata.image_list in the order of the prompt: renumber them [1, 2] in reading order and "
            "list the items in that order"
        ),
    ),
    (
        (
            "videos: [https://a.example/1.mp4, https://a.example/2.mp4, "
            "https://a.example/3.mp4]\n---\n<<<video_1>>> <<<video_3>>> <<<video_2>>>"
        ),
        (
            "`prompt` at line 3: <<<video_N>>> placeholders first appear in the order [1, 3, 2], but the service "
            "requires video_list in the order of the prompt: renumber them [1, 2, 3] in reading order and list "
            "the items in that order"
        ),
    ),
    (
        "duraton: 5\n---\nA kite",
        "`header` at line 1: unknown key `duraton`; did you mean `duration`?",
    ),
    (
        "colour: red\n---\nA kite",
        (
            "`header` at line 1: unknown key `colour`; known: model, prompt, mode, duration, aspect_ratio, audio, "
            "video_list, metadata, images, videos, elements"
        ),
    ),
]


@pytest.mark.parametrize("cell, message", REFUSED, ids=[f"{i:02d}" for i in range(len(REFUSED))])
def test_every_refusal_names_the_field_and_line_and_says_what_to_do(cell, message, media):
    with pytest.raises(SpecError) as err:
        parse(cell, base_dir=media)
    assert str(err.value) == message


# -- accepted cells: the exact body ----------------------------------------------------------
def test_images_taken_from_earlier_generations_are_references_until_resolved():
    request = parse(
        "images:\n  - {from: shot1}\n  - {from: shot2, frame: first, type: end_frame}\n"
        "  - {from: shot3, frame: 2}\n  - {from: shot4, frame: 2.5}\n---\n"
        "<<<image_1>>> <<<image_2>>> <<<image_3>>> <<<image_4>>>"
    )
    assert request.body["metadata"] == {
        "image_list": [
            {"image_url": "kling-ref:shot1#last"},
            {"image_url": "kling-ref:shot2#first", "type": "end_frame"},
            {"image_url": "kling-ref:shot3#2.0"},
            {"image_url": "kling-ref:shot4#2.5"},
        ]
    }
    where = [("metadata", "image_list", i, "image_url") for i in range(4)]
    assert request.references == (
        Reference(where[0], "shot1", "frame", "last"),
        Reference(where[1], "shot2", "frame", "first"),
        Reference(where[2], "shot3", "frame", 2.0),
        Reference(where[3], "shot4", "frame", 2.5),
    )
    assert request.uploads == () and request.warnings == ()


def test_a_video_taken_from_an_earlier_generation_keeps_its_settings():
    request = parse("videos:\n  - {from: shot1, refer_type: feature, keep_original_sound: yes}\n---\n<<<video_1>>>")
    assert request.body["video_list"] == [
        {"video_url": "kling-ref:shot1#video", "refer_type": "feature", "keep_original_sound": "yes"}
    ]
    assert request.references == (Reference(("video_list", 0, "video_url"), "shot1", "video", "last"),)


def test_elements_get_the_default_type_and_role_and_local_ones_are_uploaded(media):
    request = parse(
        "elements:\n  - https://a.example/e.png\n  - {path: red.png, role: hero}\n---\n<<<element_1>>> <<<element_2>>>",
        base_dir=media,
    )
    assert request.body["metadata"]["element_list"] == [
        {"url": "https://a.example/e.png", "type": "image", "role": "subject"},
        {"url": "red.png", "type": "image", "role": "hero"},
    ]
    (local,) = request.uploads
    content = (media / "red.png").read_bytes()
    assert local.where == ("metadata", "element_list", 1, "url")
    assert (local.path, local.mime, local.size) == ((media / "red.png").resolve(), "image/png", len(content))
    assert local.sha256 == hashlib.sha256(content).hexdigest()


def test_every_local_image_is_listed_for_upload_in_its_place(media):
    request = parse(
        "images: [red.png, {path: red.png, type: first_frame}]\n---\n<<<image_1>>> <<<image_2>>>", base_dir=media
    )
    assert request.body["metadata"]["image_list"] == [
        {"image_url": "red.png"},
        {"image_url": "red.png", "type": "first_frame"},
    ]
    assert [u.where for u in request.uploads] == [
        ("metadata", "image_list", 0, "image_url"),
        ("metadata", "image_list", 1, "image_url"),
    ]


def test_lists_in_the_apis_own_shape_are_checked_and_cleaned():
    body = parse(
        "video_list:\n  - {video_url: https://a.example/v.mp4, keep_original_sound: true, refer_type: feature}\n"
        "metadata:\n  image_list:\n    - {image_url: ' https://a.example/i.png ', type: end_frame}\n"
        "  element_list:\n    - {url: https://a.example/e.png, type: image}\n---\n"
        "<<<video_1>>> <<<image_1>>> <<<element_1>>>"
    ).body
    assert body["video_list"] == [
        {"video_url": "https://a.example/v.mp4", "keep_original_sound": "yes", "refer_type": "feature"}
    ]
    assert body["metadata"] == {
        "image_list": [{"image_url": "https://a.example/i.png", "type": "end_frame"}],
        "element_list": [{"url": "https://a.example/e.png", "type": "image"}],
    }


def test_an_empty_video_list_is_left_out_and_said_so():
    request = parse("videos: []\n---\nA kite")
    assert "video_list" not in request.body
    assert request.warnings == ("an empty video list was left out of the body",)


def test_an_empty_metadata_mapping_is_sent_as_given():
    assert parse("metadata: {}\n---\nA kite").body["metadata"] == {}
    assert "metadata" not in parse("mode: std\n---\nA kite").body


@pytest.mark.parametrize(
    "header, field, sent",
    [
        ("aspect_ratio: ' 16 : 9 '", "aspect_ratio", "16:9"),
        ("duration: ' 10 '", "duration", 10),
        ("duration: 10.0", "duration", 10),
        ("audio: ' Yes '", "audio", True),
        ("audio: N", "audio", False),
    ],
)
def test_values_are_sent_in_the_apis_form(header, field, sent):
    body = parse(f"{header}\n---\nA kite").body
    assert body[field] == sent and type(body[field]) is type(sent)


def test_audio_false_goes_with_a_reference_video():
    body = parse("audio: false\nvideos: [https://a.example/v.mp4]\n---\n<<<video_1>>>").body
    assert body["audio"] is False and len(body["video_list"]) == 1


def test_an_uncommon_aspect_ratio_is_sent_with_a_warning_naming_the_common_ones():
    request = parse("aspect_ratio: 4:3\n---\nA kite")
    assert request.body["aspect_ratio"] == "4:3"
    assert request.warnings == ("aspect_ratio 4:3 is not one of the common values 16:9, 9:16, 1:1",)


def test_items_the_prompt_never_mentions_are_named_in_the_warning():
    request = parse(
        "images: [https://a.example/1.png, https://a.example/2.png, https://a.example/3.png]\n---\n<<<image_2>>>"
    )
    assert request.warnings == (
        "metadata.image_list item(s) 1, 3 are not referred to in the prompt (add <<<image_1>>>): "
        "the service inserts nothing for you",
    )


def test_urls_are_sent_without_surrounding_spaces():
    body = parse("images: [' https://a.example/1.png ']\n---\n<<<image_1>>>").body
    assert body["metadata"]["image_list"] == [{"image_url": "https://a.example/1.png"}]


def test_a_windows_path_is_a_local_file_not_a_url_scheme(media):
    with pytest.raises(SpecError, match=r"no such file: C:\\pics\\a.png"):
        parse("images: ['C:\\pics\\a.png']\n---\n<<<image_1>>>", base_dir=media)


def test_placeholders_used_twice_in_order_are_fine():
    request = parse(
        "videos: [https://a.example/1.mp4, https://a.example/2.mp4]\n---\n"
        "<<<video_1>>> <<<video_2>>>\n<<<video_2>>> <<<video_1>>>"
    )
    assert request.warnings == ()


# -- interpolation -----------------------------------------------------------------------------
class Unformattable:
    def __format__(self, spec):
        raise RuntimeError("no")


NS = {"animal": "fox", "n": 2, "boom": Unformattable(), "url": "https://a.example/i.png", "m": "pro"}


@pytest.mark.parametrize(
    "cell, message",
    [
        ("mode: '{mode}'\n---\nA kite", "`mode` at line 1: unknown name {mode} (write {{ and }} for literal braces)"),
        (
            "images:\n  - url: '{missing}'\n---\n<<<image_1>>>",
            "`images.0.url` at line 2: unknown name {missing} (write {{ and }} for literal braces)",
        ),
        ("---\nA {boom} kite", "`prompt`: filling in braces failed: RuntimeError: no"),
        (
            "---\nA {0} kite",
            "`prompt`: cannot fill in braces: tuple index out of range; write {{ and }} for literal braces",
        ),
        (
            "---\nA {animal!z} kite",
            "`prompt`: cannot fill in braces: Unknown conversion specifier z; write {{ and }} for literal braces",
        ),
    ],
)
def test_braces_that_cannot_be_filled_name_the_field(cell, message):
    with pytest.raises(SpecError) as err:
        parse(cell, namespace=NS)
    assert str(err.value) == message


def test_braces_are_filled_in_every_string_value_at_any_depth():
    body = parse(
        "mode: '{m}'\nimages:\n  - '{url}'\nmetadata:\n  note: 'a {animal}'\n---\n<<<image_1>>> {n}", namespace=NS
    ).body
    assert body["mode"] == "pro" and body["prompt"] == "<<<image_1>>> 2"
    assert body["metadata"] == {"note": "a fox", "image_list": [{"image_url": "https://a.example/i.png"}]}


def test_without_a_namespace_braces_are_sent_as_written():
    body = from_fields("A {animal}", {"metadata": {"note": "{animal}"}}).body
    assert body["prompt"] == "A {animal}" and body["metadata"] == {"note": "{animal}"}


# -- small parts other modules use -------------------------------------------------------------
def test_a_line_is_found_for_the_nearest_enclosing_key():
    lines = Lines({("images",): 3, ("images", 1): 5})
    assert lines.of("images", 1, "url") == 5
    assert lines.of("images", 0) == 3
    assert lines.of("mode") is None
    assert Lines().of("images") is None


def test_a_deep_copy_shares_nothing_with_the_body():
    body = {"metadata": {"image_list": [{"image_url": "a"}]}}
    copied = deep_copy(body)
    copied["metadata"]["image_list"][0]["image_url"] = "b"
    assert copied != body and body["metadata"]["image_list"][0]["image_url"] == "a"


# -- more edges --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell, message",
    [
        ('mode: "\\ud800"\n---\nA kite', "`mode` at line 1: contains a lone surrogate (broken Unicode text)"),
        ('mode: "\\udfff"\n---\nA kite', "`mode` at line 1: contains a lone surrogate (broken Unicode text)"),
        (
            'metadata:\n  "a\\ud800": 1\n---\nA kite',
            "`metadata` at line 1: contains a lone surrogate (broken Unicode text)",
        ),
        ("elements: 7\n---\nA kite", "`elements` at line 1: must be a list"),
        ("elements:\n  - 7\n---\nA kite", "`elements[0]` at line 2: each item must be a URL, a path, or a mapping"),
        ("videos:\n  - 7\n---\nA kite", "`videos[0]` at line 2: each item must be a URL, a path, or a mapping"),
        (
            "images:\n  - {from: shot1, path: a.png}\n---\n<<<image_1>>>",
            "`images[0]` at line 2: give `from` or a `url`/`path`, not both",
        ),
        (
            "images:\n  - https://a.example/i.png\n  - ftp://x/i.png\n---\n<<<image_1>>> <<<image_2>>>",
            "`images[1]` at line 3: only public http(s) URLs can be used, not ftp:",
        ),
        (
            "video_list:\n  - {video_url: https://a.example/v.mp4}\n  - {video_url: ftp://x/v.mp4}\n---\n"
            "<<<video_1>>> <<<video_2>>>",
            "`videos[1]` at line 3: only public http(s) URLs can be used, not ftp:",
        ),
        (
            "---\n<<<" + "x" * 50 + ">>> waves",
            "`prompt` at line 2: malformed placeholder '<<<" + "x" * 37 + "': write <<<image_N>>>, <<<video_N>>> or "
            "<<<element_N>>>",
        ),
        (
            "images: [https://a.example/1.png, https://a.example/2.png]\n---\n<<<image_3>>>",
            "`prompt` at line 3: <<<image_3>>> refers to item 3 of metadata.image_list, which has 2 items",
        ),
        (
            "videos: [https://a.example/1.mp4, https://a.example/2.mp4]\n"
            "images: [https://a.example/1.png, https://a.example/2.png]\n---\n"
            "<<<video_1>>> <<<video_2>>>\n<<<image_2>>> then\n<<<image_1>>>",
            "`prompt` at line 5: <<<image_N>>> placeholders first appear in the order [2, 1], but the service "
            "requires metadata.image_list in the order of the prompt: renumber them [1, 2] in reading order and list "
            "the items in that order",
        ),
    ],
)
def test_more_refusals_name_the_field_and_line(cell, message):
    with pytest.raises(SpecError) as err:
        parse(cell)
    assert str(err.value) == message


@pytest.mark.parametrize(
    "cell, message",
    [
        (
            "---\nA { kite",
            "`prompt`: cannot fill in braces: expected '}' before end of string; write {{ and }} for literal braces",
        ),
        (
            "---\nA } kite",
            "`prompt`: cannot fill in braces: Single '}' encountered in format string; "
            "write {{ and }} for literal braces",
        ),
        (
            'mode: "{0}"\n---\nA kite',
            "`mode` at line 1: cannot fill in braces: tuple index out of range; write {{ and }} for literal braces",
        ),
        ('mode: "{boom}"\n---\nA kite', "`mode` at line 1: filling in braces failed: RuntimeError: no"),
        (
            'prompt: "A {colour}"\n---\n',
            "`prompt` at line 1: unknown name {colour} (write {{ and }} for literal braces)",
        ),
    ],
)
def test_a_lone_brace_is_refused_not_sent_and_errors_name_their_line(cell, message):
    with pytest.raises(SpecError) as err:
        parse(cell, namespace=NS)
    assert str(err.value) == message


def test_a_placeholder_mistake_in_fields_without_a_cell_has_no_line():
    with pytest.raises(SpecError) as err:
        from_fields("<<<image_1>>> waves", {})
    assert str(err.value) == "`prompt`: <<<image_1>>> refers to item 1 of metadata.image_list, which is empty"


def test_urls_in_capitals_and_lower_case_drive_letters_are_read_as_what_they_are(media):
    body = parse("images: ['HTTPS://A.EXAMPLE/i.png']\n---\n<<<image_1>>>").body
    assert body["metadata"]["image_list"] == [{"image_url": "HTTPS://A.EXAMPLE/i.png"}]
    with pytest.raises(SpecError, match=r"no such file: c:\\pics\\a.png"):
        parse("images: ['c:\\pics\\a.png']\n---\n<<<image_1>>>", base_dir=media)


def test_an_image_of_exactly_the_upload_limit_is_accepted(tmp_path):
    (tmp_path / "exact.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (10 * 1024 * 1024 - 8))
    request = parse("images: [exact.png]\n---\n<<<image_1>>>", base_dir=tmp_path)
    assert request.uploads[0].size == 10 * 1024 * 1024


def test_a_prompt_of_exactly_the_limit_is_accepted():
    assert len(parse("x" * 10_000).body["prompt"]) == 10_000


def test_frames_at_the_start_or_named_last_are_accepted():
    request = parse(
        "images:\n  - {from: shot1, frame: 0}\n  - {from: shot2, frame: last}\n---\n<<<image_1>>> <<<image_2>>>"
    )
    assert [(r.name, r.frame) for r in request.references] == [("shot1", 0.0), ("shot2", "last")]


def test_the_models_this_tool_drives_are_listed_when_another_is_asked_for():
    from kling_nb import parse_batch

    with pytest.raises(SpecError) as err:
        parse_batch("model: c\n---\nA kite", allowed_models=("a", "b"))
    assert str(err.value) == "`model` at line 1: unknown model 'c'; this tool drives a, b"
