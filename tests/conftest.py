"""Settings every test shares."""

from hypothesis import settings

# Hypothesis' per-example deadline is a timing check, and tests run on loaded 2-core machines where
# an example may wait on the CPU for a second: speed is for the benchmarks, not the tests.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")
