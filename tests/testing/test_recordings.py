"""Recordings are safe to make and replay anywhere: `promptcast record` never destroys a good
cassette, a replay needs no key and ignores the base URL, and every "record it with" hint is a
command that works.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner
from vcr.request import Request

import promptcast as pc
from promptcast import cli
from promptcast.cli import app
from promptcast.testing import FakeAnthropic, FakeOpenAI, error_reply
from promptcast.testing.cassettes import (
    PLACEHOLDER_KEYS,
    NoRecordingError,
    endpoint_matcher,
    placeholder_keys,
    project_cassette_dir,
    recording,
    replay,
)
from tests.conftest import ROOT

runner = CliRunner()
SHOUT = "---\ninputs: {text: str}\noutput: {loud: str}\n---\n{{ text }}\n"
EXAMPLE = ROOT / "cassettes" / "examples" / "translate" / "example-0.yaml"
KEY_VARS = sorted(PLACEHOLDER_KEYS)


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key anywhere in the environment."""
    for var in [*KEY_VARS, "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"]:
        monkeypatch.delenv(var, raising=False)


def record_shout(tmp_path: Path, out: Path, *extra: str) -> object:
    return runner.invoke(
        app, ["record", "shout", "-p", str(tmp_path), "-i", "text=hi", "--out", str(out), *extra]
    )


# --- 8: `promptcast record` never destroys a good recording ---------------------------------


@pytest.fixture
def good_cassette(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> Path:
    write_task("shout", SHOUT)
    out = tmp_path / "cassettes" / "shout.yaml"
    result = record_shout(tmp_path, out)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return out


def test_record_without_a_key_leaves_the_cassette_as_it_was(
    good_cassette: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = good_cassette.read_bytes()
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    result = record_shout(tmp_path, good_cassette)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "ANTHROPIC_API_KEY" in result.output  # type: ignore[attr-defined]
    assert f"{good_cassette} is unchanged" in result.output  # type: ignore[attr-defined]
    assert good_cassette.read_bytes() == before
    assert sorted(p.name for p in good_cassette.parent.iterdir()) == ["shout.yaml"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
    ],
)
def test_a_provider_error_does_not_overwrite_the_cassette(
    good_cassette: Path, tmp_path: Path, fake_anthropic: FakeAnthropic, status: int, kind: str
) -> None:
    before = good_cassette.read_bytes()
    fake_anthropic.reply(error_reply(status, kind, "refused"))
    result = record_shout(tmp_path, good_cassette)
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert str(status) in result.output  # type: ignore[attr-defined]
    assert good_cassette.read_bytes() == before
    assert sorted(p.name for p in good_cassette.parent.iterdir()) == ["shout.yaml"]


def test_recording_replaces_the_file_only_when_the_block_succeeds(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    task = pc.load_tasks(write_task("shout", SHOUT).parent)["shout"]
    path = tmp_path / "c" / "shout.yaml"
    path.parent.mkdir()
    path.write_text("version: 1\ninteractions: []\n")
    with pytest.raises(RuntimeError), recording(path):
        task.run(text="one")
        raise RuntimeError("the code after the call failed")
    assert path.read_text() == "version: 1\ninteractions: []\n"
    with recording(path):
        pass  # nothing recorded: nothing replaced
    assert path.read_text() == "version: 1\ninteractions: []\n"
    with recording(path):
        task.run(text="two")
    assert "two" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["shout.yaml"]


# --- 22: replay works anywhere ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://api.anthropic.com/v1/messages", "http://127.0.0.1:8123/v1/messages", True),
        (
            "https://api.anthropic.com/v1/messages",
            "https://gw.internal/anthropic/v1/messages",
            True,
        ),
        (
            "http://localhost:4000/v1/chat/completions",
            "https://api.openai.com/v1/chat/completions",
            True,
        ),
        ("https://api.openai.com/v1/chat/completions", "http://fake:1/chat/completions", True),
        ("https://api.anthropic.com/v1/messages", "https://api.anthropic.com/v1/complete", False),
        ("https://api.anthropic.com/v1/messages", "https://x/v1/messages/batches", False),
        ("https://api.openai.com/v1/chat/completions", "https://x/v1/completions", False),
        ("https://api.openai.com/v1/embeddings", "https://x/v1/chat/completions", False),
    ],
)
def test_requests_match_on_the_endpoint_path_not_the_host(a: str, b: str, same: bool) -> None:
    one, two = Request("POST", a, "{}", {}), Request("POST", b, "{}", {})
    if same:
        endpoint_matcher(one, two)
        endpoint_matcher(two, one)
    else:
        with pytest.raises(AssertionError):
            endpoint_matcher(one, two)


