"""The wire numbering on its own: pure functions, checked against a brute-force model of the same rule."""

from __future__ import annotations

import random

import pytest

from agents_bar_stream.numbering import count_in, local_for_wire, range_end, wire_seq, with_range, without


def test_with_range_merges_touching_and_overlapping_ranges():
    assert with_range([], 5, 7) == [[5, 7]]
    assert with_range([[0, 2], [8, 9]], 2, 4) == [[0, 4], [8, 9]]
    assert with_range([[0, 2], [8, 9]], 3, 8) == [[0, 2], [3, 9]]
    assert with_range([[0, 10]], 3, 4) == [[0, 10]]


def test_without_cuts_what_the_other_ranges_cover():
    assert without([[0, 10]], [[2, 4], [6, 7]]) == [[0, 2], [4, 6], [7, 10]]
    assert without([[0, 10]], [[0, 10]]) == []
    assert without([[0, 3], [5, 9]], [[2, 6]]) == [[0, 2], [6, 9]]
    assert without([[4, 8]], []) == [[4, 8]]


def test_range_end_and_count_in():
    ranges = [[2, 4], [10, 13]]
    assert [range_end(ranges, i) for i in (1, 2, 3, 4, 12)] == [None, 4, 4, None, 13]
    assert count_in(ranges, 0, 100) == 5
    assert count_in(ranges, 3, 11) == 2


@pytest.mark.parametrize("seed", range(20))
def test_wire_numbers_are_the_locals_that_remain_counted_without_gaps(seed):
    rng = random.Random(seed)
    ranges: list = []
    for _ in range(rng.randrange(6)):
        start = rng.randrange(100)
        ranges = with_range(ranges, start, start + rng.randrange(1, 10))
    removed_before, shift = rng.randrange(5), rng.randrange(3)
    removed = {i for a, b in ranges for i in range(a, b)}
    kept = [i for i in range(120) if i not in removed]
    for n, local in enumerate(kept):  # the model: the n-th kept step is wire n (less the folded and the shift)
        assert wire_seq(local, removed_before, ranges, shift) == n - removed_before - shift
    first = kept[len(kept) // 3]
    for local in kept[len(kept) // 3:]:
        wire = wire_seq(local, removed_before, ranges, shift)
        assert local_for_wire(wire, first, removed_before, ranges, shift) == local
