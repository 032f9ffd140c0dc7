"""Error bars for every reported number: 95 % intervals and paired comparisons.

* a **rate** (a positive fraction, a win rate): the Wilson score interval, which stays inside [0, 1] and is
  honest for small counts and rates near 0 or 1 (the textbook p ± 1.96·sqrt(p(1-p)/n) is not);
* a **mean** (reward, KL, length): the percentile bootstrap over prompts;
* **two methods on the same prompts**: the paired bootstrap of the per-prompt difference (each prompt is
  resampled with both methods' answers to it, so the prompt-to-prompt spread they share cancels), and for two
  rates McNemar's exact test, which looks only at the prompts where the two disagree.

A gap whose interval contains 0 is "within noise": the prose says so instead of interpreting it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int | float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a rate ``successes / n``."""
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean,
                       n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``stat(values)`` (resampling the values with replacement)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = np.array([stat(x[i]) for i in idx])
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a - b), low, high)``: the mean per-prompt difference and its 95 % paired-bootstrap interval.

    ``a[i]`` and ``b[i]`` must be the two methods' values on the same prompt ``i``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same prompts: {a.shape} vs {b.shape}")
    d = a - b
    lo, hi = bootstrap_interval(d, n_boot=n_boot, seed=seed)
    return float(d.mean()), lo, hi


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for two paired rates (same prompts): only the discordant prompts count."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same prompts: {a.shape} vs {b.shape}")
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def within_noise(low: float, high: float) -> bool:
    """True when an interval of a difference contains 0: the gap is not shown to be real."""
    return low <= 0 <= high


def fmt_rate(successes: int | float, n: int) -> str:
    """``"61.3 % [57.4, 65.1]"``: a rate in percent with its 95 % Wilson interval."""
    lo, hi = wilson_interval(successes, n)
    return f"{100 * successes / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
