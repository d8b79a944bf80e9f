"""The steps' own small rules (the steps end to end: tests/dags)."""

from __future__ import annotations

import pytest

from pipeline.steps import batch_size_within


@pytest.mark.parametrize(("count", "batch_size", "max_batches", "size"), [
    (0, 200, 1024, 200), (2000, 200, 1024, 200), (204_800, 200, 1024, 200),  # within the limit: as set
    (204_801, 200, 1024, 201), (1_000_000, 200, 1024, 977), (7, 1, 2, 4), (5, 1, 0, 5)])
def test_batches_grow_just_enough_to_stay_within_airflows_mapped_task_limit(count, batch_size, max_batches, size):
    assert batch_size_within(count, batch_size, max_batches) == size
    assert -(-count // size) <= max(1, max_batches) or count == 0
