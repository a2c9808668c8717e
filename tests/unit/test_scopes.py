"""Token lines with scopes: parsing (every kind of bad line) and the check of a call against a scope."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rlcommon.auth import Tokens, bearer, load_tokens
from rlcommon.errors import SetupError
from rlcommon.scopes import UNRESTRICTED, Scope

SECRET = "tok-s3cr3t"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    return path


def test_either_restriction_alone_or_both(tmp_path: Path) -> None:
    text = (
        "tok-a job_types=summary,chat models=openai/gpt-5.2\ntok-b job_types=summary\ntok-c   models=m1,m2  \ntok-d\n"
    )
    assert load_tokens(write(tmp_path, text)) == (
        (b"tok-a", Scope(frozenset({"summary", "chat"}), frozenset({"openai/gpt-5.2"}))),
        (b"tok-b", Scope(frozenset({"summary"}), None)),
        (b"tok-c", Scope(None, frozenset({"m1", "m2"}))),
        (b"tok-d", UNRESTRICTED),
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"{SECRET} teams=a", "field 2 has an unknown key (known: job_types, models)"),
        (f"{SECRET} job_types=", "job_types lists an empty name"),
        (f"{SECRET} models=a,,b", "models lists an empty name"),
        (f"{SECRET} models=a,", "models lists an empty name"),
        (f"{SECRET} job_types=a job_types=b", "job_types is given twice"),
        (f"{SECRET} models=a job_types=b models=c", "models is given twice"),
        (f"{SECRET} job_types", "field 2 is not key=value"),
        (f"{SECRET} {SECRET}-2", "field 2 is not key=value"),
        ("t\u00f6k job_types=a", "a token is printable ASCII without spaces"),
        (f"{SECRET} {SECRET}=x", "field 2 has an unknown key"),
    ],
)
def test_a_bad_line_is_refused_naming_file_line_and_fault_never_the_token(
    tmp_path: Path, line: str, message: str
) -> None:
    path = write(tmp_path, f"# teams\ntok-ok job_types=chat\n{line}\n")
    with pytest.raises(SetupError) as caught:
        load_tokens(path)
    text = str(caught.value)
    assert f"token file {path}, line 3: {message}" in text
    assert SECRET not in text and "t\u00f6k" not in text


def test_the_check_names_what_the_token_may_use_and_what_was_asked() -> None:
    scope = Scope(frozenset({"summary", "chat"}), frozenset({"m1"}))
    assert scope.refusal("chat", ["m1"]) is None
    assert scope.refusal("batch", ["m1"]) == (
        "this token may use job types chat, summary and models m1; the call asks for job type 'batch' and models m1"
    )
    assert "models m1, m2" in (scope.refusal("chat", ["m1", "m2"]) or "")
    assert "job type none (a token restricted to job types must name one)" in (scope.refusal("", ["m1"]) or "")
    assert "models none (a token restricted to models must name them)" in (scope.refusal("chat", []) or "")


def test_an_unrestricted_dimension_takes_anything() -> None:
    assert Scope(frozenset({"chat"}), None).refusal("chat", []) is None
    assert "models any" in (Scope(frozenset({"chat"}), None).refusal("x", []) or "")
    assert Scope(None, frozenset({"m1"})).refusal("", ["m1"]) is None
    assert UNRESTRICTED.refusal("", []) is None and not UNRESTRICTED.restricted


def test_reload_changes_a_scope_and_a_bad_file_keeps_the_old_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, f"{SECRET} job_types=chat\n")
    tokens = Tokens(path)
    path.write_text(f"{SECRET} job_types=summary\n")
    tokens.reload()
    assert tokens.identify(bearer(SECRET)) == Scope(frozenset({"summary"}), None)
    path.write_text(f"{SECRET} job_types=summary job_types=chat\n")
    with caplog.at_level(logging.WARNING, logger="rlcommon.auth"):
        tokens.reload()
    assert tokens.identify(bearer(SECRET)) == Scope(frozenset({"summary"}), None)
    assert "line 1: job_types is given twice; keeping the 1 tokens read before" in caplog.text
    assert SECRET not in caplog.text
