"""Assignment by salted hash: pinned cases, stickiness and proportions."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from experiments.assignment import (
    allocate_share,
    arm_block,
    assign,
    bucket_ranges,
    choose_arm,
    hash_bucket,
    layer_bucket,
    layer_share_problems,
    stratified_assign,
)

GOLDEN = Path(__file__).parent / "golden" / "assignment_cases.json"


def test_pinned_cases() -> None:
    """Buckets must never change between versions: that would move customers between arms."""
    cases = json.loads(GOLDEN.read_text())
    for case in cases:
        assert hash_bucket(case["salt"], case["unit"]) == case["bucket"]
        arms = [(a, w) for a, w in case["arms"]]
        assert choose_arm(case["bucket"], bucket_ranges(arms)) == case["arm"]


def test_sticky_and_independent_of_order_and_population() -> None:
    arms = [("control", 1.0), ("email", 1.0), ("email_sms", 1.0)]
    ids = [f"cus_{i:06d}" for i in range(2_000)]
    first = dict(zip(ids, assign("salt-1", ids, arms), strict=True))
    subset = ids[::-7]
    again = dict(zip(subset, assign("salt-1", subset, arms), strict=True))
    assert all(first[i] == again[i] for i in subset)
    reshuffled = dict(zip(ids, assign("salt-2", ids, arms), strict=True))
    moved = sum(first[i][0] != reshuffled[i][0] for i in ids)
    assert 1_100 < moved < 1_550  # a new salt re-randomises: about 2/3 move


def test_proportions_follow_weights() -> None:
    arms = [("control", 1.0), ("a", 2.0), ("b", 1.0)]
    ids = [f"cus_{i}" for i in range(40_000)]
    counts = {name: 0 for name, _ in arms}
    for arm, _ in assign("weights", ids, arms):
        counts[arm] += 1
    observed = [counts[name] for name, _ in arms]
    expected = [10_000, 20_000, 10_000]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_bucket_ranges_cover_unit_interval() -> None:
    ranges = bucket_ranges([("x", 0.3), ("y", 0.3), ("z", 0.4)])
    assert ranges[0].start == 0.0 and ranges[-1].end == 1.0
    assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
    assert choose_arm(0.9999999, ranges) == "z"


# --- Weighted blocks, strata, layers: properties (hypothesis) -------------------------------------

ARMS = st.lists(st.integers(1, 4), min_size=2, max_size=4).map(
    lambda ws: [(f"arm{i}", float(w)) for i, w in enumerate(ws)]
)
UNITS = st.lists(
    st.tuples(st.integers(0, 10**6).map(lambda i: f"cus_{i:07d}"), st.sampled_from("abc")),
    min_size=1,
    max_size=300,
    unique_by=lambda u: u[0],
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(units=UNITS, arms=ARMS, seed=st.integers(0, 2**32 - 1))
def test_stratified_assignment_is_deterministic_and_independent_of_input_order(
    units: list[tuple[str, str]], arms: list[tuple[str, float]], seed: int
) -> None:
    first, counts = stratified_assign("s", units, arms, {})
    shuffled = list(units)
    random.Random(seed).shuffle(shuffled)
    again, counts_again = stratified_assign("s", shuffled, arms, {})
    assert dict(zip(units, first, strict=True)) == dict(zip(shuffled, again, strict=True))
    assert counts == counts_again
    plain = dict(zip(units, assign("s", [u for u, _ in units], arms), strict=True))
    plain_shuffled = dict(zip(shuffled, assign("s", [u for u, _ in shuffled], arms), strict=True))
    assert plain == plain_shuffled


@settings(max_examples=40, deadline=None, derandomize=True)
@given(units=UNITS, arms=ARMS, cuts=st.lists(st.integers(0, 300), max_size=4))
def test_stratified_runs_stay_balanced_within_every_stratum(
    units: list[tuple[str, str]], arms: list[tuple[str, float]], cuts: list[int]
) -> None:
    """Whatever runs the customers arrive in, each stratum's arm counts stay within one block of
    the weights (every finished block holds the exact ratio)."""
    block = arm_block(arms)
    per_block = Counter(block)
    counts: dict[str, int] = {}
    given: dict[str, str] = {}
    bounds = sorted({0, len(units), *(min(c, len(units)) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        chosen, counts = stratified_assign("s", units[lo:hi], arms, counts)
        for (unit, _), (arm, _) in zip(units[lo:hi], chosen, strict=True):
            assert unit not in given  # nobody is assigned twice
            given[unit] = arm
    total = sum(w for _, w in arms)
    for stratum in "abc":
        members = [u for u, s in units if s == stratum]
        tally = Counter(given[u] for u in members)
        for name, weight in arms:
            expected = len(members) * weight / total
            assert abs(tally[name] - expected) <= per_block[name], (stratum, name)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(arms=ARMS, salt=st.text(min_size=1, max_size=12))
def test_arm_shares_are_within_three_standard_errors_of_the_weights(
    arms: list[tuple[str, float]], salt: str
) -> None:
    n = 4_000
    ids = [f"cus_{i:06d}" for i in range(n)]
    tally = Counter(arm for arm, _ in assign(salt, ids, arms))
    total = sum(w for _, w in arms)
    for name, weight in arms:
        p = weight / total
        assert abs(tally[name] - n * p) <= 3 * math.sqrt(n * p * (1 - p)), name


@settings(max_examples=60, deadline=None, derandomize=True)
@given(shares=st.lists(st.integers(1, 60).map(lambda p: p / 100), min_size=1, max_size=6))
def test_layer_ranges_never_overlap(shares: list[float]) -> None:
    taken: list[tuple[float, float]] = []
    for share in shares:
        if sum(hi - lo for lo, hi in taken) + share > 1 + 1e-9:
            with pytest.raises(ValueError, match="no free range"):
                allocate_share(taken, share)
            continue
        lo, hi = allocate_share(taken, share)
        assert hi - lo == pytest.approx(share) and 0 <= lo < hi <= 1
        assert all(hi <= a or lo >= b for a, b in taken)
        taken.append((lo, hi))
    units = [f"cus_{i}" for i in range(500)]
    owners = [
        [k for k, (lo, hi) in enumerate(taken) if lo <= layer_bucket("l", u) < hi] for u in units
    ]
    assert all(len(o) <= 1 for o in owners)


def test_arm_block_keeps_the_exact_ratio_or_refuses() -> None:
    assert Counter(arm_block([("c", 1), ("e", 1), ("s", 1)])) == {"c": 1, "e": 1, "s": 1}
    assert Counter(arm_block([("a", 0.3), ("b", 0.7)])) == {"a": 3, "b": 7}
    assert Counter(arm_block([("a", 1), ("b", 2)])) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="ratio of small integers"):
        arm_block([("a", 1), ("b", math.sqrt(2))])


def test_over_full_layers_name_every_file() -> None:
    problems = layer_share_problems(
        [("a.yaml", "a", "l", 0.6), ("b.yaml", "b", "l", 0.5), ("c.yaml", "c", "m", 0.9)]
    )
    assert [path for path, _ in problems] == ["a.yaml", "b.yaml"]
    assert all("a 0.6 (a.yaml), b 0.5 (b.yaml)" in message for _, message in problems)
