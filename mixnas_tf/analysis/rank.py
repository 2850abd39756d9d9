"""How well an estimated ranking of configurations matches the true one.

The command is `python -m mixnas_tf.rank` (mixnas_tf/rank.py); sources are read by
`mixnas_tf.analysis.sources`.

Metrics (`compare`) over the configurations present in both sources (the count is
reported): Kendall tau-b (with a 90% bootstrap interval resampling the configurations,
`bootstrap_tau`) and Spearman rho (scipy), top-k overlap
|top_k(truth) & top_k(estimate)| / k; and the regret: the true accuracy of the truly best
configuration (of the whole truth, so that an estimate that never tried it pays for it)
minus the true accuracy of the configuration the estimate ranks first among those
compared. Ties are broken by reference number.
"""

import math
import warnings

import numpy as np
from scipy import stats

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.analysis.sources import Accuracies

TOP_K = (1, 3, 5, 10)
# Coverage of the bootstrap interval `compare` gives Kendall tau.
TAU_INTERVAL = 0.9


def _stages(space: spaces.SearchSpace, index: int) -> str:
  return spaces.format_stages(spaces.to_stages(space, spaces.from_index(space, index)))


def _finite(value: float) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def compare(truth: dict[int, float], estimate: dict[int, float],
            space: spaces.SearchSpace | None = None, top_k=TOP_K) -> dict:
  """Rank metrics of `estimate` against `truth` over the configurations in both.

  Args:
    truth: reference number -> true accuracy (percent).
    estimate: reference number -> estimated accuracy (any monotone scale).
    space: the search space, for [a,b,c] labels.
    top_k: the k of the top-k overlaps (those larger than the number compared are skipped).

  Returns:
    A JSON-able dict: num_compared, truth_only / estimate_only (reference numbers),
    kendall_tau / kendall_p, kendall_tau_interval ([low, high], TAU_INTERVAL coverage,
    resampling the compared configurations; None with fewer than 3 or an undefined tau),
    spearman / spearman_p (None when undefined, e.g. constant
    values), top_k_overlap {k: fraction} (over the compared configurations), best (the
    whole truth's top), chosen (the estimate's top among the compared, with its true
    accuracy and its rank in the whole truth), regret = true accuracy of best minus that
    of chosen, and regret_among_compared (against the best compared configuration), both
    in the truth's units (percentage points).

  Raises:
    errors.UsageError: fewer than 2 configurations in common.
  """
  space = space or spaces.get_space("resnet20")
  common = sorted(set(truth) & set(estimate))
  if len(common) < 2:
    raise errors.UsageError(
        f"only {len(common)} configuration(s) in both sources (truth has {len(truth)}, "
        f"estimate {len(estimate)}); rank metrics need at least 2")
  t = np.array([truth[i] for i in common], np.float64)
  e = np.array([estimate[i] for i in common], np.float64)
  with warnings.catch_warnings():
    # Constant inputs give NaN (reported as None) and a warning that says the same.
    warnings.simplefilter("ignore", stats.ConstantInputWarning)
    kendall = stats.kendalltau(t, e)
    spearman = stats.spearmanr(t, e)
  interval = None
  if len(common) >= 3 and kendall.statistic == kendall.statistic:  # Not NaN.
    boot = bootstrap_tau(truth, [estimate], samples=1000, level=TAU_INTERVAL)
    interval = [boot["low"], boot["high"]]
  by_truth = sorted(common, key=lambda i: (-truth[i], i))
  by_estimate = sorted(common, key=lambda i: (-estimate[i], i))
  # The chosen configuration is judged against the best of the whole truth: an estimate
  # that never looked at the best configuration (a tuner's sample, a searched subset)
  # pays for it in regret.
  all_by_truth = sorted(truth, key=lambda i: (-truth[i], i))
  best, chosen = all_by_truth[0], by_estimate[0]
  return {
      "num_compared": len(common),
      "num_truth": len(truth),
      "truth_only": sorted(set(truth) - set(estimate)),
      "estimate_only": sorted(set(estimate) - set(truth)),
      "kendall_tau": _finite(kendall.statistic),
      "kendall_p": _finite(kendall.pvalue),
      # TAU_INTERVAL's coverage, resampling the configurations compared (bootstrap_tau).
      "kendall_tau_interval": interval,
      "spearman": _finite(spearman.statistic),
      "spearman_p": _finite(spearman.pvalue),
      "top_k_overlap": {str(k): len(set(by_truth[:k]) & set(by_estimate[:k])) / k
                        for k in top_k if k <= len(common)},
      "best": {"index": best, "stages": _stages(space, best), "true_accuracy": truth[best]},
      "chosen": {"index": chosen, "stages": _stages(space, chosen),
                 "true_accuracy": truth[chosen], "estimated_accuracy": estimate[chosen],
                 "true_rank": all_by_truth.index(chosen) + 1},
      "regret": truth[best] - truth[chosen],
      "regret_among_compared": truth[by_truth[0]] - truth[chosen],
  }


