"""Retry timing of the writer."""

from __future__ import annotations

import pytest

from lmod_tracker.pipeline import backoff


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    for attempt, low, high in ((1, 0.25, 0.5), (2, 0.5, 1.0), (3, 1.0, 2.0), (10, 15.0, 30.0)):
        delays = {backoff(attempt, 0.5, 30.0) for _ in range(50)}
        assert all(low <= d <= high for d in delays)
        assert len(delays) > 1  # jittered


@pytest.mark.parametrize("attempt", [1025, 10_000, 10**9])
def test_backoff_after_days_of_retries_stays_at_the_maximum(attempt: int) -> None:
    """An outage of 6 h at the defaults is 1025 attempts: 2.0 ** 1024 overflowed a float."""
    assert 15.0 <= backoff(attempt, 0.5, 30.0) <= 30.0
