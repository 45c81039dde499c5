"""A cheap, upper-side guess of how many tokens a text costs, in any script.

Four characters a token holds for English, but tokenizers spend one to three tokens on each
Chinese, Korean, Hindi or Thai character and more on an emoji: counted by characters alone, a
budget check let such a prompt through at a fifth of its size. So each UTF-8 byte a character
takes beyond its first adds a token: ASCII stays at a quarter of a token a character, Cyrillic,
Greek, Arabic or Hebrew count 1.25, CJK, Hangul, Indic and Thai 2.25, emoji 3.25 per code point:
at or above what an English-trained tokenizer spends (SmolLM2's, measured in tests/test_tokens.py;
Hangul, which it spells byte by byte, within 0.75 of it); multilingual tokenizers spend fewer.
"""

from __future__ import annotations

__all__ = ["text_tokens"]


def text_tokens(text: str) -> int:
    """Estimated tokens of `text`."""
    if text.isascii():
        return len(text) // 4
    return len(text) // 4 + len(text.encode("utf-8", "surrogatepass")) - len(text)
