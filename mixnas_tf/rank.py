r"""How well an estimated ranking of configurations matches the true one.

  python -m mixnas_tf.rank --truth=TABLE[:COLUMN] --estimate=FILE[:COLUMN] [--json]
  python -m mixnas_tf.rank \
      --truth=../shared/reference/resnet20_cifar10_configs.csv:baseline_avg \
      --estimate=../shared/reference/resnet20_cifar10_configs.csv:M4_avg

`--estimate` may be repeated: each is compared with the same truth.

FILE may be a search's work directory or results.json (`FILE:mean` etc. re-estimates
it with another estimator), a CSV with one row per configuration (the reference CSV,
an exhaustive table.csv, a search's ranking.csv), or KerasTuner results; what each holds
and how it is read: mixnas_tf/analysis/sources.py. Kendall tau-b (with a 90% bootstrap
interval), Spearman rho, top-k overlap and regret over the configurations in both
sources: mixnas_tf/analysis/rank.py.
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
