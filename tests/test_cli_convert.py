"""`promptcast convert FILE... -o DIR` never replaces a task file unasked and never leaves DIR half
converted: every target is checked before any file is written, `--force` replaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app

runner = CliRunner()

PROMPTY = """\
---
name: {name}
model:
  api: chat
  configuration: {{type: openai, name: gpt-4o}}
inputs:
  question: {{type: string}}
---
system:
You answer questions about {name}.

user:
{{{{question}}}}
"""
DOTPROMPT = """\
---
input:
  schema:
    question: string
---
You answer questions about {name}. {{{{question}}}}
"""
OLD = "# hand-edited, do not lose\n"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name in ("billing", "shipping", "returns"):
        (folder / f"{name}.prompty").write_text(PROMPTY.format(name=name), encoding="utf-8")
    return folder


def _convert(*args: str | Path) -> tuple[int, list[str], str]:
    result = runner.invoke(app, ["convert", *(str(a) for a in args)])
    return result.exit_code, result.stderr.splitlines(), result.output


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def test_convert_writes_new_files(legacy: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    code, lines, output = _convert(*sorted(legacy.iterdir()), "-o", out)
    assert code == 0, output
    assert sorted(_snapshot(out)) == ["billing.jinja", "returns.jinja", "shipping.jinja"]
    assert lines == [f"wrote {out / n}.jinja" for n in ("billing", "returns", "shipping")]
    assert set(pc.load_tasks(out)) == {"billing", "returns", "shipping"}


@pytest.mark.parametrize("existing", [["billing"], ["returns"], ["billing", "shipping"]])
def test_convert_refuses_to_replace_an_existing_file_and_writes_nothing(
    legacy: Path, tmp_path: Path, existing: list[str]
) -> None:
    out = tmp_path / "prompts"
    out.mkdir()
    for name in existing:
        (out / f"{name}.jinja").write_text(OLD, encoding="utf-8")
    before = _snapshot(out)
    code, lines, output = _convert(*sorted(legacy.iterdir()), "-o", out)
    assert code == 1
    [line] = lines
    assert line.startswith("error: ") and line.endswith(
        "pass --force to replace " + ("it" if len(existing) == 1 else "them")
    )
    for name in existing:
        assert str(out / f"{name}.jinja") in line
    assert "Traceback" not in output
    assert _snapshot(out) == before  # no half-converted set: not one new file
    assert sorted(os.listdir(out)) == sorted(f"{n}.jinja" for n in existing)


def test_convert_refuses_an_existing_symlink_too(legacy: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    out.mkdir()
    (out / "billing.jinja").symlink_to(tmp_path / "nowhere.jinja")
    code, [line], _ = _convert(legacy / "billing.prompty", "-o", out)
    assert code == 1 and str(out / "billing.jinja") in line and "--force" in line


def test_force_replaces_existing_files(legacy: Path, tmp_path: Path) -> None:
    out = tmp_path / "prompts"
    out.mkdir()
    (out / "billing.jinja").write_text(OLD, encoding="utf-8")
    (out / "other.jinja").write_text(OLD, encoding="utf-8")
    code, lines, output = _convert(*sorted(legacy.iterdir()), "-o", out, "--force")
    assert code == 0, output
    assert "answer questions about billing" in (out / "billing.jinja").read_text(encoding="utf-8")
    assert (out / "other.jinja").read_text(encoding="utf-8") == OLD  # not ours: left alone
    assert len(lines) == 3
    (out / "other.jinja").unlink()
    assert set(pc.load_tasks(out)) == {"billing", "returns", "shipping"}


def test_force_still_writes_atomically(
    legacy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "prompts"
    out.mkdir()
    (out / "billing.jinja").write_text(OLD, encoding="utf-8")
    calls: list[Path] = []

    def spy(path: Path, text: str) -> None:
        calls.append(path)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("promptcast.cli.write_atomic", spy)
    code, [line], _ = _convert(legacy / "billing.prompty", "-o", out, "--force")
    assert code == 1 and "No space left on device" in line
    assert calls == [out / "billing.jinja"]
    assert (out / "billing.jinja").read_text(encoding="utf-8") == OLD


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a/chat.prompty", "b/chat.prompty"),  # same name in two folders
        ("a/chat.prompty", "a/chat.prompt"),  # Prompty and Dotprompt of one name
        ("a/Chat.prompty", "b/chat.prompt"),  # one file on a case-insensitive filesystem
        ("a/chat.prompty", "a/chat.prompty"),  # the same file twice
    ],
)
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_two_inputs_with_one_name_are_an_error_naming_both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
    second: str,
    force: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (first, second):
        Path(name).parent.mkdir(exist_ok=True)
        template = DOTPROMPT if name.endswith(".prompt") else PROMPTY
        Path(name).write_text(template.format(name=Path(name).stem), encoding="utf-8")
    code, lines, output = _convert(first, second, "-o", "out", *force)
    assert code == 1, output
    [line] = lines
    assert line.startswith(f"error: {Path(first)} and {Path(second)} both convert to ")
    assert "out" in line and "separate calls" in line
    assert not Path("out").exists()  # nothing written, not even the folder


def test_a_bad_input_after_good_ones_writes_nothing(legacy: Path, tmp_path: Path) -> None:
    (legacy / "zz_broken.prompty").write_text("---\ninputs: [\n---\nuser:\nhi\n", encoding="utf-8")
    out = tmp_path / "prompts"
    code, lines, _ = _convert(*sorted(legacy.iterdir()), "-o", out)
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert not out.exists()


def test_convert_help_names_force() -> None:
    result = runner.invoke(app, ["convert", "--help"], terminal_width=200)
    assert "--force" in result.output and "already exist" in result.output


@pytest.mark.parametrize("suffix", [".prompty", ".prompt"])
def test_a_byte_order_mark_converts_like_the_file_without_it(tmp_path: Path, suffix: str) -> None:
    template = PROMPTY if suffix == ".prompty" else DOTPROMPT
    text = template.format(name="billing")
    plain, marked = tmp_path / f"plain{suffix}", tmp_path / f"marked{suffix}"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())
    expected, got = _convert(plain), _convert(marked)
    assert got[0] == 0, got[1]
    assert got[2].replace("marked", "plain") == expected[2]


@pytest.mark.parametrize("suffix", [".prompty", ".prompt"])
def test_a_file_that_is_not_utf8_is_one_error_line_naming_it(tmp_path: Path, suffix: str) -> None:
    template = PROMPTY if suffix == ".prompty" else DOTPROMPT
    latin = tmp_path / f"latin{suffix}"
    latin.write_bytes(template.format(name="café").encode("latin-1"))
    code, lines, _ = _convert(latin, "-o", tmp_path / "out")
    assert code == 1
    [line] = lines
    assert line.startswith(f"error: {latin}: not UTF-8 text (byte 0xe9 at offset ")
    assert line.endswith("save it as UTF-8")
    assert not (tmp_path / "out").exists()
