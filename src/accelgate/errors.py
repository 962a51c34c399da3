"""The two kinds of exception a case can end in besides a crash, so one function
(`session.verdict_for_exception`) turns any of them into an outcome the same way.

Each module keeps its own, precisely named exception (`ModelUnavailable`, `BaselineError`,
`DegenerateOutput`, `MetricWeightsMissing`...) and says which kind it is by subclassing one of
these; anything else a backend or pipeline raises is an error of that case.
"""
from __future__ import annotations


class CaseUnavailable(Exception):
    """Something the case needs is not on this machine (weights, a data file, a package):
    a skip whose message says what to install or where to put it."""


class CaseFailed(Exception):
    """The case ran into a verdict without metrics: a stale or damaged baseline, degenerate
    output, corrupt weights. Its message is the failure's reason."""
