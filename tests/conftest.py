"""Shared test settings: short and long forms of the expensive checks.

Statistical checks through the engine are sized twice.  By default (``make
test``) they run a short form that keeps the whole suite quick on two cores,
with bands wide enough for that size; with ``CAPSIM_LONG=1`` (``make
test-long``) the same tests run their full form with tighter bands.  Tests
marked ``@pytest.mark.slow`` are the ones whose two forms differ; both forms
use fixed seeds, so neither is flaky.

Use the ``size`` fixture: ``size(short, long)`` returns the value for the
form being run; ``size.long`` says which.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI must not flake); the long
# form explores new random examples each time, as a search for counterexamples.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=1000)

LONG = os.environ.get("CAPSIM_LONG", "").strip() not in ("", "0", "false", "no")


settings.load_profile("explore" if LONG else "fixed")


class Size:
    long = LONG

    def __call__(self, short, long):
        return long if LONG else short


@pytest.fixture
def size() -> Size:
    return Size()
