"""The statistics engine: pure functions over per-arm sufficient statistics, no database.

- :mod:`~experiments.stats.frequentist`: ``SampleStats``, the fixed-horizon z and Welch tests,
  ``compare`` and the sample-ratio-mismatch test (re-exported here, the names most callers need).
- :mod:`~experiments.stats.sequential`: always-valid (mixture SPRT) intervals for daily looks.
- :mod:`~experiments.stats.fixed`: Fisher's exact test and omnibus tests over k arms.
- :mod:`~experiments.stats.bayes`: chance to beat and expected loss.
- :mod:`~experiments.stats.cuped`: CUPED variance reduction over paired statistics.
- :mod:`~experiments.stats.multiple`: Holm and Benjamini–Hochberg corrections.
- :mod:`~experiments.stats.power`: sample size, MDE and power.
- :mod:`~experiments.stats.survival`: Kaplan–Meier, log-rank and RMST.
- :mod:`~experiments.stats.balance`: covariate balance (standardised mean differences).

:mod:`experiments.analysis` runs them all on an experiment's numbers to build the report.
"""

from experiments.stats.frequentist import (
    ComparisonResult,
    ComparisonStatus,
    SampleStats,
    SrmResult,
    compare,
    relative_status,
    relative_variance,
    srm_test,
    two_proportion_ztest,
    welch_ttest,
)

__all__ = [
    "ComparisonResult",
    "ComparisonStatus",
    "SampleStats",
    "SrmResult",
    "compare",
    "relative_status",
    "relative_variance",
    "srm_test",
    "two_proportion_ztest",
    "welch_ttest",
]
