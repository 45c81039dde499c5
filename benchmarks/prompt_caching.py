"""Prompt caching: the input cost of 20 Q&A calls with a 6,000-token static system prompt, with
`prompt_caching: auto` and with it off.

Runs against the loopback `FakeAnthropic`, which reports cache usage the way the Messages API does
(a prefix up to a `cache_control` breakpoint is written on first use and read by later requests
with the same prefix; prefixes under 1,024 tokens are not cached; tokens counted as JSON
characters / 4; entries do not expire within the run). Costs are genai-prices' prices for
claude-sonnet-4-6: the fake simulates the API's accounting, not its latency or a real tokenizer.

    .venv/bin/python benchmarks/prompt_caching.py
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import promptcast as pc
from promptcast.pricing import cost_usd
from promptcast.result import Usage
from promptcast.testing import FakeAnthropic

MODEL = "anthropic/claude-sonnet-4-6"
CALLS = 20
SYSTEM_TOKENS = 6000

QUESTIONS = [
    f"Question {i}: how do I {verb} the blender?"
    for i, verb in enumerate(
        [
            "clean",
            "assemble",
            "descale",
            "store",
            "repair",
            "unpack",
            "sharpen",
            "reset",
            "lock",
            "unlock",
            "pair",
            "update",
            "return",
            "register",
            "charge",
            "empty",
            "fill",
            "switch on",
            "switch off",
            "carry",
        ]
    )
]


def product_docs(tokens: int) -> str:
    """Static product documentation of about `tokens` tokens (four characters per token)."""
    sections = []
    i = 0
    while sum(map(len, sections)) < tokens * 4:
        sections.append(
            f"Section {i}. The BlendPro {i % 7} has a {500 + i} W motor, a {1 + i % 3} litre jar "
            f"and program {i % 9} for soups; clean the blade unit after every use.\n"
        )
        i += 1
    return "".join(sections)


TASK = """\
---
inputs: {{question: str}}
output: {{answer: str, section: int}}
model: {model}
output_mode: native
prompt_caching: {caching}
---
{{% role "system" %}}You answer questions about our blenders from this manual only.

{docs}{{% endrole %}}
{{{{ question | fence("question") }}}}
"""


def run(caching: str, docs: str, folder: Path) -> tuple[Usage, float]:
    """The summed usage and input cost (USD) of the 20 calls against a fresh fake."""
    path = folder / f"qa_{caching}.jinja"
    path.write_text(TASK.format(model=MODEL, caching=caching, docs=docs), encoding="utf-8")
    task = pc.Task.from_file(path)
    total = Usage()
    input_cost = 0.0
    with (
        FakeAnthropic() as fake,
        pc.override(providers={"anthropic": {"api_key": "sk-fake", "base_url": fake.base_url}}),
    ):
        for question in QUESTIONS[:CALLS]:
            usage = task.run(question=question).usage
            total += usage
            input_cost += (
                cost_usd(
                    MODEL,
                    usage.input_tokens,
                    0,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                )
                or 0.0
            )
    return total, input_cost


def main() -> None:
    os.environ.pop("ANTHROPIC_BASE_URL", None)
    docs = product_docs(SYSTEM_TOKENS)
    with tempfile.TemporaryDirectory() as tmp:
        cached, cached_cost = run("auto", docs, Path(tmp))
        plain, plain_cost = run("off", docs, Path(tmp))
    all_input = cached.input_tokens + cached.cache_read_tokens + cached.cache_write_tokens
    share = cached.cache_read_tokens / all_input
    ratio = cached_cost / plain_cost
    print(f"prompt caching benchmark, {dt.date.today().isoformat()}, {MODEL} prices (genai-prices)")
    print(
        "against the loopback FakeAnthropic, which reports cache writes and reads as the API does "
        "(simulated accounting, not the real API)"
    )
    print(f"{CALLS} calls, static system prompt of ~{SYSTEM_TOKENS} tokens, different questions")
    print(
        f"  caching off : input cost ${plain_cost:.5f} ({plain.input_tokens} uncached input tokens)"
    )
    print(
        f"  caching auto: input cost ${cached_cost:.5f} ({cached.input_tokens} uncached, "
        f"{cached.cache_write_tokens} written, {cached.cache_read_tokens} read from cache)"
    )
    print(f"  input tokens read from cache: {share:.1%}")
    print(f"  input cost with caching / without: {ratio:.3f} ({1 - ratio:.1%} lower)")


if __name__ == "__main__":
    main()
