"""`promptcast typegen`: a typed module that mypy --strict and pyright accept, that flags a wrong
keyword or type, that runs against the fake provider, and that `--check` finds stale."""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcast as pc
from promptcast.cli import app
from promptcast.task import BUILTIN_PROMPTS
from promptcast.testing import FakeAnthropic
from promptcast.testing._fake_anthropic import answer as fake_answer
from promptcast.typegen import generate

runner = CliRunner()
VENV_BIN = Path(sys.executable).parent

REVIEW = """\
---
description: Summarise a product review for the "support" team.
model: anthropic/claude-sonnet-4-6
inputs:
  text: str
  tone:
    type: Literal['neutral', 'friendly']
    default: neutral
  max_points: {type: int, default: 3, description: How many bullets}
  tags:
    type: list[str]
    default: []
  when:
    type: date | None
    default: null
output:
  summary: str
  bullets:
    type: list
    items: str
    description: Key points, at most max_points
  sentiment: Literal['positive', 'negative', 'mixed']
  author:
    name: str
    verified: {type: bool, default: false}
  quotes: [{text: str, line: int}]
---
Summarise ({{ tone }}, {{ max_points }} points, {{ tags }}, {{ when }}):
{{ text | fence("review") }}
"""

RATE = """\
---
description: Rate a review with the project's own model.
model: anthropic/claude-sonnet-4-6
inputs:
  review: shopmodels:Review
output: shopmodels:Rating
---
Rate {{ review.title }}: {{ review.body }}
"""

SLOGAN = """\
---
model: anthropic/claude-sonnet-4-6
inputs:
  product: str
---
A slogan for {{ product }}.
"""

MODELS = """\
from pydantic import BaseModel


class Review(BaseModel):
    title: str
    body: str


class Rating(BaseModel):
    stars: int
    reason: str
"""

USE_OK = """\
from __future__ import annotations

import asyncio

from app.ai_tasks import SummarizeReviewOutput, Tasks, rate, tasks
from shopmodels import Rating, Review

summary: SummarizeReviewOutput = tasks.summarize_review(text="Great", tone="friendly")
bullets: list[str] = summary.bullets
rating: Rating = rate(review=Review(title="t", body="b"))
slogan: str = tasks.slogan(product="tea")
run_output: SummarizeReviewOutput = tasks.summarize_review.run(text="x").output
later: SummarizeReviewOutput = asyncio.run(tasks.summarize_review.acall(text="x"))
every: Tasks = tasks
"""

