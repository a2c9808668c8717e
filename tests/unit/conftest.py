"""Property tests run with no per-example deadline: on a loaded machine an example that takes 100 ms
alone can take a second, and hypothesis would report that as a failure of the code under test."""

from hypothesis import settings

settings.register_profile("loaded-machine", deadline=None)
settings.load_profile("loaded-machine")
