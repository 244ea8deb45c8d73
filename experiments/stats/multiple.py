"""Multiple-comparison corrections: Holm (family-wise error) and Benjamini–Hochberg (FDR).

An experiment with several arms and metrics makes many comparisons; at alpha = 0.05 each, six null
comparisons produce at least one false "win" about 1 - 0.95**6 ≈ 26% of the time. Adjusted
p-values are compared with the same ``alpha`` as before; confidence intervals are not adjusted.

The families Retain uses (:func:`adjust_by_role`), within one experiment and one analysis:

- **decision family**: every (non-baseline arm x metric) comparison of the primary and the
  secondary metrics. These are the comparisons a marketer reads to pick a winner, so they share
  one error budget.
- **guardrail family**: every (non-baseline arm x guardrail metric) comparison, corrected on
  its own. Guardrails answer a different question, "did we break something?" (unsubscribes,
  complaints, refunds), where a missed harm costs more than a false alarm. Pooling them with the
  decision family would dilute them (more comparisons -> each guardrail needs a smaller p to
  fire, so real harm is missed) and would let a long guardrail list dilute the primary metric's
  power. Separate families keep each question's error rate where it is meant to be.

Comparisons with no p-value (``None``: a degenerate comparison such as zero variance or too few
units) stay ``None`` and do not count towards the family size ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Correction = Literal["holm", "bh", "none"]
MetricRole = Literal["primary", "secondary", "guardrail"]
Family = Literal["decision", "guardrail"]


def _check_p_values(p_values: Sequence[float | None]) -> None:
    for i, p in enumerate(p_values):
        if p is None:
            continue
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            raise ValueError(f"p-value #{i} must be a finite number or None, got {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"p-value #{i} must be between 0 and 1, got {p!r}")


def _holm(p: list[float]) -> list[float]:
    """Holm (1979) step-down: sorted ascending, ``adj_(i) = max_{j<=i} min(1, (m-j+1) p_(j))``."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):  # rank 0 is the smallest p-value, multiplied by m
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _bh(p: list[float]) -> list[float]:
    """Benjamini–Hochberg (1995) step-up: ``adj_(i) = min_{j>=i} min(1, m p_(j) / j)``."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i], reverse=True)
    adjusted = [0.0] * m
    running = 1.0
    for position, i in enumerate(order):  # position 0 is the largest p-value, rank j = m
        running = min(running, m * p[i] / (m - position))
        adjusted[i] = running
    return adjusted


def adjust_p_values(
    p_values: Sequence[float | None], method: Correction = "holm"
) -> list[float | None]:
    """Adjusted p-values, in the input order, for one family of comparisons.

    - ``"holm"``: Holm (1979), "A simple sequentially rejective multiple test procedure",
      Scand. J. Statist. 6. Step-down Bonferroni; controls the family-wise error rate (the chance
      of any false positive) under any dependence. The default: the decision family is small,
      and a marketer reads "significant" as "this arm really is different".
    - ``"bh"``: Benjamini & Hochberg (1995), JRSS B 57. Step-up; controls the false discovery
      rate (the expected share of false positives among the significant results) for
      independent or positively dependent tests. More power when the family is large.
    - ``"none"``: the p-values unchanged.

    Both adjustments are monotone in the raw p-values and capped at 1 (as statsmodels
    ``multipletests(method="holm" / "fdr_bh")``). ``None`` entries stay ``None`` and are not
    counted in the family. An empty family gives ``[]``. A p-value outside ``[0, 1]`` or not a
    finite number, or an unknown method, is a ValueError.
    """
    _check_p_values(p_values)
    if method not in ("holm", "bh", "none"):
        raise ValueError(f"unknown correction {method!r}; expected 'holm', 'bh' or 'none'")
    present = [i for i, p in enumerate(p_values) if p is not None]
    raw = [float(p) for p in p_values if p is not None]
    if method == "holm":
        done = _holm(raw)
    elif method == "bh":
        done = _bh(raw)
    else:
        done = raw
    adjusted: list[float | None] = [None] * len(p_values)
    for i, value in zip(present, done, strict=True):
        adjusted[i] = value
    return adjusted


def family_of(role: MetricRole) -> Family:
    """The correction family of a metric role: primary and secondary -> ``"decision"``,
    guardrail -> ``"guardrail"`` (see the module docstring for why)."""
    if role in ("primary", "secondary"):
        return "decision"
    if role == "guardrail":
        return "guardrail"
    raise ValueError(
        f"unknown metric role {role!r}; expected 'primary', 'secondary' or 'guardrail'"
    )


def adjust_by_role(
    p_values: Sequence[float | None],
    roles: Sequence[MetricRole],
    method: Correction = "holm",
) -> list[float | None]:
    """Adjust each comparison within its family, in the input order.

    ``p_values[i]`` is one (non-baseline arm x metric) comparison and ``roles[i]`` the role of
    its metric. The decision family (primary + secondary) and the guardrail family are adjusted
    separately with :func:`adjust_p_values`.
    """
    if len(p_values) != len(roles):
        raise ValueError(
            f"adjust_by_role: {len(p_values)} p-values but {len(roles)} roles; "
            f"give one role per comparison"
        )
    families = [family_of(role) for role in roles]
    adjusted: list[float | None] = [None] * len(p_values)
    for family in ("decision", "guardrail"):
        members = [i for i, f in enumerate(families) if f == family]
        for i, value in zip(
            members, adjust_p_values([p_values[i] for i in members], method), strict=True
        ):
            adjusted[i] = value
    return adjusted