USE_BAD = """\
from __future__ import annotations

from app.ai_tasks import tasks

tasks.summarize_review(txt="typo")
tasks.summarize_review(text=42)
tasks.summarize_review(text="x", tone="angry")
wrong: int = tasks.slogan(product="tea")
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project: pyproject.toml, its own models module, prompts/ and an app/ package."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'shop'\nversion = '0'\n")
    (tmp_path / "shopmodels.py").write_text(MODELS)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "summarize_review.jinja").write_text(REVIEW)
    (prompts / "rate.jinja").write_text(RATE)
    (prompts / "slogan.jinja").write_text(SLOGAN)
    shutil.copy(BUILTIN_PROMPTS / "extract_ticket.jinja", prompts)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m in ("shopmodels", "app") or m.startswith("app.")]:
        del sys.modules[name]


def _typegen(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["typegen", "prompts", "-o", "app/ai_tasks.py", *args])
    return result.exit_code, result.output


def test_generated_module_passes_mypy_strict_and_pyright_and_they_flag_wrong_calls(
    project: Path,
) -> None:
    code, output = _typegen()
    assert code == 0, output
    (project / "use_ok.py").write_text(USE_OK)
    (project / "use_bad.py").write_text(USE_BAD)

    flagged, output = _type_errors(project, "mypy", "use_ok.py", "use_bad.py")
    assert flagged == {5, 6, 7, 8} and 'Unexpected keyword argument "txt"' in output, output
    flagged, output = _type_errors(project, "pyright", "use_ok.py", "use_bad.py")
    assert flagged == {5, 6, 7, 8} and 'No parameter named "txt"' in output, output


def _type_errors(project: Path, checker: str, good: str, bad: str) -> tuple[set[int], str]:
    """Run mypy --strict or pyright on the generated module and two files using it; anything
    flagged outside `bad` fails the test. Returns the lines flagged in `bad` and the output."""
    files = ["app/ai_tasks.py", good, bad]
    if checker == "mypy":
        command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(project / ".mypy")]
        marker = ": error:"
    else:
        command = [str(VENV_BIN / "pyright"), "--pythonpath", sys.executable]
        marker = " - error:"
    run = subprocess.run(
        [*command, *files], capture_output=True, text=True, cwd=project, check=False
    )
    lines = [line for line in run.stdout.splitlines() if marker in line]
    assert all(bad in line for line in lines), run.stdout
    return {int(line.split(":")[1]) for line in lines}, run.stdout


def test_generated_module_is_deterministic_formatted_and_lists_file_hashes(project: Path) -> None:
    first = generate(["prompts"], "app/ai_tasks.py")
    assert generate(["prompts"], "app/ai_tasks.py") == first
    assert first.startswith("# Generated by `promptcast typegen`")
    for name in ("extract_ticket", "rate", "slogan", "summarize_review"):
        assert f"#   ../prompts/{name}.jinja  sha256:" in first
    # sorted by task name, whatever order the folder lists them in
    assert (
        first.index("def extract_ticket(") < first.index("def rate(") < first.index("def slogan(")
    )
    (project / "app" / "ai_tasks.py").write_text(first)
    ruff = subprocess.run(
        [str(VENV_BIN / "ruff"), "format", "--check", "--diff", "app/ai_tasks.py"],
        capture_output=True, text=True, cwd=project, check=False,
    )  # fmt: skip
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_generated_functions_call_the_fake_and_return_the_generated_types(
    project: Path, fake_anthropic: FakeAnthropic
) -> None:
    assert _typegen()[0] == 0
    module = importlib.import_module("app.ai_tasks")
    summary = module.tasks.summarize_review(text="Sturdy, but the strap broke.")
    assert isinstance(summary, module.SummarizeReviewOutput)
    assert isinstance(summary.author, module.SummarizeReviewOutputAuthor)
    shopmodels = importlib.import_module("shopmodels")
    rating = module.rate(review=shopmodels.Review(title="Bag", body="ok"))
    assert isinstance(rating, shopmodels.Rating)
    ticket = module.tasks.extract_ticket(message="Checkout is down")
    assert type(ticket).__name__ == "Ticket"
    assert isinstance(module.tasks.slogan(product="tea"), str)
    sent = fake_anthropic.requests[0]
    assert "Sturdy, but the strap broke." in str(sent["messages"])
    with pytest.raises(pc.TaskInputError):
        module.tasks.summarize_review(text="x", tone="angry")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  text: str\n", "  text: str\n  product: str\n"),  # an input added
        ("  max_points: {type: int, default: 3,", "  max_points: {type: float, default: 3,"),
        ("    type: Literal['neutral', 'friendly']", "    type: Literal['neutral', 'warm']"),
        ("  summary: str\n", "  summary: str\n  title: str\n"),  # the output changed
        ("Summarise (", "Summarise this ("),  # only the template: the hash changed
    ],
)
def test_check_fails_once_a_task_file_changes(project: Path, old: str, new: str) -> None:
    assert _typegen()[0] == 0
    code, output = _typegen("--check")
    assert code == 0 and "is current" in output
    review = project / "prompts" / "summarize_review.jinja"
    assert old in review.read_text()
    review.write_text(review.read_text().replace(old, new))
    code, output = _typegen("--check")
    assert code == 1
    assert "app/ai_tasks.py is stale; run: promptcast typegen prompts -o app/ai_tasks.py" in output


def test_check_fails_when_the_module_is_missing(project: Path) -> None:
    code, output = _typegen("--check")
    assert code == 1 and "is missing" in output
    assert not (project / "app" / "ai_tasks.py").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  summary: str\n", "  summary: int\n", "no longer matches the task file's output"),
        ("  text: str\n", "  text: str\n  extra: str\n", "differ from the file's inputs"),
        ("    default: neutral", "    default: friendly", "must have default 'friendly'"),
    ],
)
def test_a_stale_module_fails_at_import(project: Path, old: str, new: str, message: str) -> None:
    assert _typegen()[0] == 0
    review = project / "prompts" / "summarize_review.jinja"
    text = review.read_text().replace(old, new)
    review.write_text(text.replace("{{ text", "{{ extra }}{{ text") if "extra" in new else text)
    with pytest.raises(pc.TaskDefinitionError, match=message):
        importlib.import_module("app.ai_tasks")


def test_typegen_reports_a_broken_task_file_and_an_empty_folder(project: Path) -> None:
    (project / "prompts" / "broken.jinja").write_text("---\ninputs: {a: nope}\n---\n{{ a }}\n")
    code, output = _typegen()
    assert code == 1 and "broken.jinja" in output and "nope" in output
    (project / "empty").mkdir()
    result = runner.invoke(app, ["typegen", "empty", "-o", "x.py"])
    assert result.exit_code == 1 and "no task files" in result.output


@pytest.mark.parametrize("name", ["class", "def", "None", "async"])
def test_a_task_named_by_a_python_keyword_is_a_typegen_error(tmp_path: Path, name: str) -> None:
    (tmp_path / f"{name}.jinja").write_text("---\ninputs: {q: str}\n---\n{{ q }}\n")
    with pytest.raises(pc.TaskDefinitionError, match=f"task name '{name}' is a Python keyword"):
        generate([tmp_path], tmp_path / "out.py")


def test_prompty_tasks_get_types_too(project: Path) -> None:
    (project / "prompts" / "ask.prompty").write_text(
        textwrap.dedent(
            """\
            ---
            name: Ask
            inputs:
              question:
                type: string
            outputs:
              answer:
                type: string
            ---
            system:
            Answer briefly.
            user:
            {{question}}
            """
        )
    )
    assert _typegen()[0] == 0
    text = (project / "app" / "ai_tasks.py").read_text()
    assert "class AskOutput(BaseModel):\n    answer: str\n" in text
    assert "def ask(*, question: str) -> AskOutput:" in text
    module = importlib.import_module("app.ai_tasks")
    assert module.tasks.ask.render(question="Why?").messages[-1]["content"] == "Why?"


SHOTS = """\
---
description: Triage a crash report with its screenshots and logs.
model: anthropic/claude-sonnet-4-6
inputs:
  screenshot: image
  extra: {type: "list[image]", default: []}
  log: {type: "document | None", default: null}
