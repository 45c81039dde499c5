"""The README: every block is run or labelled, every command it names exists, the harness that
runs it catches what it should, and what it says matches the code (item 21)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import typer.main

import promptcast as pc
from promptcast.cli import app
from promptcast.testing import ScriptedBackend
from tests.conftest import ROOT
from tests.readme_harness import (
    NOT_RUN_AS_WRITTEN,
    OFFLINE,
    SUBSTITUTIONS,
    Block,
    Runner,
    commands,
    fakes,
    kind,
    parse,
    pyproject,
)

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = parse(README)


# --- every block is run or labelled -------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line-{b.line}-{b.lang or 'text'}" for b in BLOCKS])
def test_every_readme_block_is_run_or_labelled(block: Block) -> None:
    assert kind(block) in {"file", "python", "bash", "yaml", "output", "output-of-above"}


@pytest.mark.parametrize(
    ("markdown", "problem"),
    [
        ("Text:\n\n```\nsome output\n```\n", "neither run nor labelled"),
        ("Text:\n\n```json\n{}\n```\n", "neither run nor labelled"),
        ("Text:\n\n```jinja\n{{ x }}\n```\n", "neither run nor labelled"),
        ("Text:\n\n```toml\n[tool]\n```\n", "neither run nor labelled"),
        ("<!-- skip -->\n```python\nboom()\n```\n", "unknown label"),
        ("<!-- not run -->\n```bash\nrm -rf /\n```\n", "unknown label"),
    ],
)
def test_a_block_that_is_neither_run_nor_labelled_is_refused(markdown: str, problem: str) -> None:
    [block] = parse(markdown)
    with pytest.raises(ValueError, match=problem):
        kind(block)


def test_blocks_carry_their_section_label_caption_and_indent() -> None:
    markdown = textwrap.dedent(
        """\
        # Title
        ## Tour
        ### One
        `prompts/a.jinja`:

        ```jinja
        ---
        ---
        hi
        ```

        1. Step:

           <!-- offline -->
           ```bash
           pytest \\
             -q   # quiet
           promptcast check && promptcast list
           ```
        """
    )
    file, step = parse(markdown)
    assert (file.caption, file.section, file.top, file.line) == (
        "prompts/a.jinja",
        "One",
        "Tour",
        6,
    )
    assert file.text == "---\n---\nhi\n" and kind(file) == "file"
    assert step.label == OFFLINE and step.caption is None and step.text.startswith("pytest \\\n")
    assert commands(step) == ["pytest -q", "promptcast check", "promptcast list"]


# --- the allow-list stays small and honest ------------------------------------------------------


def readme_commands() -> list[str]:
    return [c for b in BLOCKS if kind(b) == "bash" for c in commands(b)]


@pytest.mark.parametrize("entry", NOT_RUN_AS_WRITTEN, ids=lambda e: e.pattern)
def test_each_command_not_run_as_written_is_in_the_readme(entry: object) -> None:
    pattern = entry.pattern  # type: ignore[attr-defined]
    assert any(re.search(pattern, command) for command in readme_commands())


@pytest.mark.parametrize("placeholder", SUBSTITUTIONS)
def test_each_substituted_placeholder_is_in_the_readme(placeholder: str) -> None:
    assert placeholder in README


def test_the_console_script_is_the_cli_app_the_harness_runs() -> None:
    # `promptcast …` commands run through `promptcast.cli.app` in the test process
    assert pyproject()["project"]["scripts"] == {"promptcast": "promptcast.cli:main"}


# --- the harness catches what it should ---------------------------------------------------------


def run_markdown(markdown: str, project: Path) -> Runner:
    with fakes() as (anthropic, openai):
        runner = Runner(project, anthropic, openai)
        runner.run(markdown.replace("{anthropic}", anthropic.base_url))
    return runner


def test_the_harness_reports_a_failing_command_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = run_markdown("## S\n\n```bash\npromptcast show no_such_task\n```\n", tmp_path)
    [failure] = runner.failures
    assert failure.startswith("README.md:3 (S, bash block)") and "no_such_task" in failure


def test_the_harness_fails_an_offline_block_that_reaches_a_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    request = """curl -s -X POST {anthropic}/v1/messages -d '{"model": "m"}'"""
    runner = run_markdown(f"<!-- offline -->\n```bash\n{request}\n```\n", tmp_path)
    assert any("labelled offline, but the fake providers got 1" in f for f in runner.failures)


def test_the_harness_compares_shown_output_with_what_was_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    markdown = (
        "```bash\npromptcast eval --schema\n```\n\n"
        '<!-- output of the block above -->\n```json\n{"title": "EvalReport"}\n```\n'
    )
    [failure] = run_markdown(markdown, tmp_path).failures
    assert "the README shows" in failure and "the command printed" in failure


def test_the_harness_offline_profile_has_no_provider_credentials(tmp_path: Path) -> None:
    with fakes() as (anthropic, openai):
        runner = Runner(tmp_path, anthropic, openai)
        [online, offline] = parse("```bash\nx\n```\n\n<!-- offline -->\n```bash\nx\n```\n")
        assert runner.profile(online)["ANTHROPIC_BASE_URL"] == anthropic.base_url
        assert all(value is None for value in runner.profile(offline).values())


# --- the names the README uses exist ------------------------------------------------------------

CLI = typer.main.get_command(app)


def inline_spans(prefix: str) -> list[str]:
    """Inline code spans (`…`, possibly over several lines) that start with `prefix`."""
    text = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    return [" ".join(m.split()) for m in re.findall(r"`([^`]+)`", text) if m.startswith(prefix)]


def _alternatives(span: str) -> list[str]:
    """`a | b [c | d]` → `["a", "b [c | d]"]`: split on the `|` outside brackets."""
    parts, depth, current = [], 0, ""
    for char in span:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def _options(command: object) -> set[str]:
    return {
        opt
        for param in command.params  # type: ignore[attr-defined]
        for opt in (*param.opts, *param.secondary_opts)
    }


PROMPTCAST_SPANS = inline_spans("promptcast ")


@pytest.mark.parametrize("span", PROMPTCAST_SPANS)
def test_every_promptcast_command_in_the_text_exists(span: str) -> None:
    """`promptcast SUB --option …` in running text: the subcommand and each option exist."""
    for number, alternative in enumerate(_alternatives(span)):
        words = alternative.split()
        if number == 0:
            assert words.pop(0) == "promptcast"
        if words[0].startswith("-"):
            assert words[0] in _options(CLI), f"{span}: promptcast has no {words[0]}"
            continue
        sub = CLI.commands.get(words[0])  # type: ignore[attr-defined]
        assert sub is not None, f"{span}: no command {words[0]!r}"
        for word in words[1:]:
            flag = word.strip("[]…,").split("=")[0]
            if flag.startswith("-"):
                assert flag in _options(sub), f"{span}: `promptcast {words[0]}` has no {flag}"


def test_the_text_names_the_commands_it_documents() -> None:
    assert len(PROMPTCAST_SPANS) >= 8


@pytest.mark.parametrize("span", inline_spans("pytest "))
def test_every_pytest_option_in_the_text_exists(span: str, pytestconfig: pytest.Config) -> None:
    from pytest_recording.plugin import RECORD_MODES

    for word in span.split()[1:]:
        if word.startswith("--"):
            name, _, value = word.partition("=")
            pytestconfig.getoption(name)  # ValueError when no plugin registers it
            if name == "--record-mode":
                assert value in RECORD_MODES


@pytest.mark.parametrize(
    "extra", sorted(set(re.findall(r"promptcast\[([\w-]+)\]", README)) | {"dev"})
)
def test_every_extra_the_readme_names_exists(extra: str) -> None:
    assert extra in pyproject()["project"]["optional-dependencies"]


def test_the_example_recordings_are_labelled_as_examples() -> None:
    # the recordings under cassettes/examples are written by a script, not real provider replies
    assert "example recordings, not real model answers" in README
    assert "scripts/write_example_cassettes.py" in README
    script = (ROOT / "scripts" / "write_example_cassettes.py").read_text(encoding="utf-8")
    assert 'OUT = Path(__file__).resolve().parent.parent / "cassettes" / "examples"' in script
    assert "written by hand" in script
    first_mention = README.index("cassettes/examples/")
    assert "not real model" in README[first_mention : first_mention + 300]


def test_the_security_section_says_what_is_guaranteed_and_what_is_not() -> None:
    section = README[README.index("## Security") : README.index("## Reference")]
    guaranteed, operator = section.split("### What you must still do")
    for promise in (
        "Types hold data",
        "ImmutableSandboxedEnvironment",
        "`fence()`",
        "`Host` names loopback",
        "One set of credential patterns",
        "Settings are validated",
        "without aliases",
    ):
        assert promise in guaranteed, promise
    for duty in (
        "Terminate TLS",
        "client_header_timeout",
        "client_body_timeout",
        "PROMPTCAST_MAX_BODY_BYTES",
        "Rotate tokens",
        "promptcast scan-cassettes",
    ):
        assert duty in operator, duty


# --- the README's commands are the ones CI runs, its task file renders as shown ----------------


def test_readme_commands_are_the_ones_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = re.search(r"Run the tests.*?```bash\n(.*?)\n```", README, re.DOTALL)
    assert test_command and test_command.group(1) == "bash .ci/run"
    assert 'pip install -q -e ".[dev]"' in ci and ".venv/bin/pytest" in ci
    first = re.search(r"```bash\n(.*?)\n```", README, re.DOTALL)
    assert first and first.group(1).endswith("promptcast demo")


def test_readme_task_file_loads_renders_and_runs_on_a_scripted_backend(tmp_path: Path) -> None:
    [block] = [b for b in BLOCKS if b.caption == "prompts/summarize_review.jinja"]
    (tmp_path / "summarize_review.jinja").write_text(block.text, encoding="utf-8")
    tasks = pc.load_tasks(tmp_path)
    prompt = tasks.summarize_review.render(text="Great blender, a bit loud.")
    assert prompt.system == "Summarize reviews in one sentence and at most 3 points."
    assert prompt.messages[0]["content"] == "<review>\nGreat blender, a bit loud.\n</review>"

    script = ScriptedBackend(
        [
            {"summary": "wrong type", "points": "not a list"},
            {"summary": "A loud but great blender.", "points": ["great", "loud"]},
        ]
    )
    with pc.override(model="test/reviews", backends={"test/reviews": script}):
        run = tasks.summarize_review.run(text="Great blender, a bit loud.")
    assert run.attempts == 2 and run.output.points == ["great", "loud"]  # type: ignore[attr-defined]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("anchor", sorted(set(re.findall(r"\]\(#([^)]+)\)", README))))
def test_every_link_inside_the_readme_lands_on_a_heading(anchor: str) -> None:
    text = re.sub(r"```.*?```", "", README, flags=re.DOTALL)
    headings = {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}
    assert anchor in headings


# --- what the harness runs as written ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragment", "problem"),
    [
        ("output_mode: native\n", None),
        ("prompt_caching: off\n", None),
        ("thinking: {budget_tokens: 2048}\n", None),
        ("# a modeline\ndescription: d\ninputs:\n  text: str\n", None),
        ("output:\n  summary: str\n", None),
        ("output_mode: nativ\n", "does not load"),
        ("thinking: {budget_tokens: 10}\n", "does not load"),
        ("descripton: d\n", "does not load"),
    ],
)
def test_a_yaml_fragment_must_load_as_frontmatter(
    fragment: str, problem: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = run_markdown(f"## S\n\n```yaml\n{fragment}```\n", tmp_path)
    if problem is None:
        assert runner.failures == []
    else:
        [failure] = runner.failures
        assert problem in failure


def test_shell_commands_run_through_bash_and_promptcast_output_can_be_redirected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    markdown = (
        "```bash\n"
        "echo \"$(printf '%s' made)\" | tr a-z A-Z > shell.txt\n"
        "promptcast schema > task.schema.json\n"
        "```\n"
    )
    runner = run_markdown(markdown, tmp_path)
    assert runner.failures == []
    assert (tmp_path / "shell.txt").read_text() == "MADE\n"
    assert '"title"' in (tmp_path / "task.schema.json").read_text()


def test_a_failing_shell_pipeline_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    [failure] = run_markdown("```bash\nfalse && echo never\n```\n", tmp_path).failures
    assert "`false` exited 1" in failure


def test_an_environment_prefixed_serve_gets_its_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    markdown = (
        "```bash\n"
        "PROMPTCAST_MAX_BODY_BYTES=10 promptcast serve\n"
        "curl -s -o /dev/null -w '%{http_code}' localhost:8000/v1/tasks/classify "
        "-H 'content-type: application/json' -d '{\"text\": \"a longer body\"}'\n"
        "```\n"
    )
    runner = run_markdown(markdown, tmp_path)
    assert runner.failures == [] and runner.last_stdout == "413"


PRINTED_STREAM = (
    'event: partial\ndata: {"answer":"Ye"}\n\n'
    'event: partial\ndata: {"answer":"Yes","answered":true}\n\n'
    'event: final\ndata: {"output": {"answer": "Yes", "answered": true}, "usage": {"input_tokens": 3}}\n\n'
)


@pytest.mark.parametrize(
    ("shown", "problem"),
    [
        (PRINTED_STREAM, None),
        (PRINTED_STREAM.split("\n\n", 1)[1], None),  # fewer partials: the same kinds of event
        (PRINTED_STREAM.replace("event: final", "event: error"), "shows events"),
        (PRINTED_STREAM.replace('{"answer":"Ye"}', '{"answr":"Ye"}'), "partial fields"),
        (PRINTED_STREAM.replace('"usage": {"input_tokens": 3}', '"usage": {}'), "shows final"),
    ],
)
def test_the_harness_compares_a_shown_event_stream_with_what_was_sent(
    shown: str, problem: str | None, tmp_path: Path
) -> None:
    with fakes() as (anthropic, openai):
        runner = Runner(tmp_path, anthropic, openai, last_stdout=PRINTED_STREAM)
        [block] = parse(f"<!-- output of the block above -->\n```text\n{shown}```\n")
        if problem is None:
            runner.run_output_of_above(block)
        else:
            with pytest.raises(AssertionError, match=problem):
                runner.run_output_of_above(block)


def test_a_repository_script_runs_from_the_root_and_must_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    [failure] = run_markdown("```bash\npython examples/no_such_script.py\n```\n", tmp_path).failures
    assert "`python examples/no_such_script.py` exited 2" in failure
