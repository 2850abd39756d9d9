r"""How well an estimated ranking of configurations matches the true one.

  python -m mixnas_tf.rank --truth=TABLE[:COLUMN] --estimate=FILE[:COLUMN] [--json]
  python -m mixnas_tf.rank \
      --truth=../shared/reference/resnet20_cifar10_configs.csv:baseline_avg \
      --estimate=../shared/reference/resnet20_cifar10_configs.csv:M4_avg

`--estimate` may be repeated: each is compared with the same truth.

Sources (`read`), each giving an accuracy in percent per configuration, keyed by its
reference number (1..36 for ResNet20):
  - a search's `results.json`, or its work directory: per-configuration records, column
    `estimated_accuracy` by default (any numeric field of the records may be named), or
    an estimator's name (`assigned`, `max`, `mean`, `centered`, `weighted`:
    mixnas_tf/estimators.py), which re-estimates every configuration from the search's
    final evaluation, e.g. `--estimate=runs/search_k4:mean`;
  - a CSV with one row per configuration, whose configuration column is `architecture`
    (the reference CSV and our exhaustive `table.csv`), `index` (our `ranking.csv`),
    `number`, or `stages` ([a,b,c]); column `baseline_avg` by default;
  - KerasTuner results: a `tune_results.json` (mixnas_tf.tune), a tune work directory, or a
    KerasTuner project directory (`oracle.json` + `trial_*/trial.json`).
Our JSON files and `ranking.csv` hold fractions and are converted to percent; other CSVs
(the reference CSV, our exhaustive table) are in percent already. A configuration tried by
several KerasTuner trials (Hyperband's rounds) counts with its longest-trained trials
(the best of them, like KerasTuner's own objective).

Metrics (`compare`) over the configurations present in both sources (the count is
reported): Kendall tau-b (with a 90% bootstrap interval resampling the configurations,
`bootstrap_tau`) and Spearman rho (scipy), top-k overlap
|top_k(truth) & top_k(estimate)| / k; and the regret: the true accuracy of the truly best
configuration (of the whole truth, so that an estimate that never tried it pays for it)
minus the true accuracy of the configuration the estimate ranks first among those
compared. Ties are broken by reference number.
"""

import csv
import dataclasses
import glob
import json
import math
import os
import warnings

import numpy as np
from scipy import stats

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.methods import estimators

TOP_K = (1, 3, 5, 10)
# Coverage of the bootstrap interval `compare` gives Kendall tau.
TAU_INTERVAL = 0.9
# Configuration columns of CSV tables, in order of preference.
INDEX_COLUMNS = ("architecture", "index", "number")
# Accuracy columns used when a CSV source names none, in order of preference.
DEFAULT_CSV_COLUMNS = ("baseline_avg", "estimated_accuracy", "accuracy")
# The header of a search's ranking.csv (evaluate.ranking_csv), whose accuracies are fractions.
RANKING_CSV_HEADER = ["rank", "index", "stages", "code", "model", "estimated_accuracy", "macs"]


@dataclasses.dataclass(frozen=True)
class Accuracies:
  """Accuracies of configurations from one source.

  Attributes:
    source: the source as given (FILE[:COLUMN]).
    path: the file read.
    column: the column or field read.
    kind: "search", "csv" or "tuner".
    values: reference number -> accuracy in percent.
  """
  source: str
  path: str
  column: str
  kind: str
  values: dict[int, float]


def parse_source(spec: str) -> tuple[str, str | None]:
  """Splits FILE[:COLUMN]; a path that exists as given is never split."""
  spec = spec.strip()
  if not spec:
    raise errors.UsageError("empty source; give FILE or FILE:COLUMN")
  path, column = spec, None
  if not os.path.exists(os.path.expanduser(spec)) and ":" in spec:
    path, _, column = spec.rpartition(":")
    column = column.strip() or None
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise errors.UsageError(f"{path} does not exist (source {spec!r}; give FILE or "
                            "FILE:COLUMN)")
  return path, column


def read(spec: str, space: spaces.SearchSpace | None = None) -> Accuracies:
  """Reads FILE[:COLUMN] from any of the sources the module docstring lists.

  Raises:
    errors.UsageError: unreadable or unknown source, unknown column, no configuration.
  """
  space = space or spaces.get_space("resnet20")
  path, column = parse_source(spec)
  kind, file = _identify(path)
  if kind == "search":
    values, column = _read_search_results(file, column)
  elif kind == "tuner_results":
    kind = "tuner"
    values, column = _read_tune_results(file, column)
  elif kind == "tuner_project":
    kind = "tuner"
    values, column = _read_tuner_project(file, column)
  else:
    values, column = _read_csv(file, column, space)
  if not values:
    raise errors.UsageError(f"{spec} holds no configuration with a value in {column!r}")
  for index in values:
    if not 1 <= index <= space.num_configs:
      raise errors.UsageError(f"{spec} names configuration {index}, outside the "
                              f"{space.name} space's 1..{space.num_configs}")
  return Accuracies(source=spec, path=file, column=column, kind=kind, values=values)


