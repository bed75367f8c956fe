"""Number helpers shared by the report writers (report.py, compare.py)."""
import math


def pct(values, q):
    """Nearest-rank percentile q (0-100) of values, or None when there are none."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def num(x, digits=None):
    """x with thousands separators and 0, 1 or 2 decimals by magnitude (or the given digits); '–' for None."""
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"
