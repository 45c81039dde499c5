"""Output modes (native, tool, prompted, auto), the per-provider schema transforms, thinking."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import promptcast as pc
from promptcast import _modes
from promptcast._schemas import (
    anthropic_schema,
    drop_strict_nulls,
    gemini_schema,
    json_object_schema,
    openai_strict_schema,
)
from promptcast.errors import BackendError, TaskDefinitionError
from promptcast.testing import FakeAnthropic, FakeOpenAI
from promptcast.testing._fake_anthropic import error_reply, message, text_block, tool_use_block
from promptcast.testing._fake_openai import chat_completion

# --- output models covering the schema features the transforms must handle ---------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    city: str | None = None


class Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Person(BaseModel):
    """A person, with every kind of field: nested, enum, union, Literal, optional, list."""

    name: str
    colour: Colour
    address: Address
    pet: Cat | Dog
    mood: Literal["happy", "sad"]
    nickname: str | None = None
    tags: list[str] = Field(default_factory=list)
    others: list[Address] = Field(default_factory=list)


class Constrained(BaseModel):
    """Keywords constrained decoding does not take."""

    age: int = Field(ge=0, le=150)
    code: str = Field(max_length=5, pattern=r"^[A-Z]+$")
    score: float = Field(gt=0, multiple_of=0.5)
    items: list[int] = Field(min_length=2, max_length=4)


DESCRIBED = ("minimum", "maximum", "exclusiveMinimum", "multipleOf", "maxLength", "pattern")


def walk(schema: Any) -> Iterator[dict[str, Any]]:
    """Every sub-schema (dict) of a JSON schema."""
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from walk(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from walk(value)


def objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in walk(schema) if s.get("type") == "object" or "properties" in s]


TASK = """
---
inputs:
  text: str
