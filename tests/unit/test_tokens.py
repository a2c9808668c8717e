"""The token file and the check of an authorization header (pure logic; files in tmp_path)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rlcommon.auth import Tokens, bearer, load_tokens
from rlcommon.errors import SetupError
from rlcommon.scopes import UNRESTRICTED, Scope


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


def test_one_token_a_line_skipping_blanks_and_comments(tmp_path: Path) -> None:
    assert load_tokens(write(tmp_path, "# ops\n  tok-a  \n\ntok-b\n")) == (
        (b"tok-a", UNRESTRICTED),
        (b"tok-b", UNRESTRICTED),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no token in it"),
        ("# only a comment\n\n", "no token in it"),
        ("tok-a\nhas a space\n", "line 2: field 2 is not key=value"),
        ("t\u00f6k\n", "line 1: a token is printable ASCII without spaces"),
    ],
)
def test_a_bad_file_is_refused_naming_it_and_never_quoting_a_token(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SetupError) as caught:
        load_tokens(path)
    assert str(path) in str(caught.value) and message in str(caught.value)
    for line in filter(None, map(str.strip, text.splitlines())):
        assert line not in str(caught.value)


def test_the_header_check(tmp_path: Path) -> None:
    tokens = Tokens(write(tmp_path, "tok-a\ntok-b models=m1\n"))
    assert tokens.identify(bearer("tok-b")) == Scope(None, frozenset({"m1"}))
    assert tokens.identify((("authorization", "bearer tok-a"),)) == UNRESTRICTED
    assert "requires a token" in str(tokens.identify((("x-other", "tok-a"),)))
    assert "must be 'Bearer <token>'" in str(tokens.identify((("authorization", "tok-a"),)))
    assert "not one this server accepts" in str(tokens.identify(bearer("tok-c")))
    assert "not one this server accepts" in str(tokens.identify(bearer("tok-a-longer")))


def test_reload_swaps_only_for_a_good_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "tok-a\n")
    tokens = Tokens(path)
    path.write_text("tok-b\n")
    tokens.reload()
    assert tokens.identify(bearer("tok-b")) == UNRESTRICTED and isinstance(tokens.identify(bearer("tok-a")), str)
    path.write_text("")
    with caplog.at_level(logging.WARNING, logger="rlcommon.auth"):
        tokens.reload()
    assert tokens.identify(bearer("tok-b")) == UNRESTRICTED
    assert "keeping the 1 tokens read before" in caplog.text and "tok-b" not in caplog.text
