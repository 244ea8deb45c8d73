"""Arm assignment by salted hash, in three small pure functions (as GrowthBook's SDK does):
hash -> bucket ranges -> choose arm.

A customer's bucket depends only on the salt and their id, so assignment is sticky: re-running an
experiment, on any machine, puts everyone in the same arm. Changing the salt reshuffles everyone,
which is why a running experiment's salt and arms are frozen (see ``models.experiments``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction


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


# --- Weighted blocks, strata, holdout and layers --------------------------------------------------
#
# Stratified assignment balances arms within each stratum and stays sticky. Within a stratum,
# customers take consecutive *positions* in the order they are assigned: earlier runs first,
# and within one run by their bucket (the salted hash above), so the order never depends on the
# order of the input. Positions fill blocks of ``len(arm_block(arms))`` slots; a block is the
# arms' integer weights laid out evenly (``control, email, email_sms`` for 1:1:1) and rotated by
# a hash of (salt, stratum, block number), so every slot is each arm with probability equal to
# its weight share. A customer's arm is the arm of their slot. Every finished block holds the
# exact weight ratio, so within a stratum the arms never differ by more than one block; a later
# run continues the stratum's last block where it stopped, and nobody assigned earlier moves.
# The order inside a run is random (hash) and unrelated to any customer trait, so each customer
# still gets each arm with probability equal to its share.

HOLDOUT_ARM = "holdout"
MAX_BLOCK = 100


def arm_block(arms: Sequence[tuple[str, float]]) -> tuple[str, ...]:
    """The arms' weights as one block of slots in their exact integer ratio, arms interleaved.

    Weights must be in a ratio of small integers (a block of at most 100 slots: 1:1:1, 1:2,
    0.3:0.7); others raise ValueError.
    """
    ranges = bucket_ranges(arms)  # validates: at least one arm, positive weights
    total = sum(weight for _, weight in arms)
    shares = [Fraction(weight / total).limit_denominator(MAX_BLOCK) for _, weight in arms]
    size = math.lcm(*(share.denominator for share in shares))
    exact = all(
        abs(float(share) - weight / total) <= 1e-9
        for share, (_, weight) in zip(shares, arms, strict=True)
    )
    if not exact or size > MAX_BLOCK or sum(shares) != 1:
        raise ValueError(
            "stratified assignment needs arm weights in a ratio of small integers (a block of at"
            f" most {MAX_BLOCK} customers), e.g. 1:1:2; got "
            + ":".join(f"{weight:g}" for _, weight in arms)
        )
    counts = [int(share * size) for share in shares]
    slots = sorted(((j + 0.5) / count, i) for i, count in enumerate(counts) for j in range(count))
    return tuple(ranges[i].arm for _, i in slots)


def block_rotation(salt: str, stratum: str, block: int, size: int) -> int:
    """How far block number ``block`` of ``stratum`` is rotated: uniform on 0..size-1."""
    return int(hash_bucket(f"{salt}:block", f"{stratum}:{block}") * size)


def stratified_assign(
    salt: str,
    units: Sequence[tuple[str, str]],
    arms: Sequence[tuple[str, float]],
    assigned: Mapping[str, int],
) -> tuple[list[tuple[str, float]], dict[str, int]]:
    """(arm, bucket) for each ``(unit_id, stratum)``, in input order, and the new stratum counts.

    ``assigned`` holds how many customers each stratum already has (from earlier runs); the
    units must not be among them. The reference for the set-based SQL in ``models.assign``.
    """
    block = arm_block(arms)
    size = len(block)
    buckets = [hash_bucket(salt, unit) for unit, _ in units]
    order = sorted(range(len(units)), key=lambda i: (units[i][1], buckets[i], units[i][0]))
    counts = dict(assigned)
    out: list[tuple[str, float]] = [("", 0.0)] * len(units)
    for i in order:
        stratum = units[i][1]
        position = counts.get(stratum, 0)
        counts[stratum] = position + 1
        number, slot = divmod(position, size)
        rotation = block_rotation(salt, stratum, number, size)
        out[i] = (block[(slot + rotation) % size], buckets[i])
    return out, counts


def layer_bucket(layer: str, unit_id: str) -> float:
    """A customer's position in a layer; each experiment of the layer owns a range of it."""
    return hash_bucket(f"layer:{layer}", unit_id)


def allocate_share(taken: Sequence[tuple[float, float]], share: float) -> tuple[float, float]:
    """The first free range of width ``share`` in [0, 1) next to the ``taken`` ranges.

    Ranges are given once, when an experiment first runs, and never move (that would move
    customers between experiments). Raises ValueError when no free range is wide enough.
    """
    start = 0.0
    for lo, hi in sorted(taken):
        if lo - start >= share - 1e-12:
            break
        start = max(start, hi)
    if 1.0 - start < share - 1e-12:
        free = 1.0 - sum(hi - lo for lo, hi in taken)
        raise ValueError(
            f"the layer has no free range of {share:g} (free in all: {max(free, 0):.3g});"
            " lower the share or stop another experiment of the layer"
        )
    return start, min(start + share, 1.0)


def layer_share_problems(
    experiments: Sequence[tuple[str, str, str | None, float | None]],
) -> list[tuple[str, str]]:
    """(path, message) for every experiment of a layer whose shares add up to more than 100 %.

    ``experiments`` are ``(path, key, layer, share)``; every file of an over-full layer is named.
    """
    layers: dict[str, list[tuple[str, str, float]]] = {}
    for path, key, layer, share in experiments:
        if layer is not None and share is not None:
            layers.setdefault(layer, []).append((path, key, share))
    problems = []
    for layer, members in sorted(layers.items()):
        total = math.fsum(share for _, _, share in members)
        if total > 1 + 1e-9:
            listing = ", ".join(f"{key} {share:g} ({path})" for path, key, share in members)
            for path, key, _ in members:
                problems.append(
                    (
                        path,
                        f"experiment {key!r}: layer {layer!r} is over-full: its shares add up to"
                        f" {total:g} > 1 ({listing}); lower the shares so they sum to at most 1",
                    )
                )
    return problems
