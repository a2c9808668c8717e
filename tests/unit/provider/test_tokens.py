"""The prompt estimate and the answer text that matches it."""

from __future__ import annotations

from rlprovider.tokens import filler, prompt_tokens, text_tokens


def test_four_characters_a_token_rounded_up() -> None:
    assert [text_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_prompt_adds_three_per_message_and_three_per_request() -> None:
    assert prompt_tokens(["hello there"]) == 3 + 3 + 3
    assert prompt_tokens(["be nice", "x" * 136]) == 3 + (3 + 2) + (3 + 34)


def test_filler_counts_as_the_tokens_it_stands_for() -> None:
    for n in (1, 2, 7, 400):
        assert text_tokens(filler(n)) == n
