"""Package hygiene: exports, lazy imports, typed usage, no secrets in recordings, no network."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import promptcast as pc
from tests.conftest import ROOT

HEAVY = (
    "anthropic",
    "instructor",
    "litellm",
    "httpx",
    "httpx2",
    "genai_prices",
    "openai",
    "typer",
    "rich",
    "vcr",
)


def test_all_is_sorted_and_complete() -> None:
    assert pc.__all__ == sorted(pc.__all__)
    public = {
        name
        for name, value in vars(pc).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } | {"backends"}  # the one public submodule: pc.backends.AnthropicBackend(client=…)
    assert public - {"annotations", "version", "PackageNotFoundError"} == set(pc.__all__) - {
        "__version__"
    }


def test_import_promptcast_loads_no_provider_sdk() -> None:
    code = f"import sys, promptcast; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_typed_example_passes_mypy_strict() -> None:
    from mypy import api

    stdout, stderr, status = api.run(["--strict", str(ROOT / "examples" / "typed_usage.py")])
    assert status == 0, stdout + stderr


def test_cassettes_hold_no_secrets() -> None:
    from promptcast.testing.cassettes import find_secrets

    assert sorted((ROOT / "cassettes").rglob("*.yaml")), "no cassettes found"
    assert find_secrets([ROOT / "cassettes"]) == []


def test_network_is_blocked_except_loopback() -> None:
    with socket.socket() as sock, pytest.raises(Exception, match=r"(?i)network"):
        sock.connect(("203.0.113.7", 443))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    start = time.perf_counter()
    socket.create_connection(server.getsockname(), timeout=1).close()
    server.close()
    assert time.perf_counter() - start < 1


def test_scripted_double_is_not_collected_by_pytest() -> None:
    from promptcast.testing import FakeAnthropic, ScriptedBackend

    assert ScriptedBackend.__test__ is False and FakeAnthropic.__test__ is False


def test_builtin_prompt_files_ship_inside_the_package() -> None:
    names = {p.stem for p in (Path(pc.__file__).parent / "prompts").glob("*.jinja")}
    assert {
        "extract_ticket",
        "answer_product_question",
        "translate",
        "summarize",
        "classify",
    } <= names
