"""Write the example recordings of the built-in tasks (cassettes/examples/<task>/example-N.yaml).

No real API is reachable where promptcast is developed, so these recordings are examples: each
request is what promptcast really sends through the anthropic SDK (captured by vcrpy), and each
reply below was written by hand in the Messages API wire format. Replace them with real recordings
by running `pytest promptcast/prompts --record-mode=rewrite` with ANTHROPIC_API_KEY set.

Run: python scripts/write_example_cassettes.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import vcr

import promptcast as pc
from promptcast.testing import FakeAnthropic, FakeReply, message, tool_use_block
from promptcast.testing.cassettes import register, scrub_response, vcr_config

OUT = Path(__file__).resolve().parent.parent / "cassettes" / "examples"

# (task, example index) -> (tool input, input tokens, output tokens): the hand-written answers.
ANSWERS: dict[tuple[str, int], tuple[dict[str, Any], int, int]] = {
    ("extract_ticket", 0): (
        {
            "issue": "The checkout page has been crashing since this morning, so sales are lost.",
            "urgency": "high",
            "product": "Checkout page",
        },
        612,
        71,
    ),
    ("extract_ticket", 1): (
        {
            "issue": "The customer wants to change the email address shown on invoices.",
            "urgency": "low",
            "product": "Invoices",
        },
        598,
        64,
    ),
    ("answer_product_question", 0): (
        {
            "answer": "Yes. Use the Pulse setting to crush ice, and do not run it for more than 30 "
            "seconds at a time.",
            "answered": True,
            "cited_document_ids": ["manual-3"],
        },
        703,
        88,
    ),
    ("answer_product_question", 1): (
        {
            "answer": "I don't know: the documents provided do not mention the Aero X2 warranty.",
            "answered": False,
            "cited_document_ids": [],
        },
        655,
        69,
    ),
    ("translate", 0): (
        {
            "translation": "The blender is loud, but it makes excellent smoothies.",
            "source_language": "German",
        },
        521,
        52,
    ),
    ("translate", 1): (
        {"translation": "Entrega rápida, producto conforme.", "source_language": "French"},
        514,
        47,
    ),
    ("summarize", 0): (
        {
            "summary": "The Q3 release adds offline mode, halves sync time and drops Android 9.",
            "key_points": [
                "Offline mode is new.",
                "Sync takes half the time.",
                "Android 9 is no longer supported.",
            ],
        },
        540,
        83,
    ),
    ("summarize", 1): (
        {
            "summary": "The meeting moved to Thursday at 10:00 because the room was double-booked.",
            "key_points": ["Now Thursday 10:00."],
        },
        533,
        49,
    ),
    ("classify", 0): (
        {"label": "billing", "reason": "The customer reports being charged twice."},
        560,
        41,
    ),
    ("classify", 1): (
        {"label": "feature_request", "reason": "The customer asks for a dark mode."},
        561,
        43,
    ),
}

HEADERS = {"anthropic-organization-id": "0f2c4e1a-example-org", "request-id": "req_example"}


def to_api(request: Any) -> Any:
    request.uri = "https://api.anthropic.com/v1/messages"
    request.headers["host"] = "api.anthropic.com"
    return request


def keep_api_headers(response: dict[str, Any]) -> dict[str, Any]:
    keep = {"content-type", "request-id", "anthropic-organization-id"}
    response["headers"] = {k: v for k, v in response["headers"].items() if k.lower() in keep}
    return scrub_response(response)


def main() -> None:
    tasks = pc.builtin_tasks()
    for name, task in sorted(tasks.items()):
        for i, example in enumerate(task.spec.examples):
            path = OUT / name / f"example-{i}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            data, tokens_in, tokens_out = ANSWERS[(name, i)]
            tool = task.output_model.__name__  # type: ignore[union-attr]
            body = message(
                [tool_use_block(tool, data)], input_tokens=tokens_in, output_tokens=tokens_out
            )
            body["id"] = f"msg_example_{name}_{i}"
            body["content"][0]["id"] = f"toolu_example_{name}_{i}"
            with (
                FakeAnthropic() as fake,
                pc.override(
                    providers={
                        "anthropic": {"api_key": "sk-ant-example", "base_url": fake.base_url}
                    }
                ),
            ):
                fake.reply(FakeReply(body, headers=HEADERS))
                recorder = register(
                    vcr.VCR(
                        **vcr_config(
                            record_mode="all",
                            before_record_request=to_api,
                            before_record_response=keep_api_headers,
                        )
                    )
                )
                with recorder.use_cassette(str(path)):
                    task.run(**example.inputs)
            print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.pop("ANTHROPIC_BASE_URL", None)
    main()
