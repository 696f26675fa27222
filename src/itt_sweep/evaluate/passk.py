"""pass@k, the unbiased estimator of Chen et al. (2021).

Sampling n completions and counting how many pass gives a biased estimate if one simply checks whether any of
the first k passed; the unbiased form is 1 - C(n-c, k) / C(n, k). The binomials overflow for realistic n, so,
as in openai/human-eval, the ratio is computed as a product of terms each below one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k completions drawn without replacement from n (c correct) passes."""
    if n < 1:
        raise ValueError(f"pass@k needs at least one sample per problem, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"number of correct samples c={c} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, n={n}]: sample at least k completions per problem")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems, each given as (n samples, c correct), the number a benchmark reports.

    NaN for no problems, like `reference_nll`, so a language with nothing to evaluate shows as missing, not 0.
    """
    if len(counts) == 0:
        return float("nan")
    return float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
