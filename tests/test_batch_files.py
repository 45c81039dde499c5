"""The files of a batch run: lock, torn-line repair, provider batch state."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast._batch_files import (
    ProviderBatchState,
    append_exclusively,
    cut_torn_line,
    read_state,
    state_path,
    write_state,
)
from promptcast.cli import app
from promptcast.testing import ScriptedBackend


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"", b""),
        (b"a\n", b"a\n"),
        (b"a\nbb\nccc", b"a\nbb\n"),
        (b"torn", b""),
        (b"one\n" + b"x" * 50, b"one\n"),  # the newline is several chunks back
        (b'\xe2\x80\xa8\n{"id": 1, "out', b"\xe2\x80\xa8\n"),  # U+2028 is not a line end
    ],
)
def test_cut_torn_line_keeps_whole_lines_only(data: bytes, kept: bytes, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(data)
    cut_torn_line(path, chunk=4)
    assert path.read_bytes() == kept


def test_the_lock_is_exclusive_between_handles_and_released_on_close(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with append_exclusively(path) as first:
        assert first is not None
        with append_exclusively(path) as second:
            assert second is None
    with append_exclusively(path) as again:
        assert again is not None


def test_state_round_trips_any_id_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = state_path(tmp_path / "out.jsonl")
    assert path.name == "out.jsonl.batch.json" and read_state(path) is None
    state = ProviderBatchState(
        "msgbatch_1", "label", "anthropic/x", "0" * 64, {"item-0": "a\u2028b", "item-1": "s\ud800"}
    )
    write_state(path, state)
    write_state(path, state)
    assert read_state(path) == state
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 2}', '{"version": 1, "batch_id": "x"}'])
def test_a_damaged_state_file_is_a_value_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(ValueError):
        read_state(path)


def test_cli_batch_into_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "labels.jinja").write_text(
        "---\ninputs: {text: str}\noutput: {label: str}\nmodel: test/labels\n---\n{{ text }}\n"
    )
    with pc.override(backends={"test/labels": ScriptedBackend(lambda request: {"label": "ok"})}):
        source = tmp_path / "in.jsonl"
        source.write_text('{"text": "a"}\n')
        out = tmp_path / "missing" / "out.jsonl"
        result = CliRunner().invoke(
            app, ["batch", "labels", str(source), "-o", str(out), "-p", str(tmp_path)]
        )
        assert result.exit_code == 1 and "No such file or directory" in result.output
        assert "Traceback" not in result.output
