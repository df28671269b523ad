"""Times in queries compare as the API shows them: to the microsecond, exactly."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from opendoctor.core.model import iso
from opendoctor.core.query import first_shown_at, micros, to_time

# From 2001 to 2100: the times alarms and their history carry.
TIMES = st.floats(min_value=1e9, max_value=4.1e9, allow_nan=False)


@given(TIMES)
def test_a_shown_time_read_back_is_the_same_microsecond(t: float) -> None:
    assert to_time(iso(t)) == micros(t)


@given(TIMES)
def test_first_shown_at_is_the_exact_lower_bound(t: float) -> None:
    us = micros(t)
    low = first_shown_at(us)
    assert micros(low) == us
    assert micros(math.nextafter(low, -math.inf)) == us - 1
    assert low <= t < first_shown_at(us + 1)
