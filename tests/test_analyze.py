"""`retain analyze`: a CSV from an experiment run elsewhere becomes the same report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def write_csv(path: Path, rows: int = 3_000, seed: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arms = np.array(["control", "a", "b"])[rng.integers(0, 3, rows)]
    converted = rng.random(rows) < np.where(
        arms == "control", 0.2, np.where(arms == "a", 0.25, 0.21)
    )
    revenue = np.round(rng.gamma(2.0, 10.0, rows) * converted, 2)
    spelled = np.where(converted, "Yes", "no")
    lines = ["arm,converted,revenue"] + [
        f"{a},{c},{r}" for a, c, r in zip(arms, spelled, revenue, strict=True)
    ]
    path.write_text("\r\n".join(lines) + "\r\n")
    return {"arm": arms, "converted": converted.astype(float), "revenue": revenue}


def test_report_matches_scipy_and_statsmodels(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "past.csv")
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "analyze", str(tmp_path / "past.csv"), "--arm-column", "arm", "--baseline", "control",
            "--metric", "converted:binary", "--metric", "revenue:continuous", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["experiment"] == "past" and report["analysis"]["method"] == "fixed"
    assert [m["name"] for m in report["metrics"]] == ["converted", "revenue"]
    assert report["metrics"][0]["role"] == "primary"
    control = data["arm"] == "control"
    for comparison in report["metrics"][0]["comparisons"]:
        arm = data["arm"] == comparison["arm"]
        counts = [data["converted"][arm].sum(), data["converted"][control].sum()]
        _, p = proportions_ztest(counts, [arm.sum(), control.sum()])
        assert comparison["p_value"] == pytest.approx(p, rel=1e-9)
        assert comparison["headline"] == "fixed"
    for comparison in report["metrics"][1]["comparisons"]:
        arm = data["arm"] == comparison["arm"]
        welch = stats.ttest_ind(data["revenue"][arm], data["revenue"][control], equal_var=False)
        assert comparison["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    # Holm over the four comparisons of the two (primary + secondary) metrics.
    raw = [c["p_value"] for m in report["metrics"] for c in m["comparisons"]]
    adjusted = [c["p_value_adjusted"] for m in report["metrics"] for c in m["comparisons"]]
    from statsmodels.stats.multitest import multipletests

    assert adjusted == pytest.approx(list(multipletests(raw, method="holm")[1]), rel=1e-9)
    assert report["metrics"][0]["omnibus"]["method"]
    assert (out / "report.html").exists() and (out / "report.md").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--arm-column", "variant"], "variant"),
        (["--baseline", "ctrl"], "ctrl"),
        (["--metric", "converted:boolean"], "converted:boolean"),
    ],
)
def test_bad_options_are_one_clear_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    write_csv(tmp_path / "past.csv", rows=200)
    base = {"--arm-column": "arm", "--baseline": "control", "--metric": "converted:binary"}
    base[args[0]] = args[1]
    argv = ["analyze", str(tmp_path / "past.csv"), "--out", str(tmp_path / "o")]
    for key, value in base.items():
        argv += [key, value]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2
    assert fragment in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "report.json").exists()


def test_bad_value_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("arm,converted\ncontrol,1\ntreat,maybe\ncontrol,0\ntreat,1\n")
    result = runner.invoke(
        app,
        ["analyze", str(path), "--arm-column", "arm", "--baseline", "control",
         "--metric", "converted:binary", "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "line 3" in result.output and "maybe" in result.output
