"""Fuzz tests (issue 11): generated experiment files, byte strings, CSVs and sufficient statistics.

The property everywhere: the result is a success or the project's own error type (SpecError,
CsvDataError, ValueError from the statistics) with one-line messages; never another exception,
and never a non-finite number, or a missing one, under status ``ok``. Hypothesis runs
derandomized (the same examples on every run and machine) with a bounded number of examples; no
example database is written.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from io import StringIO
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from experiments.csvdata import CsvDataError, MetricSpec, read_experiment_csv
from experiments.loader import SpecError, load_spec, parse_spec
from experiments.stats import SampleStats, srm_test, two_proportion_ztest, welch_ttest
from experiments.stats.bayes import bayes_binary, bayes_continuous
from experiments.stats.cuped import PairedStats, cuped_adjust
from experiments.stats.fixed import fisher_exact_test, needs_exact, omnibus_test
from experiments.stats.multiple import adjust_p_values
from experiments.stats.power import mde_for_n, plan
from experiments.stats.sequential import sequential_test
from experiments.stats.survival import SurvivalCounts, kaplan_meier, log_rank, rmst_difference
from messaging.render import template_exists, template_variables


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# --- experiment files ----------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "key": "fuzz-exp",
    "hypothesis": "Reminders help.",
    "segment": {"where": "card_expires_in_days <= 30"},
    "arms": [
        {"name": "control", "weight": 1},
        {
            "name": "email",
            "weight": 2,
            "steps": [{"at": "0d", "channel": "email", "template": "card_expiry"}],
        },
    ],
    "metrics": {"primary": "card_updated_14d", "secondary": ["retained_30d"]},
    "analysis": {"alpha": 0.05, "baseline": "control", "mde": 0.02},
    "messaging": {"quiet_hours": "21:00-08:00", "frequency_cap": {"max": 2, "per": "7d"}},
    "schedule": {"cron": "0 9 * * *", "timezone": "Europe/Stockholm"},
}
FIELD_NAMES = [
    *VALID,
    "where",
    "name",
    "weight",
    "steps",
    "at",
    "channel",
    "template",
    "unless",
    "offer",
    "kind",
    "percent",
    "months",
    "primary",
    "alpha",
    "per",
    "max",
    "cron",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["0d", "3d", "9999999999d", "12h", "-1d", "３d", "control", "[/bold]", "\x00"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=10)), inner, max_size=4
        ),
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


PATHS = [p for p in _paths(VALID) if p]


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy: Any = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


def _dump(document: Any) -> str:
    out = StringIO()
    YAML(typ="safe", pure=True).dump(document, out)
    return out.getvalue()


def _assert_spec_error(error: SpecError) -> None:
    assert error.problems
    for problem in error.problems:
        text = str(problem)
        assert text and "\n" not in text and "\r" not in text, repr(text)
        assert problem.line is None or problem.line >= 1


def _parse(text: str) -> None:
    try:
        parse_spec(text, "fuzz.yaml", template_exists, template_variables)
    except SpecError as error:
        _assert_spec_error(error)


@fuzz(200)
@given(path=st.sampled_from(PATHS), value=values)
def test_fuzz_one_field_of_a_valid_file(path: tuple[Any, ...], value: Any) -> None:
    _parse(_dump(_replace(VALID, path, value)))


@fuzz(150)
@given(document=values)
def test_fuzz_whole_yaml_documents(document: Any) -> None:
    _parse(_dump(document))


@fuzz(200)
@given(
    position=st.integers(min_value=0, max_value=len(_dump(VALID))),
    inserted=st.text(max_size=12)
    | st.sampled_from(["[", "{", "&a ", "*a", "- ", ": ", "\t", "'", '"', "!!int ", "? "]),
)
def test_fuzz_text_inserted_into_a_valid_file(position: int, inserted: str) -> None:
    text = _dump(VALID)
    _parse(text[:position] + inserted + text[position:])


@fuzz(150)
@given(data=st.binary(max_size=300))
def test_fuzz_byte_strings_into_the_loader(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("bytes") / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_spec(path, template_exists, template_variables)
    except SpecError as error:
        _assert_spec_error(error)


# --- CSV files -----------------------------------------------------------------------------------

cells = st.one_of(
    st.sampled_from(["0", "1", "true", "No", "", " ", "1.5", "1,5", "-0", "nan", "inf", "1e308"]),
    st.sampled_from(["2e308", "-1e308", "1e-320", "0x10", '"1"', '"a,b"', '"', "A", "B", "ctl"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=6),
)


@fuzz(200)
@given(
    header=st.lists(st.sampled_from(["arm", "y", "x", "arm ", "Y", ""]), min_size=1, max_size=4),
    rows=st.lists(st.lists(cells, min_size=1, max_size=4), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t"]),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    kind=st.sampled_from(["binary", "continuous"]),
    baseline=st.sampled_from(["A", "ctl", "1"]),
)
def test_fuzz_csv_reader(
    tmp_path_factory: pytest.TempPathFactory,
    header: list[str],
    rows: list[list[str]],
    delimiter: str,
    ending: str,
    kind: str,
    baseline: str,
) -> None:
    text = ending.join(delimiter.join(r) for r in [header, *rows]) + ending
    path = tmp_path_factory.mktemp("csv") / "fuzz.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    metric = MetricSpec("y", "binary" if kind == "binary" else "continuous")
    try:
        data = read_experiment_csv(path, "arm", baseline, [metric])
    except CsvDataError as error:
        assert "\n" not in str(error) and str(error).startswith(str(path))
        return
    for s in data.stats["y"].values():
        assert s.n >= 1 and all(math.isfinite(v) for v in (s.sum, s.sum_squares, s.variance))
    if len(data.arms) >= 2:
        other = data.arms[1]
        check = two_proportion_ztest if metric.kind == "binary" else welch_ttest
        _assert_honest(check(data.stats["y"][other], data.stats["y"][baseline]))


# --- statistics ----------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def binary_stats(draw: st.DrawFn) -> SampleStats:
    n = draw(st.integers(min_value=0, max_value=10**6) | st.integers(min_value=0, max_value=6))
    successes = draw(st.integers(min_value=0, max_value=n))
    return SampleStats(n, float(successes), float(successes))


@st.composite
def continuous_stats(draw: st.DrawFn) -> SampleStats:
    """Either consistent statistics of some data, or any finite triple the constructor takes."""
    if draw(st.booleans()):
        n = draw(st.integers(min_value=0, max_value=10**6) | st.integers(min_value=0, max_value=5))
        mean = draw(finite | finite.filter(lambda v: abs(v) < 1e150))
        sd = draw(st.floats(min_value=0, max_value=1e150) | st.floats(min_value=0, max_value=10))
        shift = draw(st.sampled_from([0.0, mean]))
        total = n * mean
        squares = (n - 1) * sd * sd + n * (mean - shift) * (mean - shift) if n else 0.0
        if n == 0:
            total, shift = 0.0, 0.0
        assume(math.isfinite(total) and math.isfinite(squares))
        return SampleStats(n, total, squares, shift)
    n = draw(st.integers(min_value=0, max_value=1000))
    try:
        return SampleStats(n, draw(finite), draw(finite), draw(finite | st.just(0.0)))
    except ValueError as error:
        assert "\n" not in str(error)
        assume(False)
        raise  # pragma: no cover - assume(False) does not return


def _numbers(result: Any) -> Iterator[Any]:
    if not is_dataclass(result):
        yield result
        return
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, tuple | list):
            yield from value
        elif isinstance(value, dict):
            yield from value.values()
        else:
            yield value


def _assert_honest(result: Any) -> None:
    """No NaN or infinity anywhere; under status ``ok`` no number is missing either."""
    for value in _numbers(result):
        if isinstance(value, float):
            assert math.isfinite(value), result
    status = getattr(result, "status", None)
    if status == "ok":
        for name in ("abs_lift", "abs_ci", "rel_lift", "rel_ci", "p_value", "chi2", "statistic"):
            if hasattr(result, name):
                assert getattr(result, name) is not None, (name, result)


def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        result = function(*args, **kwargs)
    except ValueError as error:
        assert "\n" not in str(error), str(error)
        return None
    _assert_honest(result)
    return result


@fuzz(120)
@given(treatment=binary_stats(), baseline=binary_stats(), alpha=st.sampled_from([0.05, 0.01, 0.2]))
def test_fuzz_binary_statistics(
    treatment: SampleStats, baseline: SampleStats, alpha: float
) -> None:
    _call(two_proportion_ztest, treatment, baseline, alpha)
    _call(sequential_test, "binary", treatment, baseline)
    _call(bayes_binary, treatment, baseline, alpha=alpha)
    if treatment.n and baseline.n:
        _call(needs_exact, treatment, baseline)
        _call(fisher_exact_test, treatment, baseline)
    _call(omnibus_test, "binary", {"a": treatment, "b": baseline})
    _call(srm_test, [treatment.n, baseline.n], [1.0, 2.0])


@fuzz(300)
@given(treatment=continuous_stats(), baseline=continuous_stats(), third=continuous_stats())
def test_fuzz_continuous_statistics(
    treatment: SampleStats, baseline: SampleStats, third: SampleStats
) -> None:
    first = _call(welch_ttest, treatment, baseline)
    if first is not None:
        assert first.status != "ok" or baseline.mean > 0
    _call(sequential_test, "continuous", treatment, baseline)
    _call(bayes_continuous, treatment, baseline)
    _call(omnibus_test, "continuous", {"a": treatment, "b": baseline, "c": third})


@fuzz(200)
@given(
    arms=st.lists(
        st.tuples(st.integers(0, 1000), finite, finite, finite, finite, finite).map(
            lambda t: t if t[0] else (0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ),
        min_size=2,
        max_size=4,
    )
)
def test_fuzz_cuped(arms: list[tuple[int, float, float, float, float, float]]) -> None:
    paired = {}
    for i, (n, sx, sx2, sy, sy2, sxy) in enumerate(arms):
        try:
            paired[f"arm{i}"] = PairedStats(n, sx, abs(sx2), sy, abs(sy2), sxy)
        except ValueError:
            return
    result = _call(cuped_adjust, paired)
    if result is not None and result.status == "ok":
        assert result.theta is not None and result.variance_reduction is not None


day_counts = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=8
)


def _survival(raw: list[tuple[int, int, int]]) -> SurvivalCounts:
    merged: dict[int, tuple[int, int]] = {}
    for day, events, censored in raw:
        e, c = merged.get(day, (0, 0))
        merged[day] = (e + events, c + censored)
    days = sorted(merged)
    return SurvivalCounts(
        tuple(days), tuple(merged[d][0] for d in days), tuple(merged[d][1] for d in days)
    )


@fuzz(200)
@given(arms=st.lists(day_counts, min_size=2, max_size=4), horizon=st.integers(1, 90))
def test_fuzz_survival(arms: list[list[tuple[int, int, int]]], horizon: int) -> None:
    counts = {f"arm{i}": _survival(raw) for i, raw in enumerate(arms)}
    result = _call(log_rank, counts)
    if result is not None and result.status == "ok":
        assert result.df == len(arms) - 1
    for c in counts.values():
        _call(kaplan_meier, c)
    _call(rmst_difference, counts["arm0"], counts["arm1"], horizon)


@fuzz(200)
@given(
    p_values=st.lists(st.none() | st.floats(0, 1) | finite, max_size=8),
    method=st.sampled_from(["holm", "bh", "none"]),
)
def test_fuzz_p_value_adjustment(p_values: list[float | None], method: str) -> None:
    try:
        adjusted = adjust_p_values(p_values, method)  # type: ignore[arg-type]
    except ValueError as error:
        assert "\n" not in str(error)
        return
    for raw, new in zip(p_values, adjusted, strict=True):
        assert (raw is None) == (new is None)
        if raw is not None and new is not None:
            assert raw - 1e-12 <= new <= 1.0


@fuzz(200)
@given(
    kind=st.sampled_from(["binary", "continuous"]),
    mean=finite | st.floats(0, 1),
    variance=st.none() | finite,
    mde=finite | st.floats(1e-300, 1e-3),
    weights=st.lists(finite, min_size=1, max_size=4),
    inflow=st.none() | finite,
    n=st.integers(-1, 10**12),
)
def test_fuzz_power(
    kind: str,
    mean: float,
    variance: float | None,
    mde: float,
    weights: list[float],
    inflow: float | None,
    n: int,
) -> None:
    result = _call(plan, kind, mean, variance, mde, 0.05, 0.8, weights, inflow)
    if result is not None:
        assert result.n_per_arm >= 2 and result.total >= result.n_per_arm
    reachable = _call(mde_for_n, kind, mean, variance, n)
    if reachable is not None:
        assert math.isfinite(reachable) and reachable >= 0
