"""Reading an experiment CSV into per-arm sufficient statistics: numbers against a direct numpy /
math.fsum computation on the same seeded data, the accepted spellings and file variants, and one
test per kind of bad input checking the line, column and value in the message."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from experiments.csvdata import (
    CsvDataError,
    CsvExperiment,
    MetricSpec,
    parse_metric_option,
    read_experiment_csv,
)
from experiments.stats import compare

CONVERTED = MetricSpec("converted", "binary")
REVENUE = MetricSpec("revenue", "continuous")
TRUE_SPELLINGS = ["1", "true", "True", "TRUE", "yes", "Yes", "YES", "1.0"]
FALSE_SPELLINGS = ["0", "false", "False", "FALSE", "no", "No", "NO", "0.0"]


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def read(path: Path, *metrics: MetricSpec, baseline: str = "control") -> CsvExperiment:
    return read_experiment_csv(path, "arm", baseline, list(metrics) or [CONVERTED])


def error(path: Path, *metrics: MetricSpec, baseline: str = "control", arm: str = "arm") -> str:
    with pytest.raises(CsvDataError) as info:
        read_experiment_csv(path, arm, baseline, list(metrics) or [CONVERTED])
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message


class Generated:
    """A seeded experiment: 3 arms (baseline not first in the file), mixed binary spellings."""

    def __init__(self, n: int = 2000, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        names = np.array(["email", "control", "email_sms"])
        self.arm = names[rng.integers(0, 3, n)]
        self.converted = rng.random(n) < np.where(self.arm == "control", 0.2, 0.25)
        self.revenue = np.round(rng.gamma(2.0, 20.0, n) * rng.random(n), 4)
        spelled = np.where(
            self.converted,
            np.array(TRUE_SPELLINGS)[rng.integers(0, len(TRUE_SPELLINGS), n)],
            np.array(FALSE_SPELLINGS)[rng.integers(0, len(FALSE_SPELLINGS), n)],
        )
        lines = ["arm,converted,revenue"] + [
            f"{a},{c},{r!r}"
            for a, c, r in zip(
                self.arm.tolist(), spelled.tolist(), self.revenue.tolist(), strict=True
            )
        ]
        self.text = "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def generated() -> Generated:
    return Generated()


# --- numbers ---------------------------------------------------------------------------------


def test_stats_equal_a_direct_computation(tmp_path: Path, generated: Generated) -> None:
    result = read(write(tmp_path, generated.text), CONVERTED, REVENUE)
    assert result.rows == 2000
    assert result.arm_column == "arm"
    first_seen = list(dict.fromkeys(generated.arm.tolist()))
    assert result.arms == ("control", *(a for a in first_seen if a != "control"))
    for arm in result.arms:
        mask = generated.arm == arm
        conv = result.stats["converted"][arm]
        assert conv.n == mask.sum()
        assert conv.sum == conv.sum_squares == generated.converted[mask].sum()
        rev = result.stats["revenue"][arm]
        x = generated.revenue[mask].tolist()
        assert rev.n == mask.sum()
        assert rev.sum == pytest.approx(math.fsum(x), rel=1e-13)
        mean = math.fsum(x) / len(x)  # squares are taken around the arm's mean (the shift)
        assert rev.shift == pytest.approx(mean, rel=1e-13)
        assert rev.sum_squares == pytest.approx(math.fsum((v - mean) ** 2 for v in x), rel=1e-12)
        assert rev.variance == pytest.approx(statistics.variance(x), rel=1e-12)


def test_comparisons_on_the_result_match_scipy_and_statsmodels_on_raw_data(
    tmp_path: Path, generated: Generated
) -> None:
    result = read(write(tmp_path, generated.text), CONVERTED, REVENUE)
    base = generated.arm == "control"
    for arm in ("email", "email_sms"):
        mask = generated.arm == arm
        welch = compare(
            "continuous", result.stats["revenue"][arm], result.stats["revenue"]["control"]
        )
        reference = sps.ttest_ind(generated.revenue[mask], generated.revenue[base], equal_var=False)
        assert welch.p_value == pytest.approx(reference.pvalue, rel=1e-9)
        z = compare("binary", result.stats["converted"][arm], result.stats["converted"]["control"])
        counts = [generated.converted[mask].sum(), generated.converted[base].sum()]
        _, p_value = proportions_ztest(counts, [mask.sum(), base.sum()])
        assert z.p_value == pytest.approx(p_value, rel=1e-9)


@pytest.mark.parametrize(
    ("spelling", "value"), [(s, 1) for s in TRUE_SPELLINGS] + [(s, 0) for s in FALSE_SPELLINGS]
)
def test_every_binary_spelling(tmp_path: Path, spelling: str, value: int) -> None:
    path = write(tmp_path, f"arm,converted\ncontrol,{spelling}\ncontrol, {spelling} \nb,0\nb,1\n")
    stats = read(path).stats["converted"]
    assert (stats["control"].n, stats["control"].sum) == (2, 2 * value)
    assert (stats["b"].n, stats["b"].sum) == (2, 1)


@pytest.mark.parametrize("ending", ["\r\n", "\r"])
def test_crlf_and_cr_files_read_like_lf(tmp_path: Path, generated: Generated, ending: str) -> None:
    lf = read(write(tmp_path, generated.text, "lf.csv"), CONVERTED, REVENUE)
    other = read(write(tmp_path, generated.text.replace("\n", ending), "x.csv"), CONVERTED, REVENUE)
    assert (other.arms, other.rows, other.stats) == (lf.arms, lf.rows, lf.stats)


def test_byte_order_mark_and_no_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffarm,converted\r\ncontrol,1\r\nb,0")
    result = read(path)
    assert result.arms == ("control", "b")
    assert result.stats["converted"]["control"].sum == 1


def test_quoted_fields_with_commas_quotes_and_line_breaks(tmp_path: Path) -> None:
    text = (
        'arm,note,revenue\n"control",hi,"1.5"\n"email, sms","say ""hi"", then\nbye",2\n'
        '"email, sms",x,"3"\n'
    )
    result = read(write(tmp_path, text), REVENUE)
    assert result.arms == ("control", "email, sms")
    assert result.rows == 3
    assert result.stats["revenue"]["email, sms"].sum == 5.0


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimiters_are_sniffed(tmp_path: Path, delimiter: str) -> None:
    rows = [["arm", "converted", "revenue"], ["control", "yes", "1.5"], ["b", "no", "2"]]
    text = "\n".join(delimiter.join(r) for r in rows) + "\n"
    result = read(write(tmp_path, text), CONVERTED, REVENUE)
    assert result.stats["revenue"]["control"].sum == 1.5
    assert result.stats["converted"]["control"].sum == 1


def test_blank_lines_and_surrounding_whitespace_are_ignored(tmp_path: Path) -> None:
    text = "\narm , converted\n\ncontrol,1\n  control ,0\n   \nb,1\n\n"
    result = read(write(tmp_path, text))
    assert result.arms == ("control", "b")
    assert result.rows == 3
    assert result.stats["converted"]["control"].n == 2


# --- errors: values ----------------------------------------------------------------------------


def test_bad_binary_value_names_line_column_value_and_count(tmp_path: Path) -> None:
    path = write(tmp_path, "arm,converted\ncontrol,1\nb,maybe\ncontrol,0\nb,2\nb,maybe\n")
    message = error(path)
    assert ", line 3, column 'converted': 'maybe' is not a binary value" in message
    assert "3 rows are bad in all (other values: '2')" in message
    assert "Use 1/0, true/false or yes/no" in message


def test_empty_binary_value(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm,converted\ncontrol,1\nb,\n"))
    assert ", line 3, column 'converted': the value is empty" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "the value is empty"),
        ("NaN", "'NaN' is not a finite number"),
        ("-inf", "'-inf' is not a finite number"),
        ("abc", "'abc' is not a number"),
        ("1e400", "'1e400' is too large for a float64"),
    ],
)
def test_bad_continuous_value_names_first_line_and_counts(
    tmp_path: Path, value: str, problem: str
) -> None:
    text = f"arm,revenue\ncontrol,1\nb,2.5\ncontrol,{value}\nb,3\nb,x\nb,\n"
    message = error(write(tmp_path, text), REVENUE)
    assert f", line 4, column 'revenue': {problem}; 3 rows are bad in all" in message
    assert "Give every row a finite number" in message


def test_decimal_comma_gets_its_own_fix(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm;revenue\ncontrol;1\nb;2,5\n"), REVENUE)
    assert ", line 3, column 'revenue': '2,5' is not a number" in message
    assert "Write decimals with a dot" in message


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    text = 'arm,note,converted\r\ncontrol,"two\r\nlines",1\r\n\r\nb,x,1\r\nb,y,oops\r\n'
    message = error(write(tmp_path, text))
    assert ", line 6, column 'converted': 'oops'" in message


# --- errors: columns, arms, shape --------------------------------------------------------------


def test_unknown_arm_column_lists_columns_and_a_close_match(tmp_path: Path) -> None:
    message = error(write(tmp_path, "variant,converted\ncontrol,1\nb,0\n"), arm="variants")
    assert "line 1, column 'variants': no column named 'variants'" in message
    assert "the header has 'variant', 'converted'" in message
    assert "did you mean 'variant'?" in message


def test_unknown_metric_column_lists_columns_and_a_close_match(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm,Revenue\ncontrol,1\nb,0\n"), REVENUE)
    assert "no column named 'revenue'; the header has 'arm', 'Revenue'" in message
    assert "did you mean 'Revenue'?" in message


def test_header_errors_name_the_header_line(tmp_path: Path) -> None:
    message = error(write(tmp_path, "\n\narm,convertd\ncontrol,1\nb,0\n"))
    assert "line 3, column 'converted': no column named 'converted'" in message
    assert "did you mean 'convertd'?" in message


def test_single_column_header_suggests_a_delimiter(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm|converted\ncontrol|1\n"))
    assert "The header was read as a single column: separate the columns with commas" in message


def test_duplicate_column(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm,converted,converted\ncontrol,1,1\nb,0,0\n"))
    assert "line 1: the header names column 'converted' 2 times (columns 2, 3)" in message


def test_baseline_not_among_arms_lists_arms(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm,converted\nControl,1\nb,0\n"))
    assert "baseline arm 'control' does not appear; the arms in the file are 'Control', 'b'" in (
        message
    )
    assert "did you mean 'Control'?" in message


def test_single_arm(tmp_path: Path) -> None:
    message = error(write(tmp_path, "arm,converted\ncontrol,1\ncontrol,0\n"))
    assert "column 'arm': every row is in arm 'control'; a comparison needs at least two arms" in (
        message
    )


@pytest.mark.parametrize("empty", ["", "  "])
def test_empty_arm_value(tmp_path: Path, empty: str) -> None:
    message = error(write(tmp_path, f"arm,converted\ncontrol,1\nb,0\n{empty},1\n,0\n"))
    assert ", line 4, column 'arm': the arm is empty; 2 rows are bad in all" in message


@pytest.mark.parametrize(("row", "fields"), [("b", 1), ("b,1,2", 3)])
def test_row_with_wrong_number_of_fields(tmp_path: Path, row: str, fields: int) -> None:
    message = error(write(tmp_path, f"arm,converted\ncontrol,1\n\n{row}\nb,0\n"))
    assert f", line 4: this row has {fields} fields but the header has 2" in message


def test_unclosed_quote_reports_where_the_row_starts(tmp_path: Path) -> None:
    message = error(write(tmp_path, 'arm,converted\ncontrol,1\nb,"1\nb,0\n'))
    assert ", line 3: the row starting here is not valid CSV" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("arm,converted\ncontrol,1\nb\xe9,0\n".encode("latin-1"))
    message = error(path)
    assert ", line 3: byte 0xe9 is not valid UTF-8" in message


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "the file is empty"), ("\n\n", "the file is empty"), ("arm,converted\n", "no data rows")],
)
def test_empty_file_or_header_only(tmp_path: Path, text: str, problem: str) -> None:
    assert problem in error(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in error(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ([], "at least one metric"),
        ([CONVERTED, MetricSpec("converted", "continuous")], "given twice"),
        ([MetricSpec("arm", "binary")], "also the arm column"),
    ],
)
def test_contradictory_arguments(tmp_path: Path, metrics: list[MetricSpec], message: str) -> None:
    path = write(tmp_path, "arm,converted\ncontrol,1\nb,0\n")
    with pytest.raises(ValueError, match=message):
        read_experiment_csv(path, "arm", "control", metrics)


# --- --metric option -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("converted:binary", MetricSpec("converted", "binary")),
        (" revenue : Continuous ", MetricSpec("revenue", "continuous")),
        ("a:b:binary", MetricSpec("a:b", "binary")),
    ],
)
def test_parse_metric_option(text: str, spec: MetricSpec) -> None:
    assert parse_metric_option(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("revenue", "must look like NAME:binary or NAME:continuous"),
        (":binary", "must look like NAME:binary"),
        ("x:bin", r"unknown kind 'bin' \(did you mean x:binary\?\)"),
        ("x:numeric", "unknown kind 'numeric'; use NAME:binary"),
    ],
)
def test_parse_metric_option_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metric_option(text)
