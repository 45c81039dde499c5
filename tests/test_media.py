"""Images and documents as task inputs: coercion, sniffing, limits, placement in the prompt, the
provider blocks each backend sends, token estimates, cache keys and cassettes."""

from __future__ import annotations

import base64
import gc
import hashlib
import inspect
import json
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

import promptcast as pc
from promptcast import media
from promptcast.backends.base import ModelRequest
from promptcast.media import Document, Image, MediaTooLargeError
from promptcast.render import Prompt
from promptcast.task import _estimate_input_tokens
from promptcast.testing import FakeAnthropic, FakeOpenAI

# --- sample files, made here -------------------------------------------------------------------


def png(width: int = 2, height: int = 2, seed: int = 0) -> bytes:
    """A real PNG (grey pixels); `seed` changes the pixels, so the bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes([seed % 256]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def gif(width: int = 1, height: int = 1) -> bytes:
    return (
        b"GIF89a"
        + struct.pack("<HH", width, height)
        + b"\x80\x00\x00\x00\x00\x00\xff\xff\xff"
        + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
PDF = (
    b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [3 0 R 4 0 R] /Count 2>> endobj\n"
    b"3 0 obj <</Type /Page /Parent 2 0 R>> endobj\n4 0 obj <</Type /Page /Parent 2 0 R>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


TICKET = """\
---
inputs:
  message: str
  screenshot: {type: "image | None", default: null}
output: str
model: anthropic/claude-sonnet-4-6
---
{{ message | fence("message") }}
{% if screenshot %}The customer attached this screenshot: {{ screenshot }} (see above){% endif %}
"""

CONTRACT = """\
---
inputs:
  contract: document
