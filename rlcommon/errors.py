"""The one error of the shared security and logging set-up."""

from __future__ import annotations


class SetupError(Exception):
    """A TLS or token file that cannot be used. The message names the file and never holds a secret."""
