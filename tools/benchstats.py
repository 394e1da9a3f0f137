"""Statistics shared by tools/compare_summary.py and tools/pool-compare."""
import math


def sign_test(k, n):
    """Two-sided p of k pairs ahead out of n if either side were as likely to be
    ahead in any pair (1.0 for no pairs)."""
    if n == 0:
        return 1.0
    tail = min(k, n - k)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(tail + 1)) / 2 ** n)