def _identify(path: str) -> tuple[str, str]:
  """(kind, file) of a path: a search, tuner results, a KerasTuner project or a CSV."""
  if os.path.isdir(path):
    for name, kind in (("results.json", "search"), ("tune_results.json", "tuner_results"),
                       ("oracle.json", "tuner_project")):
      if os.path.exists(os.path.join(path, name)):
        return kind, (path if kind == "tuner_project" else os.path.join(path, name))
    projects = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(path, "*",
                                                                         "oracle.json")))
    if len(projects) == 1:
      return "tuner_project", projects[0]
    if os.path.exists(os.path.join(path, "table.csv")):
      return "csv", os.path.join(path, "table.csv")
    raise errors.UsageError(
        f"{path} is a directory without results.json, tune_results.json, table.csv or a "
        f"single KerasTuner project{' (found ' + str(len(projects)) + ')' if projects else ''}"
        "; name the file instead")
  if path.endswith(".json"):
    obj = _read_json(path)
    if isinstance(obj, dict) and "configs" in obj and "ranking" in obj:
      return "search", path
    if isinstance(obj, dict) and "trials" in obj:
      return "tuner_results", path
    raise errors.UsageError(f"{path} is neither a search's results.json nor a "
                            "tune_results.json")
  return "csv", path


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UsageError(f"cannot read {path}: {e}") from None


def _read_search_results(path: str, column: str | None) -> tuple[dict[int, float], str]:
  column = column or "estimated_accuracy"
  records = _read_json(path)["configs"]
  if column in estimators.ESTIMATORS:
    # Re-estimated from the final evaluation (any search's results.json holds it).
    accuracy = [[np.nan if a is None else a for a in r["accuracy_per_model"]]
                for r in records]
    try:
      values = estimators.estimate(column, accuracy, [r["assignment"] for r in records])
    except ValueError as e:
      raise errors.UsageError(f"{path}: {e}") from None
    return {int(r["index"]): 100.0 * float(v) for r, v in zip(records, values)}, column
  numeric = sorted(k for k, v in records[0].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool))
  if column not in numeric:
    raise errors.UsageError(f"{path} has no numeric field {column!r} in its configurations; "
                            f"fields: {', '.join(numeric)}")
  scale = 100.0 if "accuracy" in column else 1.0
  return {int(r["index"]): scale * float(r[column]) for r in records
          if r.get(column) is not None}, column


def _read_tune_results(path: str, column: str | None) -> tuple[dict[int, float], str]:
  if column not in (None, "accuracy"):
    raise errors.UsageError(f"{path}: tuner results have one column, accuracy "
                            f"(received {column!r})")
  trials = [(int(t["config"]), float(t["accuracy"]), int(t["epochs"]))
            for t in _read_json(path)["trials"]
            if t.get("status") == "COMPLETED" and t.get("accuracy") is not None]
  return _longest_trained_best(trials), "accuracy"


def _read_tuner_project(project: str, column: str | None) -> tuple[dict[int, float], str]:
  if column not in (None, "accuracy", "score"):
    raise errors.UsageError(f"{project}: KerasTuner trials have one column, accuracy "
                            f"(received {column!r})")
  trials = []
  for file in sorted(glob.glob(os.path.join(project, "trial_*", "trial.json"))):
    trial = _read_json(file)
    values = trial.get("hyperparameters", {}).get("values", {})
    if trial.get("status") != "COMPLETED" or trial.get("score") is None:
      continue
    if "config" not in values:
      raise errors.UsageError(f"{file} has no 'config' hyperparameter: not a mixnas_tf.tune "
                              "project")
    trials.append((int(values["config"]), float(trial["score"]),
                   int(values.get("tuner/epochs", 0))))
  return _longest_trained_best(trials), "accuracy"


def _longest_trained_best(trials) -> dict[int, float]:
  """(config, fraction, epochs) -> {config: best percent among its longest-trained trials}."""
  best: dict[int, tuple[int, float]] = {}
  for config, accuracy, epochs in trials:
    if config not in best or (epochs, accuracy) > best[config]:
      best[config] = (epochs, accuracy)
  return {c: 100.0 * a for c, (e, a) in sorted(best.items())}


def _read_csv(path: str, column: str | None,
              space: spaces.SearchSpace) -> tuple[dict[int, float], str]:
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except (OSError, UnicodeDecodeError) as e:
    raise errors.UsageError(f"cannot read {path}: {e}") from None
  if len(rows) < 2:
    raise errors.UsageError(f"{path} holds no rows")
  header = [h.strip() for h in rows[0]]
  names = [h for h in header if h]
  key = next((c for c in INDEX_COLUMNS if c in header), None)
  if key is None and "stages" not in header:
    raise errors.UsageError(f"{path} has no configuration column (one of "
                            f"{', '.join(INDEX_COLUMNS + ('stages',))}); columns: "
                            f"{', '.join(names)}")
  if column is None:
    column = next((c for c in DEFAULT_CSV_COLUMNS if c in header), None)
    if column is None:
      raise errors.UsageError(f"{path}: name the column to read as {path}:COLUMN; "
                              f"columns: {', '.join(names)}")
  if column not in header:
    raise errors.UsageError(f"{path} has no column {column!r}; columns: {', '.join(names)}")
  scale = 100.0 if header == RANKING_CSV_HEADER and column == "estimated_accuracy" else 1.0
  values = {}
  for line, row in enumerate(rows[1:], start=2):
    record = dict(zip(header, (v.strip() for v in row)))
    if not any(record.values()):
      continue
    text = record.get(column, "")
    if not text:
      continue
    try:
      if key is not None:
        index = int(record[key])
      else:
        index = spaces.to_index(space, spaces.parse_config(space, record["stages"]))
      value = float(text)
    except (ValueError, KeyError, errors.UsageError) as e:
      raise errors.UsageError(f"{path} line {line}: cannot read configuration and "
                              f"{column!r} ({e})") from None
    if index in values and values[index] != scale * value:
      raise errors.UsageError(f"{path} lists configuration {index} twice with different "
                              f"values of {column!r}")
    values[index] = scale * value
  return values, column


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
  boot = np.concatenate([statistic(draws[i:i + 250]) for i in range(0, samples, 250)])
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
