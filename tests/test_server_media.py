"""Images and documents over HTTP: data URLs and `{media_type, data}` objects in, the provider's
image block out; 422 for what is not a valid image, 413 for one over its limit; the OpenAPI
document shows the types."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import promptcast as pc
from promptcast import media
from promptcast.media import Image
from promptcast.server import create_app
from promptcast.testing import FakeAnthropic
from tests.serving import metric, running
from tests.test_media import PDF, TICKET, _text_reply, data_url, gif, png
from tests.test_server import log_lines

FILES = """\
---
inputs:
  photos: "list[image]"
  contract: {type: "document | None", default: null}
output: str
model: anthropic/claude-sonnet-4-6
---
{% for photo in photos %}{{ photo }}{% endfor %}
{% if contract %}{{ contract }}{% endif %}
Describe them.
"""


@pytest.fixture
def server(write_task: Callable[..., Path], fake_anthropic: FakeAnthropic) -> Iterator[str]:
    write_task("ticket", TICKET)
    path = write_task("files", FILES)
    registry = pc.load_tasks(path.parent)
    with running(create_app(registry, tokens=[], max_body_bytes=4 << 20)) as url:
        yield url


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "screenshot",
    [
        data_url(png(3, 3)),
        data_url(png(3, 3), "image/jpeg"),  # the claimed type is ignored
        {"media_type": "image/png", "data": b64(png(3, 3))},
        {"data": b64(png(3, 3))},
    ],
    ids=["data-url", "data-url-wrong-type", "object", "object-no-type"],
)
def test_an_image_over_http_reaches_the_provider_as_an_image_block(
    screenshot: Any, server: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_text_reply("a ticket"))
    answer = httpx.post(
        f"{server}/v1/tasks/ticket", json={"message": "It crashed", "screenshot": screenshot}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"] == "a ticket"
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(png(3, 3))},
    }


def test_lists_of_images_and_a_document_over_http(
    server: str, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_text_reply())
    body = {"photos": [data_url(png()), data_url(gif())], "contract": data_url(PDF, "x/y")}
    answer = httpx.post(f"{server}/v1/tasks/files", json=body)
    assert answer.status_code == 200, answer.text
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    kinds = [(b["type"], b.get("source", {}).get("media_type")) for b in blocks]
    assert kinds == [
        ("image", "image/png"),
        ("image", "image/gif"),
        ("text", None),
        ("document", "application/pdf"),
        ("text", None),
    ]


@pytest.mark.parametrize(
    "screenshot",
    [
        "data:image/png;base64,@@@ not base64 @@@",
        "data:image/png,cGxhaW4=",  # not base64-flagged
        "iVBORw0KGgo=",  # bare base64 is not a data URL
        "/etc/passwd",  # a path is never read from HTTP input
        data_url(b"just text, not an image"),
        data_url(PDF),
        {"media_type": "image/png"},
        {"media_type": "image/png", "data": b64(png()), "url": "x"},
        12,
        ["not", "an", "image"],
    ],
    ids=[
        "bad-base64",
        "not-base64",
        "bare-base64",
        "path",
        "text",
        "pdf",
        "no-data",
        "extra-key",
        "number",
        "list",
    ],
)
def test_a_bad_image_is_422_naming_the_input(
    screenshot: Any, server: str, fake_anthropic: FakeAnthropic
) -> None:
    answer = httpx.post(
        f"{server}/v1/tasks/ticket", json={"message": "m", "screenshot": screenshot}
    )
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:promptcast:problem:invalid-input"
    assert problem["field"] == "screenshot"
    assert fake_anthropic.requests == []


@pytest.mark.parametrize(
    "screenshot",
    [lambda raw: data_url(raw), lambda raw: {"media_type": "image/png", "data": b64(raw)}],
    ids=["data-url", "object"],
)
def test_an_image_over_its_limit_is_413_before_any_request(
    screenshot: Callable[[bytes], Any],
    server: str,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "max_bytes", 1000)
    raw = png(50, 50) + bytes(2000)
    answer = httpx.post(
        f"{server}/v1/tasks/ticket", json={"message": "m", "screenshot": screenshot(raw)}
    )
    assert answer.status_code == 413, answer.text
    problem = answer.json()
    assert problem["type"] == "urn:promptcast:problem:media-too-large"
    assert problem["field"] == "screenshot"
    assert "over the limit of 1000 bytes" in problem["detail"]
    assert fake_anthropic.requests == []
    text = httpx.get(f"{server}/metrics").text
    assert metric(text, "promptcast_task_calls_total", task="ticket", status="413") == 1


def test_all_images_of_a_call_over_the_request_limit_is_413(
    server: str, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "MAX_REQUEST_MEDIA_BYTES", 2 * len(png()))
    body = {"photos": [data_url(png(seed=i)) for i in range(3)]}
    answer = httpx.post(f"{server}/v1/tasks/files", json=body)
    assert answer.status_code == 413, answer.text
    assert answer.json()["type"] == "urn:promptcast:problem:media-too-large"
    assert fake_anthropic.requests == []


def test_a_body_over_the_servers_limit_is_413_too(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    """The server's body limit (PROMPTCAST_MAX_BODY_BYTES, 1 MiB by default) comes first: a
    base64 image takes 4/3 of its size in the body."""
    registry = pc.load_tasks(write_task("ticket", TICKET).parent)
    with running(create_app(registry, tokens=[], max_body_bytes=20_000)) as url:
        body = {"message": "m", "screenshot": data_url(png() + bytes(30_000))}
        answer = httpx.post(f"{url}/v1/tasks/ticket", json=body)
    assert answer.status_code == 413
    assert answer.json()["type"] == "urn:promptcast:problem:body-too-large"
    assert fake_anthropic.requests == []


def test_openapi_shows_media_inputs_as_base64_data_urls(server: str) -> None:
    document = httpx.get(f"{server}/openapi.json").json()
    schemas = document["components"]["schemas"]
    ticket = next(s for name, s in schemas.items() if name.startswith("TicketInputs"))
    screenshot = ticket["properties"]["screenshot"]
    image = next(s for s in screenshot["anyOf"] if s.get("title") == "Image")
    forms = image["anyOf"]
    data_url_form = forms[0]
    assert data_url_form["type"] == "string"
    assert data_url_form["format"] == "data-url"
    assert data_url_form["contentEncoding"] == "base64"
    assert re.fullmatch(data_url_form["pattern"][1:], data_url(png()))
    assert re.fullmatch(data_url_form["pattern"][1:], data_url(gif()))
    assert not re.fullmatch(data_url_form["pattern"][1:], data_url(PDF))
    obj = next(f for f in forms if f["type"] == "object")
    assert obj["properties"]["data"]["contentEncoding"] == "base64"
    assert obj["properties"]["media_type"]["enum"] == list(media.IMAGE_TYPES)
    files = next(s for name, s in schemas.items() if name.startswith("FilesInputs"))
    assert files["properties"]["photos"]["items"]["title"] == "Image"
    run = document["paths"]["/v1/tasks/ticket"]["post"]
    assert "image or document" in run["responses"]["413"]["description"]
    described = httpx.get(f"{server}/v1/tasks/ticket").json()
    assert described["inputs"]["screenshot"]["type"] == "image | None"


def test_debug_log_line_describes_media_without_its_data(
    server: str, fake_anthropic: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="promptcast.server")
    fake_anthropic.reply(_text_reply("a ticket"))
    image = png(3, 3)
    answer = httpx.post(
        f"{server}/v1/tasks/ticket",
        json={"message": "It crashed", "screenshot": data_url(image)},
        headers={"x-request-id": "media-dbg"},
    )
    assert answer.status_code == 200, answer.text
    (line,) = [r for r in log_lines(caplog) if r.get("request_id") == "media-dbg"]
    assert line["inputs"]["message"] == "It crashed"
    assert b64(image) not in json.dumps(line)
    assert "image/png" in json.dumps(line["inputs"]["screenshot"])