---
{{ screenshot }}{% for shot in extra %}{{ shot }}{% endfor %}{% if log %}{{ log }}{% endif %}
What crashed?
"""

# Every form an image or document input takes at run time (promptcast.media.Media.coerce).
MEDIA_FORMS = {
    "image": "pc.Image(PNG)",
    "bytes": "PNG",
    "bytearray": "bytearray(PNG)",
    "memoryview": "memoryview(PNG)",
    "path": 'Path("crash.png")',
    "data_url": '"data:image/png;base64,iVBORw0KGgo="',
    "url": '"https://example.com/crash.png"',
    "mapping": '{"media_type": "image/png", "data": "iVBORw0KGgo="}',
    "mapping_without_type": '{"data": "iVBORw0KGgo="}',
}
DOCUMENT_FORMS = {
    "document": "pc.Document(b'%PDF-1.4')",
    "bytes": "b'%PDF-1.4'",
    "path": 'Path("log.pdf")',
    "mapping": '{"media_type": "application/pdf", "data": "JVBERi0x"}',
}

USE_MEDIA_OK = f"""\
from __future__ import annotations

from pathlib import Path

import promptcast as pc
from app.ai_tasks import shots, tasks

PNG = b"\\x89PNG"
{chr(10).join(f"shots(screenshot={v})  # {k}" for k, v in MEDIA_FORMS.items())}
tasks.shots(screenshot=PNG, extra=[{", ".join(MEDIA_FORMS.values())}])
{chr(10).join(f"shots(screenshot=PNG, log={v})  # {k}" for k, v in DOCUMENT_FORMS.items())}
shots(screenshot=PNG, log=None)
"""

USE_MEDIA_BAD = """\
from __future__ import annotations

from app.ai_tasks import shots

