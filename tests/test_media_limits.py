"""An image or document input's own size limit (`max_bytes:` in the task file): checked at load
time (a positive int, only lowering the built-in limit, only on media inputs), then applied to
every call, per item of a list, in Python and over HTTP (413)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast.media import (
    MAX_DOCUMENT_BYTES,
    MAX_IMAGE_BYTES,
    Document,
    Image,
    MediaTooLargeError,
)
from promptcast.server import create_app
from promptcast.testing import FakeAnthropic
from tests.serving import running
from tests.test_media import PDF, _text_reply, data_url, png

LIMIT = 2000

SHOT = f"""\
---
inputs:
  message: str
  screenshot:
    type: image
    max_bytes: {LIMIT}
output: str
model: anthropic/claude-sonnet-4-6
---
{{{{ message }}}} {{{{ screenshot }}}}
"""

ALBUM = f"""\
---
inputs:
  photos: {{type: "list[image] | None", default: null, max_bytes: {LIMIT}}}
  contract: {{type: document, max_bytes: {len(PDF) + 10}}}
output: str
model: anthropic/claude-sonnet-4-6
---
{{% for photo in photos or [] %}}{{{{ photo }}}}{{% endfor %}}{{{{ contract }}}}
"""


def big_png() -> bytes:
    """A PNG over LIMIT and far under the built-in 5 MB."""
    return png(40, 40, seed=3) + bytes(LIMIT)


def as_form(form: str, raw: bytes, tmp_path: Path) -> Any:
    """`raw` in one of the forms an image input takes."""
    if form == "path":
        path = tmp_path / f"shot-{len(raw)}.png"
        path.write_bytes(raw)
        return path
    return {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "data_url": data_url(raw),
        "mapping": {"media_type": "image/png", "data": base64.b64encode(raw).decode()},
        "image": Image(raw),
    }[form]


FORMS = ["bytes", "bytearray", "path", "data_url", "mapping", "image"]


# --- load time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            f"{{type: image, max_bytes: {MAX_IMAGE_BYTES + 1}}}",
            f"max_bytes {MAX_IMAGE_BYTES + 1:,} is over the built-in limit for an image "
            f"({MAX_IMAGE_BYTES:,} bytes, 5.0 MB); max_bytes can only lower it",
        ),
        (
            f"{{type: 'list[image]', max_bytes: {MAX_IMAGE_BYTES * 2}}}",
            "over the built-in limit for an image",
        ),
        (
            f"{{type: 'document | None', default: null, max_bytes: {MAX_DOCUMENT_BYTES + 1}}}",
            f"over the built-in limit for a document ({MAX_DOCUMENT_BYTES:,} bytes, 32.0 MB)",
        ),
        ("{type: str, max_bytes: 1000}", "max_bytes is only for image and document inputs"),
        ("{type: int, max_bytes: 1000}", "max_bytes is only for image and document inputs"),
        ("{type: 'list[str]', max_bytes: 10}", "max_bytes is only for image and document inputs"),
        ("{type: image, max_bytes: 0}", "max_bytes: Input should be greater than 0"),
        ("{type: image, max_bytes: -5}", "max_bytes: Input should be greater than 0"),
        ("{type: image, max_bytes: '1000'}", "max_bytes: Input should be a valid integer"),
        ("{type: image, max_bytes: 1000.5}", "max_bytes: Input should be a valid integer"),
        ("{type: image, max_bytes: true}", "max_bytes: Input should be a valid integer"),
        ("{type: image, max_byte: 1000}", "did you mean 'max_bytes'?"),
    ],
)
def test_a_wrong_max_bytes_is_a_load_error_naming_file_line_and_input(
    write_task: Callable[..., Path], spec: str, message: str
) -> None:
    path = write_task("shot", f"---\ninputs:\n  note: str\n  shot: {spec}\n---\n{{{{ shot }}}}\n")
    with pytest.raises(pc.TaskDefinitionError) as caught:
        pc.Task.from_file(path)
    error = caught.value
    assert (error.file, error.line) == (str(path), 4)
    assert "inputs.shot: " in str(error)
    assert message in str(error)


def test_max_bytes_in_block_style_points_at_its_own_line(write_task: Callable[..., Path]) -> None:
    text = SHOT.replace(f"max_bytes: {LIMIT}", f"max_bytes: {MAX_IMAGE_BYTES + 1}")
    path = write_task("shot", text)
    with pytest.raises(pc.TaskDefinitionError, match=r"inputs\.screenshot: max_bytes") as caught:
        pc.Task.from_file(path)
    assert caught.value.line == 6


@pytest.mark.parametrize(
    "spec",
    [
        f"{{type: image, max_bytes: {MAX_IMAGE_BYTES}}}",  # the built-in limit itself is allowed
        "{type: 'image | None', default: null, max_bytes: 1}",
        "{type: 'list[document]', max_bytes: 100}",
    ],
)
def test_a_max_bytes_that_lowers_the_limit_loads(
    write_task: Callable[..., Path], spec: str
) -> None:
    path = write_task("shot", f"---\ninputs:\n  shot: {spec}\n---\n{{{{ shot }}}}\n")
    assert pc.Task.from_file(path).spec.inputs["shot"].max_bytes == int(
        spec.split("max_bytes: ")[1].rstrip("}")
    )


# --- calls -------------------------------------------------------------------------------------


@pytest.fixture
def shot(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("shot", SHOT))


@pytest.mark.parametrize("form", FORMS)
def test_an_image_over_the_inputs_limit_is_refused_before_any_request(
    form: str, shot: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    with pytest.raises(MediaTooLargeError) as caught:
        shot(message="m", screenshot=as_form(form, big_png(), tmp_path))
    error = caught.value
    assert (error.task, error.field) == ("shot", "screenshot")
    assert f"over the limit of {LIMIT:,} bytes this task sets for 'screenshot'" in str(error)
    assert "max_bytes" in str(error)
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("form", FORMS)
def test_an_image_under_the_inputs_limit_is_sent(
    form: str, shot: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = png(3, 3)
    assert len(raw) < LIMIT
    fake_anthropic.reply(_text_reply("fine"))
    assert shot(message="m", screenshot=as_form(form, raw, tmp_path)) == "fine"
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    image = next(b for b in blocks if b["type"] == "image")
    assert image["source"]["data"] == base64.b64encode(raw).decode()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("padding", [0, 1, 2])  # base64 that ends in "", "==" or "="
def test_an_image_at_exactly_the_limit_is_sent_and_one_byte_more_is_not(
    form: str,
    padding: int,
    write_task: Callable[..., Path],
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
) -> None:
    raw = png(3, 3)
    raw += bytes(LIMIT - padding - len(raw))
    task = pc.Task.from_file(
        write_task("exact", SHOT.replace(f"max_bytes: {LIMIT}", f"max_bytes: {len(raw)}"))
    )
    fake_anthropic.reply(_text_reply("fine"))
    assert task(message="m", screenshot=as_form(form, raw, tmp_path)) == "fine"
    with pytest.raises(MediaTooLargeError):
        task(message="m", screenshot=as_form(form, raw + b"\x00", tmp_path))


def test_a_url_has_no_size_to_check(shot: pc.Task[Any], fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.reply(_text_reply("fine"))
    assert shot(message="m", screenshot="https://example.com/crash.png") == "fine"


def test_the_limit_applies_to_each_item_of_a_list_and_to_a_document(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    album = pc.Task.from_file(write_task("album", ALBUM))
    fake_anthropic.reply(_text_reply("fine"))
    small = [png(3, 3, seed=1), png(3, 3, seed=2)]
    assert album(photos=small, contract=PDF) == "fine"
    with pytest.raises(MediaTooLargeError, match=f"limit of {LIMIT:,} bytes") as caught:
        album(photos=[*small, big_png()], contract=PDF)
    assert caught.value.field == "photos"
    with pytest.raises(MediaTooLargeError, match="this task sets for 'contract'") as caught:
        album(contract=PDF + bytes(20))
    assert caught.value.field == "contract"
    assert len(fake_anthropic.requests) == 1


def test_an_input_without_max_bytes_keeps_the_built_in_limit(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    text = SHOT.replace(f"    max_bytes: {LIMIT}\n", "")
    task = pc.Task.from_file(write_task("plain", text))
    fake_anthropic.reply(_text_reply("fine"))
    assert task(message="m", screenshot=big_png()) == "fine"


def test_the_input_schema_states_the_inputs_limit(shot: pc.Task[Any]) -> None:
    schema = shot.spec.input_model.model_json_schema()
    described = schema["properties"]["screenshot"]["description"]
    assert f"at most {LIMIT:,} bytes" in described
    assert Document.max_bytes == MAX_DOCUMENT_BYTES  # the classes' own limits are untouched


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture
def server(write_task: Callable[..., Path], fake_anthropic: FakeAnthropic) -> Iterator[str]:
    write_task("shot", SHOT)
    path = write_task("album", ALBUM)
    registry = pc.load_tasks(path.parent)
    with running(create_app(registry, tokens=[], max_body_bytes=4 << 20)) as url:
        yield url


@pytest.mark.parametrize(
    "screenshot",
    [
        lambda raw: data_url(raw),
        lambda raw: {"media_type": "image/png", "data": base64.b64encode(raw).decode()},
    ],
    ids=["data-url", "object"],
)
def test_an_image_over_the_inputs_limit_is_413_over_http(
    screenshot: Callable[[bytes], Any], server: str, fake_anthropic: FakeAnthropic
) -> None:
    answer = httpx.post(
        f"{server}/v1/tasks/shot", json={"message": "m", "screenshot": screenshot(big_png())}
    )
    assert answer.status_code == 413, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:promptcast:problem:media-too-large"
    assert problem["field"] == "screenshot"
    assert f"over the limit of {LIMIT:,} bytes this task sets for 'screenshot'" in problem["detail"]
    assert fake_anthropic.requests == []

    fake_anthropic.reply(_text_reply("fine"))
    answer = httpx.post(
        f"{server}/v1/tasks/shot", json={"message": "m", "screenshot": screenshot(png(3, 3))}
    )
    assert answer.status_code == 200, answer.text


def test_one_list_item_over_the_limit_is_413_over_http(
    server: str, fake_anthropic: FakeAnthropic
) -> None:
    body = {
        "photos": [data_url(png(3, 3)), data_url(big_png())],
        "contract": data_url(PDF, "application/pdf"),
    }
    answer = httpx.post(f"{server}/v1/tasks/album", json=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["field"] == "photos.1"
    assert fake_anthropic.requests == []


def test_openapi_states_each_inputs_own_limit(server: str) -> None:
    schemas = httpx.get(f"{server}/openapi.json").json()["components"]["schemas"]
    shot = next(s for name, s in schemas.items() if name.startswith("ShotInputs"))
    assert f"at most {LIMIT:,} bytes" in shot["properties"]["screenshot"]["description"]
    album = next(s for name, s in schemas.items() if name.startswith("AlbumInputs"))
    photos = album["properties"]["photos"]["anyOf"][0]["items"]
    assert f"at most {LIMIT:,} bytes" in photos["description"]