output: str
model: anthropic/claude-sonnet-4-6
---
Read this contract: {{ contract }}
List the parties.
"""


@pytest.fixture(autouse=True)
def _close_litellm_clients() -> Iterator[None]:
    """litellm keeps the OpenAI clients it made in a cache: close them after each test, so their
    sockets are not left for the garbage collector to find during a later test (and collect
    what they left now)."""
    yield
    import sys

    if "litellm" in sys.modules:
        cache = sys.modules["litellm"].in_memory_llm_clients_cache
        for client in list(cache.cache_dict.values()):
            close = getattr(client, "close", None)
            if close is not None and not inspect.iscoroutinefunction(close):
                close()
        cache.flush_cache()
    with warnings.catch_warnings():  # what an SDK's cached client or loop left, found now
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def ticket(write_task: Callable[..., Path]) -> pc.Task[Any]:
    return pc.Task.from_file(write_task("ticket", TICKET))


def _text_reply(text: str = "ok") -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 2},
    }


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bytes", "path", "data_url", "mapping", "image", "bytearray"])
def test_every_form_gives_the_same_image(form: str, tmp_path: Path) -> None:
    raw = png()
    path = tmp_path / "crash.png"
    path.write_bytes(raw)
    value: Any = {
        "bytes": raw,
        "bytearray": bytearray(raw),
        "path": path,
        "data_url": data_url(raw),
        "mapping": {"media_type": "image/png", "data": base64.b64encode(raw).decode()},
        "image": Image(raw),
    }[form]
    image = Image.coerce(value)
    assert (image.data, image.media_type, image.size) == (raw, "image/png", len(raw))
    assert image == Image(raw)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(png(), "image/png"), (gif(), "image/gif"), (JPEG, "image/jpeg"), (WEBP, "image/webp")],
)
@pytest.mark.parametrize("claimed", ["image/png", "image/jpeg", "application/pdf", "text/plain"])
def test_the_media_type_is_sniffed_never_taken_from_the_caller(
    data: bytes, expected: str, claimed: str
) -> None:
    assert Image.coerce(data_url(data, claimed)).media_type == expected
    if claimed in media.IMAGE_TYPES:
        mapping = {"media_type": claimed, "data": base64.b64encode(data).decode()}
        assert Image.coerce(mapping).media_type == expected


def test_a_claimed_media_type_outside_the_accepted_ones_is_refused() -> None:
    with pytest.raises(ValueError, match="media_type must be one of image/png"):
        Image.coerce({"media_type": "text/html", "data": base64.b64encode(png()).decode()})


@pytest.mark.parametrize("kind", [Image, Document])
@given(data=st.data())
@settings(max_examples=60, deadline=None, derandomize=True)
def test_every_string_the_json_schema_allows_is_accepted(kind: type[Any], data: Any) -> None:
    """The OpenAPI patterns promise what the validator takes: a generated data URL or base64
    payload that matches them always validates (Schemathesis checks the same over HTTP)."""
    schema = TypeAdapter(kind).json_schema()
    string, _, obj = schema["anyOf"]
    value = data.draw(st.from_regex(string["pattern"], fullmatch=True))
    assert Image.coerce(value) if kind is Image else Document.coerce(value)
    payload = data.draw(st.from_regex(obj["properties"]["data"]["pattern"], fullmatch=True))
    assert kind.coerce({"data": payload}).media_type in kind.accepted


def test_a_png_named_file_holding_a_gif_is_a_gif(tmp_path: Path) -> None:
    path = tmp_path / "crash.png"
    path.write_bytes(gif())
    assert Image.coerce(path).media_type == "image/gif"


@pytest.mark.parametrize(
    "data",
    [b"just some text\n", b"%PDF-1.4 not an image", b"\x00\x01\x02\x03garbage", b"", PDF],
    ids=["text", "pdf-header", "binary", "empty", "pdf"],
)
def test_what_is_not_an_image_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"not an image promptcast can send|no known type"):
        Image(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [(PDF, "application/pdf"), (b"Terms: pay in 30 days.\n", "text/plain")],
)
def test_documents_are_pdf_or_text(data: bytes, expected: str) -> None:
    assert Document(data).media_type == expected


@pytest.mark.parametrize("data", [png(), b"\x00\x01binary\x02", b"tab\x07bell"])
def test_what_is_not_a_document_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a document"):
        Document(data)


@pytest.mark.parametrize(
    "text",
    [
        "/etc/passwd",
        "crash.png",
        "data:image/png,not-base64-flagged",
        "data:image/png;base64,@@@not base64@@@",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
    ],
)
def test_text_is_a_data_url_or_an_http_url_never_a_file_path(text: str) -> None:
    with pytest.raises(ValueError):
        Image.coerce(text)


def test_urls_are_kept_for_the_provider_to_fetch() -> None:
    image = Image.coerce("https://example.com/crash.png")
    assert (image.url, image.data, image.media_type) == (
        "https://example.com/crash.png",
        None,
        None,
    )
    assert image.data_url == "https://example.com/crash.png"


def test_an_image_is_not_a_document() -> None:
    with pytest.raises(ValueError, match="expected a document, got an image"):
        Document.coerce(Image(png()))


@pytest.mark.parametrize("form", ["bytes", "path", "data_url", "mapping"])
def test_an_image_over_the_limit_is_refused_before_it_is_read(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "max_bytes", 1000)
    big = png(200, 200, seed=7) + b"\x00" * 1000
    path = tmp_path / "big.png"
    path.write_bytes(big)
    value: Any = {
        "bytes": big,
        "path": path,
        "data_url": data_url(big),
        "mapping": {"data": base64.b64encode(big).decode()},
    }[form]
    with pytest.raises(MediaTooLargeError, match=r"over the limit of 1000 bytes"):
        Image.coerce(value)


# --- the task: validation, rendering and the provider blocks --------------------------------------


@pytest.mark.parametrize("form", ["path", "bytes", "data_url", "image"])
def test_a_png_reaches_anthropic_as_one_image_block_at_its_place(
    form: str, ticket: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    raw = png(3, 2)
    path = tmp_path / "crash.png"
    path.write_bytes(raw)
    value = {"path": path, "bytes": raw, "data_url": data_url(raw), "image": Image(raw)}[form]
    fake_anthropic.reply(_text_reply())
    assert ticket(message="Checkout crashes", screenshot=value) == "ok"
    (message,) = fake_anthropic.requests[0]["messages"]
    blocks = message["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "text"]
    assert blocks[0]["text"].endswith("The customer attached this screenshot: ")
    assert blocks[1] == {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(raw).decode(),
        },
    }
    assert blocks[2]["text"] == " (see above)"
    assert fake_anthropic.request_headers[0]["x-promptcast-media"].startswith("screenshot=sha256:")


def test_a_gif_named_png_is_sent_as_gif(
    ticket: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    path = tmp_path / "crash.png"
    path.write_bytes(gif())
    fake_anthropic.reply(_text_reply())
    ticket(message="m", screenshot=path)
    block = fake_anthropic.requests[0]["messages"][0]["content"][1]
    assert block["source"]["media_type"] == "image/gif"


def test_without_the_optional_image_the_prompt_stays_text(
    ticket: pc.Task[Any], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(_text_reply())
    ticket(message="no picture")
    assert isinstance(fake_anthropic.requests[0]["messages"][0]["content"], str)
    assert "x-promptcast-media" not in fake_anthropic.request_headers[0]


@pytest.mark.parametrize(
    ("data", "source"),
    [
        (
            PDF,
            {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(PDF).decode(),
            },
        ),
        (
            b"Party A and Party B agree.",
            {"type": "text", "media_type": "text/plain", "data": "Party A and Party B agree."},
        ),
    ],
    ids=["pdf", "text"],
)
def test_a_document_is_a_document_block(
    data: bytes,
    source: dict[str, str],
    write_task: Callable[..., Path],
    fake_anthropic: FakeAnthropic,
) -> None:
    task = pc.Task.from_file(write_task("contract", CONTRACT))
    fake_anthropic.reply(_text_reply())
    task(contract=data)
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    assert blocks[1] == {"type": "document", "source": source}
    assert [b["type"] for b in blocks] == ["text", "document", "text"]


@pytest.mark.parametrize("kind", ["image", "document"])
def test_urls_become_url_sources(
    kind: str, write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    task = pc.Task.from_file(
        write_task("look", f"---\ninputs:\n  it: {kind}\noutput: str\n---\nLook: {{{{ it }}}}\n")
    )
    fake_anthropic.reply(_text_reply())
    task(it=f"https://example.com/{kind}")
    block = fake_anthropic.requests[0]["messages"][0]["content"][1]
    assert block == {"type": kind, "source": {"type": "url", "url": f"https://example.com/{kind}"}}


def test_a_list_of_images_places_each_in_order(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic
) -> None:
    task = pc.Task.from_file(
        write_task(
            "compare",
            '---\ninputs:\n  photos: "list[image]"\noutput: str\n---\n'
            "{% for photo in photos %}Photo {{ loop.index }}: {{ photo }}\n{% endfor %}Compare them.",
        )
    )
    fake_anthropic.reply(_text_reply())
    task(photos=[png(seed=1), gif(), png(seed=2)])
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    assert [b["type"] for b in blocks] == [
        "text",
        "image",
        "text",
        "image",
        "text",
        "image",
        "text",
    ]
    types = [b["source"]["media_type"] for b in blocks if b["type"] == "image"]
    assert types == ["image/png", "image/gif", "image/png"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (b"this is a text file, not a picture", "not an image"),
        ("crash.png", "data URL"),
        (12, "not int"),
        (PDF, "application/pdf data is not an image"),
    ],
)
def test_a_wrong_image_is_a_task_input_error_before_any_request(
    value: Any, match: str, ticket: pc.Task[Any], fake_anthropic: FakeAnthropic
) -> None:
    with pytest.raises(pc.TaskInputError, match=match) as caught:
        ticket(message="m", screenshot=value)
    assert caught.value.field == "screenshot"
    assert fake_anthropic.requests == []


@pytest.mark.parametrize("form", ["bytes", "path", "data_url"])
def test_an_image_over_the_limit_is_refused_before_any_request(
    form: str,
    ticket: pc.Task[Any],
    fake_anthropic: FakeAnthropic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "max_bytes", 500)
    big = png(100, 100) + b"\x00" * 600
    path = tmp_path / "big.png"
    path.write_bytes(big)
    value = {"bytes": big, "path": path, "data_url": data_url(big)}[form]
    with pytest.raises(MediaTooLargeError, match="over the limit") as caught:
        ticket(message="m", screenshot=value)
    assert caught.value.field == "screenshot"
    assert isinstance(caught.value, pc.TaskInputError)
    assert fake_anthropic.requests == []


def test_all_media_of_a_call_together_have_a_limit(
    write_task: Callable[..., Path], fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "MAX_REQUEST_MEDIA_BYTES", 2 * len(png(seed=1)))
    task = pc.Task.from_file(
        write_task(
            "many", '---\ninputs:\n  photos: "list[image]"\noutput: str\n---\n{{ photos[0] }}'
        )
    )
    with pytest.raises(MediaTooLargeError, match="together, over the limit") as caught:
        task(photos=[png(seed=1), png(seed=2), png(seed=3)])
    assert caught.value.task == "many"
    assert fake_anthropic.requests == []


def test_the_same_task_on_an_openai_compatible_fake_sends_image_url(
    ticket: pc.Task[Any], fake_openai: FakeOpenAI
) -> None:
    raw = png()
    assert ticket.with_model("openai/gpt-4o-mini")(message="m", screenshot=raw)
    content = fake_openai.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[1] == {"type": "image_url", "image_url": {"url": data_url(raw)}}


@pytest.mark.parametrize("data", [PDF, b"Party A pays Party B."], ids=["pdf", "text"])
def test_documents_on_an_openai_compatible_fake(
    data: bytes, write_task: Callable[..., Path], fake_openai: FakeOpenAI
) -> None:
    task = pc.Task.from_file(write_task("contract", CONTRACT)).with_model("openai/gpt-4o-mini")
    task(contract=data)
    content = fake_openai.requests[0]["messages"][0]["content"]
    part = content[1]
    if data == PDF:
        assert part["type"] == "file"
        assert part["file"]["file_data"] == data_url(PDF, "application/pdf")
    else:
        assert part == {
            "type": "text",
            "text": '<document name="contract">\nParty A pays Party B.\n</document>',
        }


# --- load-time checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ('{{ shot | fence("shot") }}', "cannot go inside fence"),
        ("{{ (shot) | fence }}", "cannot go inside fence"),
        ('{% role "system" %}Look: {{ shot }}{% endrole %}', "cannot go in the system role"),
        ('{% role "system" %}{% if shot %}{{ shot }}{% endif %}{% endrole %}', "system role"),
    ],
)
@pytest.mark.parametrize("kind", ["image", "document", '"image | None"', '"list[image]"'])
def test_media_inside_fence_or_the_system_role_is_a_load_error(
    template: str, match: str, kind: str, write_task: Callable[..., Path]
) -> None:
    path = write_task("bad", f"---\ninputs:\n  shot: {kind}\noutput: str\n---\n{template}\n")
    with pytest.raises(pc.TaskDefinitionError, match=match) as caught:
        pc.Task.from_file(path)
    assert caught.value.line == 6
    from promptcast.spec import check_task_file

    assert any(match in str(problem) for problem in check_task_file(path))


def test_media_reaching_fence_or_system_at_run_time_is_an_input_error(
    write_task: Callable[..., Path],
) -> None:
    """Through a variable the load-time check cannot follow: refused when rendered."""
    aliased = pc.Task.from_file(
        write_task(
            "alias",
            '---\ninputs:\n  shot: image\noutput: str\n---\n{% set s = shot %}{{ s | fence("x") }}',
        )
    )
    with pytest.raises(pc.TaskInputError, match="fence"):
        aliased.render(shot=png())
    in_system = pc.Task.from_file(
        write_task(
            "sys",
            '---\ninputs:\n  shots: "list[image]"\noutput: str\n---\n'
            '{% role "system" %}{% for s in shots %}{{ s }}{% endfor %}{% endrole %}Hi',
        )
    )
    with pytest.raises(pc.TaskInputError, match="system role"):
        in_system.render(shots=[png()])


@pytest.mark.parametrize(
    ("kind", "value"),
    [("image", png()), ('"image | None"', None), ('"list[image]"', [png()]), ("document", PDF)],
)
def test_input_types_and_defaults(kind: str, value: Any, write_task: Callable[..., Path]) -> None:
    task = pc.Task.from_file(
        write_task("t", f"---\ninputs:\n  it: {kind}\noutput: str\n---\nSee {{{{ it }}}}\n")
    )
    prompt = task.render(it=value)
    content = prompt.messages[0]["content"]
    assert isinstance(content, list if value is not None else str)


def test_an_optional_image_defaults_to_none(ticket: pc.Task[Any]) -> None:
    assert ticket.spec.inputs["screenshot"].default is None
    assert ticket.render(message="x").messages[0]["content"] == "<message>\nx\n</message>"


def test_typed_binding_takes_pc_image(write_task: Callable[..., Path]) -> None:
    path = write_task("ticket", TICKET)

    @pc.task(path)
    def ticket(message: str, screenshot: pc.Image | None = None) -> str: ...

    prompt = ticket.render("m", pc.Image(png()))
    assert prompt.messages[0]["content"][1]["type"] == "media"  # type: ignore[index]


# --- token estimates, cache keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "anthropic", "openai"),
    [
        ((200, 200), 54, 85 + 170),  # 200*200/750 = 53.3; one 512 px tile
        ((1000, 1000), 1334, 85 + 170 * 4),  # 1e6/750; short side to 768: 2x2 tiles
        ((4000, 3000), 1534, 85 + 170 * 4),  # scaled to 1.15 MP; to 2048x1536, then 1024x768
        ((3000, 500), 547, 85 + 170 * 4),  # long side to 1568; to 2048x341: 4x1 tiles
        ((1, 1), 1, 85 + 170),
    ],
)
def test_image_tokens_follow_each_providers_formula(
    size: tuple[int, int], anthropic: int, openai: int
) -> None:
    assert media._anthropic_image_tokens(*size) == anthropic
    assert media._openai_image_tokens(*size) == openai


@pytest.mark.parametrize("size", [(1, 1), (200, 100), (640, 480)])
def test_the_estimate_reads_the_size_from_the_image(size: tuple[int, int]) -> None:
    image = Image(png(*size))
    assert image.dimensions == size
    assert media.estimate_tokens(image, "anthropic") == media._anthropic_image_tokens(*size)
    assert media.estimate_tokens(image, "openai") == media._openai_image_tokens(*size)


def test_pdf_tokens_count_pages() -> None:
    assert Document(PDF).pages == 2
    assert media.estimate_tokens(Document(PDF)) == 6000


def test_the_budget_estimate_counts_the_image(ticket: pc.Task[Any]) -> None:
    big = ticket.render(message="m", screenshot=png(1000, 1000))
    small = ticket.render(message="m", screenshot=png(10, 10))

    def estimate(prompt: Prompt, provider: str) -> int:
        request = ModelRequest(model="m", prompt=prompt, output_model=None)
        return _estimate_input_tokens(request, provider)

    assert estimate(big, "anthropic") - estimate(small, "anthropic") == 1334 - 1
    assert estimate(big, "openai") - estimate(small, "openai") == 765 - 255


def test_the_response_cache_keys_on_the_image_content(
    ticket: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    pc.configure(cache=f"sqlite:///{tmp_path / 'cache.db'}")
    fake_anthropic.reply(_text_reply("first"), _text_reply("second"))
    assert ticket(message="m", screenshot=png(seed=1)) == "first"
    assert ticket(message="m", screenshot=png(seed=1)) == "first"  # a hit
    assert ticket(message="m", screenshot=png(seed=2)) == "second"  # another image: a miss
    assert len(fake_anthropic.requests) == 2


# --- cassettes ----------------------------------------------------------------------------------


def big_png(seed: int) -> bytes:
    """A PNG whose base64 is long enough to be stored as a hash in a cassette."""
    return png(seed=seed) + bytes((i * (seed + 3)) % 256 for i in range(3000))


@pytest.mark.parametrize("model", ["anthropic/claude-sonnet-4-6", "openai/gpt-4o-mini"])
def test_a_cassette_with_an_image_replays_and_another_image_is_a_named_mismatch(
    model: str,
    ticket: pc.Task[Any],
    fake_anthropic: FakeAnthropic,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
) -> None:
    from promptcast.testing.cassettes import NoRecordingError, recording, replay

    task = ticket.with_model(model)
    path = tmp_path / "ticket.yaml"
    fake_anthropic.reply(_text_reply("recorded"))
    with recording(path):
        recorded = task(message="It crashed", screenshot=big_png(1))
    text = path.read_text()
    assert base64.b64encode(big_png(1)).decode()[:200] not in text  # stored as a hash
    stored = json.dumps(yaml.safe_load(text)["interactions"][0]["request"]["parsed_body"])
    assert f"[sha256:{Image(big_png(1)).sha256}, {len(big_png(1))} bytes]" in stored
    assert len(text) < 6000  # readable: the image is not in the file

    fake_anthropic.replies.clear()
    fake_openai.replies.clear()
    sent = len(fake_anthropic.requests) + len(fake_openai.requests)
    with replay(path):
        assert task(message="It crashed", screenshot=big_png(1)) == recorded
    with pytest.raises(NoRecordingError) as caught, replay(path):
        task(message="It crashed", screenshot=big_png(2))
    assert len(fake_anthropic.requests) + len(fake_openai.requests) == sent  # nothing sent
    message = str(caught.value)
    assert "input 'screenshot'" in message
    assert Image(big_png(1)).sha256[:12] in message and Image(big_png(2)).sha256[:12] in message
    assert "[image" in message  # the diff shows the image as a short label, not base64
    assert base64.b64encode(big_png(2)).decode()[:100] not in message


def test_short_payloads_stay_as_they_are_in_a_cassette() -> None:
    from promptcast.testing.cassettes import hashed_media

    long = base64.b64encode(bytes(range(256)) * 3).decode()
    digest = f"[sha256:{hashlib.sha256(bytes(range(256)) * 3).hexdigest()}, 768 bytes]"
    kept = [
        {"type": "text", "text": "x" * 600},  # long text, even base64-looking, is not media
        {"type": "text", "text": long},
        {"type": "base64", "data": "QUJD"},  # short media stays inline
        {"url": "data:image/png;base64,QUJD"},
    ]
    assert hashed_media({"messages": kept}) == {"messages": kept}
    assert hashed_media({"type": "base64", "data": long})["data"] == digest
    assert hashed_media({"mime_type": "image/png", "data": long})["data"] == digest
    assert hashed_media({"url": "data:image/png;base64," + long}) == {
        "url": "data:image/png;base64," + digest
    }


# --- the command line and batch files -----------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "render"])
def test_cli_reads_an_image_input_from_at_path(
    command: str,
    write_task: Callable[..., Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    write_task("ticket", TICKET)
    (tmp_path / "crash.png").write_bytes(gif())  # named .png, holds a GIF
    monkeypatch.chdir(tmp_path)
    fake_anthropic.reply(_text_reply("filed"))
    args = [command, "ticket", "-p", str(tmp_path), "-i", "message=It crashed"]
    result = CliRunner().invoke(app, [*args, "-i", "screenshot=@crash.png"])
    assert result.exit_code == 0, result.output
    if command == "run":
        block = fake_anthropic.requests[0]["messages"][0]["content"][1]
        assert block["source"]["media_type"] == "image/gif"
    else:
        assert "[image]" in result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("@missing.png", "cannot read image file 'missing.png'"),
        ("@notes.txt", "text/plain data is not an image"),
        ("crash.png", "data URL"),
    ],
)
def test_cli_media_input_errors_name_the_input(
    value: str,
    message: str,
    write_task: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    write_task("ticket", TICKET)
    (tmp_path / "notes.txt").write_text("not a picture")
    monkeypatch.chdir(tmp_path)
    args = ["render", "ticket", "-p", str(tmp_path), "-i", "message=m", "-i"]
    result = CliRunner().invoke(app, [*args, f"screenshot={value}"])
    assert result.exit_code == 1
    assert "'screenshot'" in result.output and message in result.output


def test_cli_repeats_at_path_for_a_list_of_images(
    write_task: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from promptcast.cli import app

    write_task("many", '---\ninputs:\n  photos: "list[image]"\noutput: str\n---\n{{ photos }}')
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.gif").write_bytes(gif())
    monkeypatch.chdir(tmp_path)
    args = ["render", "many", "-p", str(tmp_path), "-i", "photos=@a.png", "-i", "photos=@b.gif"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("[image]") == 2


async def test_batch_lines_take_paths_relative_to_the_input_file_or_data_urls(
    ticket: pc.Task[Any], fake_anthropic: FakeAnthropic, tmp_path: Path, close_async_clients: None
) -> None:
    from promptcast.batch import run_file

    shots = tmp_path / "inputs" / "shots"
    shots.mkdir(parents=True)
    (shots / "1.png").write_bytes(png())
    (shots / "2.png").write_bytes(gif())
    source = tmp_path / "inputs" / "tickets.jsonl"
    lines = [
        {"id": "a", "message": "m1", "screenshot": "shots/1.png"},
        {"id": "b", "message": "m2", "screenshot": "shots/2.png"},
        {"id": "c", "message": "m3", "screenshot": data_url(png(seed=9))},
        {"id": "d", "message": "m4"},
        {"id": "e", "message": "m5", "screenshot": "shots/missing.png"},
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fake_anthropic.handler = lambda request: _text_reply("done")
    out = tmp_path / "out.jsonl"
    stats = await run_file(ticket, source, out, concurrency=1)
    results = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert results["e"]["error"]["type"] == "TaskInputError"
    assert "missing.png" in results["e"]["error"]["message"]
    assert all(results[k]["output"] == "done" for k in "abcd")
    assert stats.failed == 1
    sent = sorted(
        next(
            (
                b["source"]["media_type"]
                for b in r["messages"][0]["content"]
                if b["type"] == "image"
            ),
            "none",
        )
        if isinstance(r["messages"][0]["content"], list)
        else "none"
        for r in fake_anthropic.requests
    )
    assert sent == ["image/gif", "image/png", "image/png", "none"]


def test_batch_media_paths_leave_urls_and_objects_alone(tmp_path: Path) -> None:
    from promptcast._batch_files import media_paths

    inputs = {
        "a": "x.png",
        "b": [data_url(png()), "y.png", "https://e.com/z.png"],
        "c": {"data": "QUJD"},
        "d": "text",
    }
    located = media_paths(inputs, frozenset({"a", "b", "c"}), tmp_path)
    assert located == {
        "a": tmp_path / "x.png",
        "b": [data_url(png()), tmp_path / "y.png", "https://e.com/z.png"],
        "c": {"data": "QUJD"},
        "d": "text",
    }


# --- the input aliases typegen writes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "cls"), [(media.ImageInput, Image), (media.DocumentInput, Document)]
)
def test_the_input_aliases_are_their_classes_at_run_time(alias: Any, cls: type[Any]) -> None:
    """So a signature annotated with them equals the task file's types (`@pc.task`'s check), and
    as a pydantic type each validates from every form it names for a type checker."""
    assert alias is cls
    raw = png() if cls is Image else PDF
    forms: list[Any] = [
        raw,
        bytearray(raw),
        memoryview(raw),
        data_url(raw),
        {"data": base64.b64encode(raw).decode()},
        cls(raw),
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(alias)
    assert {adapter.validate_python(form) for form in forms} == {cls(raw)}


def test_a_function_annotated_with_image_input_binds_to_its_task(
    write_task: Callable[..., Path],
) -> None:
    path = write_task("ticket", TICKET)

    @pc.task(path)
    def ticket(*, message: str, screenshot: media.ImageInput | None = None) -> str:
        raise NotImplementedError

    assert ticket.render(message="m", screenshot=png()).messages


@pytest.mark.parametrize(
    ("typed", "cls"), [(media.ImageData, Image), (media.DocumentData, Document)]
)
def test_the_typed_mapping_forms_name_exactly_the_accepted_media_types(
    typed: Any, cls: type[Any]
) -> None:
    import typing

    hints = typing.get_type_hints(typed)
    assert typing.get_args(hints["media_type"]) == cls.accepted
    # (with postponed annotations, __required_keys__ cannot see Required: read the hint)
    assert typing.get_type_hints(typed, include_extras=True)["data"] == typing.Required[str]
