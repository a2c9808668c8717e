"""Token counts without a tokenizer. Real tokenizers need vocabulary files that cannot be fetched
here, so prompts are estimated the way OpenAI's rule of thumb puts it (about four characters a
token) plus a fixed overhead per message, as its chat format adds role and separator tokens."""

from __future__ import annotations

import math
from collections.abc import Iterable

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
# What a chat request adds beyond its messages: the reply's priming.
TOKENS_PER_REQUEST = 3

# Three-letter words: each word and its space are exactly CHARS_PER_TOKEN characters, so an answer
# sent back in a later prompt is counted as the tokens it was reported to have.
_WORDS = ("the", "cat", "sat", "and", "ran", "far", "big", "red", "sun", "new", "old", "sea")


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(messages: Iterable[str]) -> int:
    """`messages` holds each message's text (for Anthropic the system prompt is one more)."""
    return TOKENS_PER_REQUEST + sum(TOKENS_PER_MESSAGE + text_tokens(text) for text in messages)


def filler(tokens: int) -> str:
    """Answer text of `tokens` tokens by `text_tokens`."""
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(tokens))