ELSEWHERE = [
    None,  # the provider's own URL
    "http://127.0.0.1:9",  # nothing listens there: a replay never connects
    "https://llm-gateway.internal:8443/anthropic",  # a proxy with a path prefix
]


@pytest.mark.parametrize("base_url", ELSEWHERE)
def test_a_cassette_recorded_against_a_fake_replays_anywhere_without_a_key(
    write_task: Callable[..., Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    base_url: str | None,
) -> None:
    task = pc.load_tasks(write_task("shout", SHOUT).parent)["shout"]
    path = tmp_path / "shout.yaml"
    with recording(path):
        recorded = task.run(text="hi")
    sent = len(fake_anthropic.requests)
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    if base_url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    with replay(path):
        assert task.run(text="hi").output == recorded.output
    assert len(fake_anthropic.requests) == sent
    assert "ANTHROPIC_API_KEY" not in os.environ


@pytest.mark.parametrize("base_url", ELSEWHERE)
def test_the_shipped_recordings_replay_behind_any_base_url_without_a_key(
    no_keys: None, monkeypatch: pytest.MonkeyPatch, base_url: str | None
) -> None:
    if base_url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    task = pc.builtin_tasks()["translate"]
    with replay(EXAMPLE):
        run = task.run(**task.spec.examples[0].inputs)
    assert run.output.translation
    assert not any(var in os.environ for var in KEY_VARS), "placeholders were not removed"


def test_an_openai_compatible_recording_replays_elsewhere_without_a_key(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = pc.builtin_tasks()["translate"].with_model("openai/gpt-4o-mini")
    path = tmp_path / "openai.yaml"
    with recording(path):
        recorded = task.run(text="Hallo")
    sent = len(fake_openai.requests)
    monkeypatch.delenv("OPENAI_API_KEY")
    pc.configure(models={"openai/gpt-4o-mini": {"base_url": "https://gateway.internal/openai/v1"}})
    with replay(path):
        assert task.run(text="Hallo").output == recorded.output
    assert len(fake_openai.requests) == sent
    assert "OPENAI_API_KEY" not in os.environ


def test_placeholders_never_replace_a_real_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "mine")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with replay(EXAMPLE):
        assert os.environ["ANTHROPIC_API_KEY"] == "mine"
        assert os.environ["OPENAI_API_KEY"] == PLACEHOLDER_KEYS["OPENAI_API_KEY"]
    assert os.environ["ANTHROPIC_API_KEY"] == "mine" and "OPENAI_API_KEY" not in os.environ


@pytest.mark.parametrize("base_url", ELSEWHERE)
def test_demo_replays_without_a_key_and_leaves_no_settings_behind(
    no_keys: None, monkeypatch: pytest.MonkeyPatch, base_url: str | None
) -> None:
    if base_url:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "3 tasks ran" in result.output
    assert not any(var in os.environ for var in KEY_VARS)
    assert pc.get_config().providers == {}


# --- 23: every "record it with" hint works ------------------------------------------------


def test_a_replay_miss_names_the_recording_call_and_it_works(
    write_task: Callable[..., Path], tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    task = pc.load_tasks(write_task("shout", SHOUT).parent)["shout"]
    path = tmp_path / "missing.yaml"
    with pytest.raises(NoRecordingError) as caught, replay(path):
        task.run(text="hi")
    message = str(caught.value)
    assert f"promptcast.testing.recording({str(path)!r})" in message
    assert f"promptcast record shout -i NAME=VALUE --out {path}" in message
    from promptcast.testing import recording as hinted  # the name the hint spells

    with hinted(str(path)):
        task.run(text="hi")
    with replay(path):
        assert task.run(text="hi").output.loud == "example"


def test_the_demo_hint_records_the_demo_cassette(
    no_keys: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = cli.demo_cassettes()
    monkeypatch.setattr(cli, "demo_cassettes", lambda: tmp_path)
    missing = runner.invoke(app, ["demo"])
    assert missing.exit_code == 1
    hint = missing.output.split("key set: ", 1)[1].split("\n")[0].strip()
    target = tmp_path / "extract_ticket" / "example-0.yaml"
    assert hint == f"promptcast record extract_ticket --example 0 --out {target}"
    with FakeAnthropic() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-demo-0123456789")
        recorded = runner.invoke(app, shlex.split(hint)[1:])
        assert recorded.exit_code == 0, recorded.output
    assert target.is_file()
    for name in ("answer_product_question", "translate"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "example-0.yaml").write_bytes(
            (shipped / name / "example-0.yaml").read_bytes()
        )
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_BASE_URL")
    replayed = runner.invoke(app, ["demo"])
    assert replayed.exit_code == 0, replayed.output


INI_FILES = {
    "pytest.ini": "[pytest]\npromptcast_cassette_dir = recordings\n",
    ".pytest.ini": "[pytest]\npromptcast_cassette_dir = recordings\n",
    "pyproject.toml": "[tool.pytest.ini_options]\npromptcast_cassette_dir = 'recordings'\n",
    "tox.ini": "[tox]\nenvlist = py\n[pytest]\npromptcast_cassette_dir = recordings\n",
    "setup.cfg": "[metadata]\nname = x\n[tool:pytest]\npromptcast_cassette_dir = recordings\n",
}


@pytest.mark.parametrize("name", sorted(INI_FILES))
def test_the_cassette_dir_comes_from_the_pytest_configuration(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(INI_FILES[name])
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    assert project_cassette_dir(tmp_path) == tmp_path / "recordings"
    assert project_cassette_dir(tmp_path / "tests" / "unit") == tmp_path / "recordings"


def test_the_first_pytest_configuration_wins_as_pytest_finds_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # not a pytest config
    (tmp_path / "tox.ini").write_text("[tox]\nenvlist = py\n")  # not one either
    (tmp_path / "sub").mkdir()
    assert project_cassette_dir(tmp_path / "sub") == tmp_path / "cassettes"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a config without the option
    assert project_cassette_dir(tmp_path / "sub") == tmp_path / "cassettes"
    (tmp_path / "sub" / "setup.cfg").write_text("[tool:pytest]\npromptcast_cassette_dir = rec\n")
    assert project_cassette_dir(tmp_path / "sub") == tmp_path / "sub" / "rec"


@pytest.mark.parametrize("where", [".", "tests"])
def test_record_example_writes_where_the_plugin_replays_from(
    write_task: Callable[..., Path],
    tmp_path: Path,
    fake_anthropic: FakeAnthropic,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    write_task(
        "greet",
        "---\ninputs: {name: str}\noutput: {hi: str}\nexamples:\n"
        "  - inputs: {name: Ada}\n---\nHi {{ name }}\n",
    )
    (tmp_path / "pyproject.toml").write_text(INI_FILES["pyproject.toml"])
    (tmp_path / "tests").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / where)
    result = runner.invoke(app, ["record", "greet", "--example", "0", "-p", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "recordings" / "examples" / "greet" / "example-0.yaml").is_file()
    assert not (tmp_path / where / "cassettes").exists()


def test_scan_cassettes_defaults_to_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pytest.ini").write_text(INI_FILES["pytest.ini"])
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "leak.yaml").write_text(
        "headers:\n  x-api-key:\n  - " + "sk-" + "ant-" + "a1B2" * 10 + "\n"
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["scan-cassettes"])
    assert result.exit_code == 1 and "recordings/leak.yaml:3" in result.output


def test_overlapping_placeholders_stay_until_the_last_block_ends(no_keys: None) -> None:
    """Two threads replaying at once: the first to finish must not pull the key from the other."""
    first, second = placeholder_keys(), placeholder_keys()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert os.environ["ANTHROPIC_API_KEY"] == PLACEHOLDER_KEYS["ANTHROPIC_API_KEY"]
    second.__exit__(None, None, None)
    assert not any(var in os.environ for var in KEY_VARS)
