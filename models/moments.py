"""Sums around a shift, as the SQL aggregates return them, and their exact combination.

A sum of squares taken around zero loses every digit of the variance when the values are large
and close together (values near 1e9 that differ by 0 or 1 give ``sum_squares - sum**2 / n == 0``
in doubles). The per-arm aggregates are therefore taken around a per-arm *shift* (the value of one
customer of the arm): ``sum(v - shift)`` and ``sum((v - shift)**2)``, which stay small. Groups
(days, arms) taken around different shifts combine exactly by re-shifting (Chan, Golub & LeVeque,
"Updating formulae and a pairwise algorithm for computing sample variances", 1979).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.stats import SampleStats
from experiments.stats.cuped import PairedStats


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of ``y`` (and a pre-period ``x``) around shifts ``shift_y``/``shift_x``:
    ``sum_y = Σ(y - shift_y)``, ``sum_y2 = Σ(y - shift_y)²``, ``sum_xy = Σ(x - shift_x)(y - shift_y)``."""

    n: int
    shift_y: float = 0.0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    shift_x: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    def reshift(self, shift_y: float, shift_x: float = 0.0) -> Moments:
        """The same sums around other shifts: with ``d = old - new``,
        ``Σ(v - new) = Σ(v - old) + n d`` and ``Σ(v - new)² = Σ(v - old)² + 2 d Σ(v - old) + n d²``."""
        dy, dx = self.shift_y - shift_y, self.shift_x - shift_x
        if dy == 0 and dx == 0:
            return self
        n = self.n
        return Moments(
            n=n,
            shift_y=shift_y,
            sum_y=self.sum_y + n * dy,
            sum_y2=self.sum_y2 + 2 * dy * self.sum_y + n * dy * dy,
            shift_x=shift_x,
            sum_x=self.sum_x + n * dx,
            sum_x2=self.sum_x2 + 2 * dx * self.sum_x + n * dx * dx,
            sum_xy=self.sum_xy + dy * self.sum_x + dx * self.sum_y + n * dx * dy,
        )

    def __add__(self, other: Moments) -> Moments:
        """Both groups together, around this group's shifts (an empty group keeps the other's)."""
        if self.n == 0:
            return other
        o = other.reshift(self.shift_y, self.shift_x)
        return Moments(
            n=self.n + o.n,
            shift_y=self.shift_y,
            sum_y=self.sum_y + o.sum_y,
            sum_y2=self.sum_y2 + o.sum_y2,
            shift_x=self.shift_x,
            sum_x=self.sum_x + o.sum_x,
            sum_x2=self.sum_x2 + o.sum_x2,
            sum_xy=self.sum_xy + o.sum_xy,
        )

    def sample(self) -> SampleStats:
        """The outcome ``y`` for the statistics engine: ``n``, ``Σy`` and ``Σ(y - shift)²`` around
        this group's shift, so the variance stays exact for large values with a small spread."""
        n, s = self.n, self.shift_y
        if n == 0:
            return SampleStats(n=0, sum=0.0, sum_squares=0.0)
        return SampleStats(n=n, sum=n * s + self.sum_y, sum_squares=max(self.sum_y2, 0.0), shift=s)

    def paired(self) -> PairedStats:
        """``x`` and ``y`` as the raw sums CUPED takes (``PairedStats`` has no shift: its
        covariances are formed from raw sums)."""
        n, sx, sy = self.n, self.shift_x, self.shift_y
        if n == 0:
            return PairedStats(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        y2 = self.sum_y2 + 2 * sy * self.sum_y + n * sy * sy
        x2 = self.sum_x2 + 2 * sx * self.sum_x + n * sx * sx
        xy = self.sum_xy + sy * self.sum_x + sx * self.sum_y + n * sx * sy
        return PairedStats(
            n=n,
            sum_x=n * sx + self.sum_x,
            sum_x2=max(x2, 0.0),
            sum_y=n * sy + self.sum_y,
            sum_y2=max(y2, 0.0),
            sum_xy=xy,
        )

    @property
    def mean(self) -> float:
        """Mean of ``y``; 0.0 when empty."""
        return self.shift_y + self.sum_y / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """Sample variance of ``y`` from the shifted sums (stable); 0.0 when n < 2."""
        if self.n < 2:
            return 0.0
        return max(self.sum_y2 - self.sum_y * self.sum_y / self.n, 0.0) / (self.n - 1)


def total(groups: list[Moments]) -> Moments:
    """All ``groups`` together (around the first non-empty group's shifts)."""
    out = Moments(n=0)
    for g in groups:
        out = out + g
    return out
