"""Assignment by salted hash: pinned cases, stickiness and proportions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from scipy import stats

from experiments.assignment import assign, bucket_ranges, choose_arm, hash_bucket

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
