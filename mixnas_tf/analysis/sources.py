"""Accuracies per configuration, read from the sources `python -m mixnas_tf.rank` compares.

Each source (`read`) gives an accuracy in percent per configuration, keyed by its
reference number (1..36 for ResNet20):
  - a search's `results.json`, or its work directory: per-configuration records, column
    `estimated_accuracy` by default (any numeric field of the records may be named), or
    an estimator's name (`assigned`, `max`, `mean`, `centered`, `weighted`:
    mixnas_tf/methods/estimators.py), which re-estimates every configuration from the search's
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
"""

import csv
import dataclasses
import glob
import json
import os

import numpy as np

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.methods import estimators

# Configuration columns of CSV tables, in order of preference.
INDEX_COLUMNS = ("architecture", "index", "number")
# Accuracy columns used when a CSV source names none, in order of preference.
DEFAULT_CSV_COLUMNS = ("baseline_avg", "estimated_accuracy", "accuracy")
# The header of a search's ranking.csv (written by evaluate.ranking_csv; its accuracies are
# fractions).
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
  first, last = space.reference_base, space.reference_base + space.num_configs - 1
  for index in values:
    if not first <= index <= last:
      raise errors.UsageError(f"{spec} names configuration {index}, outside the "
                              f"{space.name} space's {first}..{last}")
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
    # Only the configurations the final evaluation covered (`--final_eval=top:N,...` leaves
    # the others without any accuracy), as the search's own ranking does.
    records = [r for r in records if any(a is not None for a in r["accuracy_per_model"])]
    if not records:
      return {}, column
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