def kendall_tau_b(x, y) -> np.ndarray:
  """Kendall tau-b between the last axes of `x` and `y`, for a batch of rankings at once.

  tau_b = sum_{i<j} sign(x_i - x_j) sign(y_i - y_j) / sqrt(n_x n_y), where n_x (n_y) counts
  the pairs not tied in x (y): scipy.stats.kendalltau's statistic, row by row.

  Args:
    x, y: arrays [..., n] of the same shape.

  Returns:
    float64 array of shape [...]; NaN where x or y is constant.
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim < 1:
    raise ValueError(f"x and y must have the same shape [..., n]. Received: {x.shape} "
                     f"and {y.shape}")
  upper = np.triu(np.ones((x.shape[-1],) * 2, bool), k=1)
  sx = np.sign(x[..., :, None] - x[..., None, :])[..., upper]
  sy = np.sign(y[..., :, None] - y[..., None, :])[..., upper]
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.sum(sx * sy, -1) / np.sqrt(np.sum(sx * sx, -1) * np.sum(sy * sy, -1))


def bootstrap_tau(truth: dict[int, float], a: list[dict[int, float]],
                  b: list[dict[int, float]] | None = None, samples: int = 2000,
                  level: float = 0.9, seed: int = 0) -> dict:
  """Kendall tau against `truth` with a bootstrap interval over configurations; with `b`,
  the paired difference of two methods' taus (is `a` a better ranker than `b`?).

  `a[s]` (and `b[s]`) are estimates from one seed s, the pairing; the statistic is
  mean_s tau(a[s]) (minus mean_s tau(b[s])) over the configurations present everywhere.
  Resampling those configurations with replacement, with the same draw for every run so
  that a comparison stays paired, gives the interval: how much the value owes to which
  configurations happen to be in the space. The spread between seeds of the search is
  not in it (measured: one search's tau moves by about 0.1 between seeds); it is in the
  means, with as many seeds as are given.

  Args:
    truth: reference number -> true accuracy.
    a: estimates (reference number -> value), one per seed, at least one.
    b: None, or as many estimates as `a`, seed for seed.
    samples: bootstrap draws.
    level: the central interval's coverage.
    seed: the draws' seed.

  Returns:
    {"value" (the statistic on the configurations as they are), "low", "high",
     "share_above_zero" (of the draws), "num_compared", "seeds", "level", "samples"}.

  Raises:
    errors.UsageError: unpaired lists, or fewer than 3 configurations in common.
  """
  if not a or (b is not None and len(a) != len(b)):
    raise errors.UsageError(f"need the same number (>= 1) of runs on each side, paired by "
                            f"seed; received {len(a)} and {0 if b is None else len(b)}")
  if not 0 < level < 1 or samples < 1:
    raise ValueError(f"level must be in (0, 1) and samples >= 1. Received: level={level}, "
                     f"samples={samples}")
  runs = list(a) + list(b or [])
  common = sorted(set(truth).intersection(*map(set, runs)))
  if len(common) < 3:
    raise errors.UsageError(f"only {len(common)} configuration(s) in every source; the "
                            "bootstrap needs at least 3")
  t = np.array([truth[i] for i in common])
  ea = np.array([[e[i] for i in common] for e in a])  # [S, n]
  eb = None if b is None else np.array([[e[i] for i in common] for e in b])

  def statistic(idx):  # Draws [B, n] -> the statistic of each draw, [B].
    tt = t[idx]
    with warnings.catch_warnings():  # A draw of one repeated configuration has no tau.
      warnings.simplefilter("ignore", RuntimeWarning)
      per_seed = [kendall_tau_b(tt, ea[s][idx])
                  - (0.0 if eb is None else kendall_tau_b(tt, eb[s][idx]))
                  for s in range(len(ea))]
      return np.nanmean(per_seed, axis=0)

  draws = np.random.default_rng(seed).integers(0, len(common), (samples, len(common)))
  observed = float(statistic(np.arange(len(common))[None])[0])
  # Draws in chunks: `kendall_tau_b` holds a few [chunk, n, n] arrays, so a chunk of 250
  # draws over ResNet50's 455 configurations would need about 0.4 GB per array.
  chunk = max(1, min(250, 10_000_000 // (len(common) ** 2)))
  boot = np.concatenate([statistic(draws[i:i + chunk]) for i in range(0, samples, chunk)])
  boot = boot[np.isfinite(boot)]
  tail = (1.0 - level) / 2
  return {"value": observed, "low": float(np.quantile(boot, tail)),
          "high": float(np.quantile(boot, 1.0 - tail)),
          "share_above_zero": float(np.mean(boot > 0)), "num_compared": len(common),
          "seeds": len(a), "level": level, "samples": int(boot.size)}


def compare_sources(truth: Accuracies, estimate: Accuracies,
                    space: spaces.SearchSpace | None = None) -> dict:
  """`compare` of two read sources, with the sources named."""
  return {"truth": truth.source, "estimate": estimate.source,
          **compare(truth.values, estimate.values, space)}


def _fmt(value: float | None, spec: str = ".3f") -> str:
  return "n/a" if value is None else format(value, spec)


def format_comparison(result: dict) -> str:
  """The human-readable lines `python -m mixnas_tf.rank` prints for one comparison."""
  chosen, best = result["chosen"], result["best"]
  n = result["num_compared"]
  lines = [f"estimate: {result['estimate']}",
           f"  compared:      {n} configurations present in both"]
  for name, key in (("truth only", "truth_only"), ("estimate only", "estimate_only")):
    if result[key]:
      lines.append(f"  {name + ':':14s} {len(result[key])} "
                   f"({', '.join(map(str, result[key][:12]))}"
                   f"{' ...' if len(result[key]) > 12 else ''})")
  lines += [
      f"  Kendall tau:   {_fmt(result['kendall_tau'])} (p={_fmt(result['kendall_p'], '.2g')}"
      + ("" if not result.get("kendall_tau_interval") else
         f"; {TAU_INTERVAL:.0%} interval resampling the configurations: "
         + " to ".join(f"{v:.3f}" for v in result["kendall_tau_interval"])) + ")",
      f"  Spearman rho:  {_fmt(result['spearman'])} (p={_fmt(result['spearman_p'], '.2g')})",
      "  top-k overlap: " + "  ".join(
          f"k={k}: {round(v * int(k))}/{k}" for k, v in result["top_k_overlap"].items()),
      f"  chosen:        {chosen['index']} {chosen['stages']}, true accuracy "
      f"{chosen['true_accuracy']:.2f} (true rank {chosen['true_rank']}/{result['num_truth']})",
      f"  truly best:    {best['index']} {best['stages']}, true accuracy "
      f"{best['true_accuracy']:.2f}",
      f"  regret:        {result['regret']:.2f} points",
  ]
  if result["regret_among_compared"] != result["regret"]:
    lines.append(f"  regret among the {n} compared: {result['regret_among_compared']:.2f} "
                 "points")
  return "\n".join(lines)
