"""How well an estimated ranking of configurations matches the true one.

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
reported): Kendall tau-b and Spearman rho (scipy), top-k overlap
|top_k(truth) & top_k(estimate)| / k; and the regret: the true accuracy of the truly best
configuration (of the whole truth, so that an estimate that never tried it pays for it)
minus the true accuracy of the configuration the estimate ranks first among those
compared. Ties are broken by reference number.
"""

import json

from absl import flags

from mixnas_tf import cli

cli.quiet_startup()

from mixnas_tf import errors  # pylint: disable=wrong-import-position
from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import rank as lib  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import sources  # pylint: disable=wrong-import-position


def define_flags() -> None:
  """The command's flags (defined only when it runs, so that report can import this)."""
  flags.DEFINE_string("truth", None, "The true accuracies, FILE[:COLUMN]: an exhaustive "
                      "table.csv, the reference CSV (column baseline_avg by default), a "
                      "search's results.json or KerasTuner results.")
  flags.DEFINE_multi_string("estimate", None, "Estimated accuracies, FILE[:COLUMN] (same "
                            "kinds of source as --truth); repeat the flag to compare several.")
  flags.DEFINE_string("space", "resnet20", "Search space the reference numbers belong to.")
  flags.DEFINE_bool("json", False, "Print one JSON object instead of text.")


FLAGS = flags.FLAGS


def main(argv):
  cli.check_no_positional(argv)
  if not FLAGS.truth or not FLAGS.estimate:
    raise errors.UsageError("--truth and --estimate are required (FILE or FILE:COLUMN)")
  space = spaces.get_space(FLAGS.space)
  truth = sources.read(FLAGS.truth, space)
  results = [lib.compare_sources(truth, sources.read(spec, space), space) for spec in FLAGS.estimate]
  if FLAGS.json:
    print(json.dumps({"truth": truth.source, "truth_configs": len(truth.values),
                      "comparisons": results}, indent=2))
    return
  print(f"truth: {truth.source} ({len(truth.values)} configurations, column "
        f"{truth.column})")
  for result in results:
    print(lib.format_comparison(result))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