shots(screenshot=42)
shots(screenshot=b"x", extra=[3.5])
shots(screenshot=b"x", log=["not", "a", "document"])
shots(screenshot={"media_type": "image/bmp", "data": "Qk0="})
shots(screenshot={"data": 1})
shots(screenshot=b"x", log={"media_type": "image/png", "data": "iVBORw0KGgo="})
"""


def test_media_inputs_take_every_form_the_call_takes_and_nothing_else(
    project: Path, fake_anthropic: FakeAnthropic
) -> None:
    (project / "prompts" / "shots.jinja").write_text(SHOTS)
    code, output = _typegen()
    assert code == 0, output
    text = (project / "app" / "ai_tasks.py").read_text()
    assert "from promptcast.media import DocumentInput, ImageInput" in text
    assert (
        "def shots(\n    *,\n    screenshot: ImageInput,\n    extra: list[ImageInput] = [],\n"
        "    log: DocumentInput | None = None,\n) -> str:"
    ) in text
    (project / "use_media_ok.py").write_text(USE_MEDIA_OK)
    (project / "use_media_bad.py").write_text(USE_MEDIA_BAD)

    for checker in ("mypy", "pyright"):
        flagged, output = _type_errors(project, checker, "use_media_ok.py", "use_media_bad.py")
        assert flagged == {5, 6, 7, 8, 9, 10}, output

    # the module binds (its signature equals the file's types) and a Path works as typed
    (project / "crash.png").write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    module = importlib.import_module("app.ai_tasks")
    assert isinstance(module.shots(screenshot=Path("crash.png")), str)
    blocks = fake_anthropic.requests[0]["messages"][0]["content"]
    assert [b["type"] for b in blocks][:1] == ["image"]


ODD_NAMES = """\
---
inputs: {q: str, list: 'list[str]', str: str}
output:
  def: str
  str: int
  Any: str
  Field: {type: str, description: Shadows pydantic's Field}
  json: str
  schema: str
  copy: {type: str, default: x}
  json_: str
  self: str
---
{{ q }} {{ list }} {{ str }}
"""


def test_output_fields_named_as_keywords_types_or_model_methods_get_aliases(
    project: Path, fake_anthropic: FakeAnthropic
) -> None:
    """`def: str` made a module that did not compile; `str: int` hid the type `str` from the
    fields after it, and `json: str` overrode `BaseModel.json` (a warning on import and a mypy
    error). Such a field is now `def_` with `alias="def"`: the JSON keeps its names."""
    (project / "prompts" / "odd.jinja").write_text(ODD_NAMES)
    code, output = _typegen()
    assert code == 0, output
    text = (project / "app" / "ai_tasks.py").read_text()
    assert '    def_: str = Field(alias="def")\n    str_: int = Field(alias="str")\n' in text
    assert '    json__: str = Field(alias="json")\n' in text  # `json_` is another field's name
    assert '    copy_: str = Field("x", alias="copy")\n    json_: str\n    self: str\n' in text
    (project / "use_ok.py").write_text(
        "from app.ai_tasks import odd\n\nodd(q='a', list=[], str='s')\n"
    )
    (project / "use_bad.py").write_text("")
    assert _type_errors(project, "mypy", "use_ok.py", "use_bad.py")[0] == set()
    answer = {
        "def": "d", "str": 1, "Any": "a", "Field": "f", "json": "j", "schema": "s",
        "json_": "j2", "self": "me",
    }  # fmt: skip
    fake_anthropic.handler = lambda request: fake_answer(request, answer)
    module = importlib.import_module("app.ai_tasks")  # no warning: `-W error` in this suite
    result = module.odd(q="a", list=[], str="s")
    assert (result.def_, result.str_, result.json__, result.json_) == ("d", 1, "j", "j2")
    assert result.model_dump(by_alias=True) == {**answer, "copy": "x"}
    sent = json.dumps(fake_anthropic.requests[0])
    assert '"properties": {"def": {"title": "Def", "type": "string"}, "str": ' in sent
    assert list(module.OddOutput.model_json_schema()["properties"]) == [
        "def",
        "str",
        "Any",
        "Field",
        "json",
        "schema",
        "copy",
        "json_",
        "self",
    ]
