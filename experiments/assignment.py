"""Arm assignment by salted hash, in three small pure functions (as GrowthBook's SDK does):
hash -> bucket ranges -> choose arm.

A customer's bucket depends only on the salt and their id, so assignment is sticky: re-running an
experiment, on any machine, puts everyone in the same arm. Changing the salt reshuffles everyone,
which is why a running experiment's salt and arms are frozen (see ``models.experiments``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ArmRange:
    arm: str
    start: float
    end: float


def hash_bucket(salt: str, unit_id: str) -> float:
    """A uniform position in [0, 1) from the first 8 bytes of sha256("salt:unit_id")."""
    digest = hashlib.sha256(f"{salt}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def bucket_ranges(arms: Sequence[tuple[str, float]]) -> list[ArmRange]:
    """Split [0, 1) into consecutive ranges proportional to the arms' positive weights."""
    if not arms:
        raise ValueError("an experiment needs at least one arm")
    total = sum(weight for _, weight in arms)
    if any(weight <= 0 for _, weight in arms) or total <= 0:
        raise ValueError("arm weights must be positive")
    ranges: list[ArmRange] = []
    start = 0.0
    for i, (name, weight) in enumerate(arms):
        end = 1.0 if i == len(arms) - 1 else start + weight / total
        ranges.append(ArmRange(name, start, end))
        start = end
    return ranges


def choose_arm(bucket: float, ranges: Sequence[ArmRange]) -> str:
    """The arm whose range contains ``bucket``."""
    for arm_range in ranges:
        if arm_range.start <= bucket < arm_range.end:
            return arm_range.arm
    return ranges[-1].arm


def assign(
    salt: str, unit_ids: Sequence[str], arms: Sequence[tuple[str, float]]
) -> list[tuple[str, float]]:
    """(arm, bucket) for each unit, in order."""
    ranges = bucket_ranges(arms)
    out = []
    for unit_id in unit_ids:
        bucket = hash_bucket(salt, unit_id)
        out.append((choose_arm(bucket, ranges), bucket))
    return out
