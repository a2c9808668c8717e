"""Adapters for the official provider SDKs: an answer or an error → the report to release with.

Each adapter is its own module and imports its SDK only when imported itself, so ``rlclient`` and
this package work without either SDK installed:

- :mod:`rlclient.providers.openai` (``pip install 'rlclient[openai]'``): ``openai_response``,
  ``openai_error``, ``openai_report``, ``openai_usage``, ``openai_feedback``;
- :mod:`rlclient.providers.anthropic` (``pip install 'rlclient[anthropic]'``): the same with
  ``anthropic_``;
- :mod:`rlclient.providers.headers`: the header parsing both use.

::

    from rlclient.providers.openai import openai_report, openai_response

    with client.acquire("summary", timeout=30) as lease:
        with openai_report(lease):  # a 429 is released RATE_LIMITED with its retry-after; re-raised
            raw = oai.chat.completions.with_raw_response.create(model=lease.provider_model, ...)
            lease.report(openai_response(raw))
        completion = raw.parse()
"""

from rlclient.types import provider_model

__all__ = ["provider_model"]
