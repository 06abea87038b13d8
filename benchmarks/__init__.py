"""Benchmarks kept beside the tests (pytest-benchmark), and the report that turns them into ratios."""


def verdict(value: float, target: float) -> str:
    """A figure against its upper bound, in the one wording every table of the report uses."""
    return "met" if value <= target else "MISSED"