output: {output}
model: {model}
{extra}
---
{{% role "system" %}}Read the text.{{% endrole %}}
{{{{ text | fence("text") }}}}
"""


@pytest.fixture
def make_task(
    write_task: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pc.Task[Any]]:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))

    def make(
        output: str = "tests.test_output_modes:Person",
        model: str = "anthropic/claude-sonnet-4-6",
        **front: Any,
    ) -> pc.Task[Any]:
        extra = "\n".join(f"{key}: {json.dumps(value)}" for key, value in front.items())
        text = TASK.format(output=output, model=model, extra=extra)
        return pc.Task.from_file(write_task("person", text))

    return make


# --- Anthropic: native, tool, prompted -----------------------------------------------------------


def test_native_mode_sends_a_closed_json_schema_and_no_tools(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    run = make_task(output_mode="native").run(text="Ann, red, lives in Oslo")
    [sent] = fake_anthropic.requests
    fmt = sent["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    assert "tools" not in sent and "tool_choice" not in sent
    found = objects(fmt["schema"])
    assert len(found) >= 4  # Person, Address, Cat, Dog
    assert all(o["additionalProperties"] is False for o in found)
    assert isinstance(run.output, Person) and run.output_mode == "native"


@pytest.mark.parametrize("mode", ["native", "tool", "prompted"])
def test_each_mode_works_against_the_same_fake(
    mode: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    run = make_task(output_mode=mode).run(text="Ann")
    [sent] = fake_anthropic.requests
    assert isinstance(run.output, Person) and run.output_mode == mode
    assert ("tools" in sent) == (mode == "tool")
    assert ("output_config" in sent) == (mode == "native")
    if mode == "prompted":  # the schema is in the system block, after the task's own text
        assert sent["system"].startswith("Read the text.")
        assert '"Person"' in sent["system"] and "JSON schema" in sent["system"]


def test_prompted_mode_reads_json_in_a_code_fence_and_re_asks_prose(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    good = {
        "name": "Ann",
        "colour": "red",
        "address": {"street": "Main"},
        "pet": {"kind": "dog", "good": True},
        "mood": "happy",
    }
    fake_anthropic.reply(
        message([text_block("I think it is Ann.")]),
        message([text_block(f"```json\n{json.dumps(good)}\n```")]),
    )
    run = make_task(output_mode="prompted").run(text="Ann")
    assert run.attempts == 2 and run.output.name == "Ann"
    retry = fake_anthropic.requests[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "I think it is Ann."}
    assert "did not validate" in retry[-1]["content"]


@pytest.mark.parametrize(
    ("model", "configured", "expected"),
    [
        ("anthropic/claude-sonnet-4-6", None, "native"),
        ("anthropic/claude-opus-4-6", None, "native"),
        ("anthropic/claude-haiku-4-5", None, "native"),
        ("anthropic/claude-3-5-sonnet-20241022", None, "tool"),  # marked without support
        ("anthropic/claude-3-5-haiku-20241022", None, "tool"),
        ("anthropic/claude-sonnet-4-20250514", None, "tool"),
        ("anthropic/claude-sonnet-4-6", "tool", "tool"),  # configuration overrides the table
        ("anthropic/claude-3-5-sonnet-20241022", "native", "native"),
        ("anthropic/claude-sonnet-4-6", "prompted", "prompted"),
    ],
)
def test_auto_picks_native_where_the_capability_table_or_configuration_says_so(
    model: str,
    configured: str | None,
    expected: str,
    make_task: Callable[..., pc.Task[Any]],
    fake_anthropic: FakeAnthropic,
) -> None:
    if configured:
        pc.configure(models={model: {"output_mode": configured}})
    run = make_task(model=model).run(text="Ann")
    assert run.output_mode == expected
    [sent] = fake_anthropic.requests
    assert ("output_config" in sent) == (expected == "native")
    assert ("tools" in sent) == (expected == "tool")


def test_the_task_file_wins_over_model_and_global_configuration(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    pc.configure(output_mode="prompted", models={"anthropic/claude-sonnet-4-6": {}})
    assert make_task().run(text="a").output_mode == "prompted"  # global, for an auto task
    assert make_task(output_mode="tool").run(text="a").output_mode == "tool"


def test_the_mode_is_part_of_the_response_cache_key(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic, tmp_path: Path
) -> None:
    pc.configure(cache=f"sqlite:///{tmp_path / 'c.db'}")
    make_task(output_mode="tool").run(text="a")
    make_task(output_mode="tool").run(text="a")
    assert len(fake_anthropic.requests) == 1  # the second call was a cache hit
    make_task(output_mode="native").run(text="a")
    assert len(fake_anthropic.requests) == 2  # another mode: another key


@pytest.mark.parametrize("mode", ["auto", "native", "tool", "prompted"])
@pytest.mark.parametrize(
    "model", ["anthropic/claude-sonnet-4-6", "anthropic/claude-3-5-sonnet-20241022"]
)
def test_a_thinking_task_never_sends_a_forced_tool_choice(
    mode: str, model: str, make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    run = make_task(model=model, output_mode=mode, thinking={"budget_tokens": 2048}).run(text="a")
    [sent] = fake_anthropic.requests
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] > 2048  # room for the answer after the thinking
    assert sent.get("tool_choice", {}).get("type") != "tool"
    if mode == "auto":  # native where supported, else prompted: never a forced tool
        native = model.endswith("4-6")
        assert run.output_mode == ("native" if native else "prompted")


def test_thinking_tokens_are_counted_in_output_usage(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    thinking = {"type": "thinking", "thinking": "Hm.", "signature": "c2ln"}
    data = {
        "name": "Ann",
        "colour": "blue",
        "address": {"street": "x"},
        "pet": {"kind": "cat", "lives": 9},
        "mood": "sad",
    }
    fake_anthropic.reply(message([thinking, text_block(json.dumps(data))], output_tokens=900))
    run = make_task(output_mode="native", thinking={"budget_tokens": 1024}).run(text="a")
    assert run.output.pet == Cat(lives=9) and run.usage.output_tokens == 900


@pytest.mark.parametrize("bad", [{"output_mode": "json"}, {"thinking": {"budget_tokens": 10}}])
def test_bad_mode_and_thinking_keys_are_load_errors(
    bad: dict[str, Any], make_task: Callable[..., pc.Task[Any]]
) -> None:
    with pytest.raises(TaskDefinitionError):
        make_task(**bad)


# --- schema transforms ---------------------------------------------------------------------------


TRANSFORMS = [anthropic_schema, openai_strict_schema, gemini_schema, json_object_schema]


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("model", [Person, Constrained, Address])
def test_every_object_is_closed(transform: Callable[..., Any], model: type[BaseModel]) -> None:
    schema = transform(model)
    assert all(o["additionalProperties"] is False for o in objects(schema))


@pytest.mark.parametrize("transform", [anthropic_schema, openai_strict_schema, gemini_schema])
def test_unsupported_keywords_move_into_the_description(transform: Callable[..., Any]) -> None:
    schema = transform(Constrained)
    for node in walk(schema):
        assert not set(DESCRIBED) & set(node), node
    props = schema["properties"]
    assert "minimum: 0" in props["age"]["description"]
    assert "maximum: 150" in props["age"]["description"]
    assert "maxLength: 5" in props["code"]["description"]
    assert "pattern" in props["code"]["description"]
    assert "multipleOf: 0.5" in props["score"]["description"]
    assert "minItems: 2" in props["items"]["description"]
    assert Constrained.model_json_schema()["properties"]["age"]["minimum"] == 0  # a copy


def test_strict_schema_requires_every_property_and_makes_optional_ones_nullable() -> None:
    schema = openai_strict_schema(Person)
    for node in objects(schema):
        assert node["required"] == list(node["properties"])
    props = schema["properties"]
    assert {"type": "null"} in props["nickname"]["anyOf"]
    assert props["tags"]["type"] == ["array", "null"] and "default" not in props["tags"]
    address = schema["$defs"]["Address"]["properties"]["city"]
    assert {"type": "null"} in address["anyOf"]
    assert props["name"]["type"] == "string"  # required fields stay as they are
    assert all("oneOf" not in node for node in walk(schema))


def test_strict_nulls_for_optional_fields_become_defaults() -> None:
    data = {
        "name": "A",
        "colour": "red",
        "address": {"street": "s", "city": None},
        "pet": {"kind": "cat", "lives": 1},
        "mood": "happy",
        "nickname": None,
        "tags": None,
        "others": [{"street": "t", "city": None}],
    }
    person = Person.model_validate(drop_strict_nulls(data, Person))
    assert person.tags == [] and person.nickname is None and person.address.city is None


# --- a reply that breaks a moved keyword is re-asked ---------------------------------------------


def test_constraints_are_sent_as_descriptions_and_a_violation_is_re_asked(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    bad = {"age": -3, "code": "toolong", "score": 1.0, "items": [1, 2]}
    good = {"age": 30, "code": "AB", "score": 1.5, "items": [1, 2, 3]}
    fake_anthropic.reply(
        message([text_block(json.dumps(bad))]), message([text_block(json.dumps(good))])
    )
    task = make_task(output="tests.test_output_modes:Constrained", output_mode="native")
    run = task.run(text="x")
    sent = fake_anthropic.requests[0]["output_config"]["format"]["schema"]
    assert not any(set(DESCRIBED) & set(node) for node in walk(sent))
    assert run.attempts == 2 and run.output.age == 30
    feedback = fake_anthropic.requests[1]["messages"][-1]["content"]
    assert "age" in feedback and "code" in feedback


def test_a_refused_schema_names_the_keyword_the_field_and_the_mode_to_use(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.reply(
        error_reply(
            400,
            "invalid_request_error",
            "output_config.format.schema: keyword 'minimum' is not supported at properties.age",
        )
    )
    with pytest.raises(BackendError) as caught:
        make_task(output_mode="native").run(text="x")
    text = str(caught.value)
    assert "'minimum'" in text and "'age'" in text and "output_mode: tool" in text


# --- OpenAI-compatible (litellm) ----------------------------------------------------------------


def test_litellm_native_is_json_schema_strict(
    make_task: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    run = make_task(model="openai/gpt-4o-mini").run(text="Ann")
    [sent] = fake_openai.requests
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    for node in objects(schema):
        assert node["required"] == list(node["properties"])
        assert node["additionalProperties"] is False
    assert {"type": "null"} in schema["properties"]["nickname"]["anyOf"]
    assert "tools" not in sent
    assert run.output_mode == "native" and isinstance(run.output, Person)


def test_litellm_native_null_for_an_optional_field_gives_its_default(
    make_task: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    answer = {
        "name": "A",
        "colour": "red",
        "address": {"street": "s", "city": None},
        "pet": {"kind": "dog", "good": False},
        "mood": "sad",
        "nickname": None,
        "tags": None,
        "others": None,
    }
    fake_openai.reply(chat_completion(json.dumps(answer)))
    run = make_task(model="openai/gpt-4o-mini").run(text="Ann")
    assert run.attempts == 1 and run.output.tags == [] and run.output.others == []


def test_servers_that_take_only_json_object_get_it_with_the_schema(
    make_task: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    model = "hosted_vllm/meta-llama/Llama-3.1-8B"
    pc.configure(models={model: {"native_format": "json_object"}})
    run = make_task(model=model).run(text="Ann")
    [sent] = fake_openai.requests
    assert sent["response_format"]["type"] == "json_object"
    assert sent["response_format"]["schema"]["properties"]["name"] == {
        "title": "Name",
        "type": "string",
    }
    assert run.output_mode == "native"


@pytest.mark.parametrize(
    ("provider", "model", "form"),
    [
        ("local", "model.gguf", "json_object"),
        ("llama_cpp", "x", "json_object"),
        ("openai", "gpt-4o", "json_schema"),
        ("hosted_vllm", "m", "json_schema"),
    ],
)
def test_the_native_form_comes_from_the_capability_table(
    provider: str, model: str, form: str
) -> None:
    assert _modes.native_format(provider, model) == form


@pytest.mark.parametrize("mode", ["tool", "prompted"])
def test_litellm_tool_and_prompted_modes(
    mode: str, make_task: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    run = make_task(model="openai/gpt-4o-mini", output_mode=mode).run(text="Ann")
    [sent] = fake_openai.requests
    assert ("tools" in sent) == (mode == "tool") and "response_format" not in sent
    assert run.output_mode == mode and isinstance(run.output, Person)


@pytest.mark.parametrize("mode", ["tool", "native"])
def test_litellm_thinking_never_forces_a_tool(
    mode: str, make_task: Callable[..., pc.Task[Any]], fake_openai: FakeOpenAI
) -> None:
    make_task(model="openai/gpt-4o-mini", output_mode=mode, thinking={"budget_tokens": 1024}).run(
        text="a"
    )
    [sent] = fake_openai.requests
    assert sent.get("tool_choice") in (None, "auto")


# --- cassettes replay in their recorded mode -----------------------------------------------------


@pytest.mark.parametrize(
    ("bodies", "mode"),
    [
        ([{"tools": [{"name": "T"}], "tool_choice": {"type": "tool"}}], "tool"),
        ([{"output_config": {"format": {"type": "json_schema"}}}], "native"),
        ([{"response_format": {"type": "json_schema"}}], "native"),
        ([{"generationConfig": {"responseJsonSchema": {}}}], "native"),
        ([b"not json", {"messages": []}, json.dumps({"tools": [{}]})], "tool"),
        ([{"messages": []}], None),
    ],
)
def test_the_recorded_mode_is_read_from_the_recorded_requests(
    bodies: list[Any], mode: str | None
) -> None:
    assert _modes.recorded_mode(bodies) == mode


def test_a_tool_mode_cassette_replays_a_task_left_on_auto(tmp_path: Path) -> None:
    from promptcast.tasks import extract_ticket
    from promptcast.testing import replay

    root = Path(__file__).parent.parent / "cassettes" / "examples" / "extract_ticket"
    with replay(root / "example-0.yaml"):
        run = extract_ticket.run(
            message="Checkout page crashes since this morning, we lose sales!",
            customer_tier="business",
        )
    assert run.output_mode == "tool"
    assert _modes.choose("anthropic", "claude-sonnet-4-6", task_mode=None, has_output=True) == (
        "native"
    )


def test_a_tool_call_is_still_read_in_native_mode(
    make_task: Callable[..., pc.Task[Any]], fake_anthropic: FakeAnthropic
) -> None:
    data = {
        "name": "A",
        "colour": "red",
        "address": {"street": "s"},
        "pet": {"kind": "cat", "lives": 2},
        "mood": "happy",
    }
    fake_anthropic.reply(message([tool_use_block("Person", data)]))
    assert make_task(output_mode="native").run(text="x").output.name == "A"
