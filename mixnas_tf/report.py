r"""A Markdown report with PNG plots of one or several searches, against the truth.

  python -m mixnas_tf.report --search=DIR[,DIR2,...] [--ground_truth=TABLE[:COLUMN]] \
      [--tuner=DIR[,DIR2,...]] --out=OUT

Writes OUT/report.md and its PNGs:
  - a summary of each search (K, epochs, chosen configuration, time) and KerasTuner run;
  - with --ground_truth: the rank metrics of every search and tuner (mixnas_tf.rank) and
    estimated vs true accuracy per configuration, each point labelled [a,b,c];
  - accuracy against multiply-accumulates, the Pareto front (the configurations no other
    beats at lower or equal cost) marked: the view a user picks a network from;
  - per search: the assignment matrix p(weight set | configuration), the score matrix W
    at a few epochs, the weight sets' shares, the temperature and the assignment of every
    configuration over the epochs (from state.json's history);
  - training curves of all searches.
Several searches (K = 1, 2, 4, 8, ...) are laid out side by side.
"""

import os
import shlex
import sys

from absl import flags

from mixnas_tf import cli

cli.quiet_startup()

from mixnas_tf import errors  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import report as lib  # pylint: disable=wrong-import-position


def define_flags() -> None:
  """The command's flags (defined only when it runs)."""
  flags.DEFINE_list("search", None, "Search work directories (python -m mixnas_tf.train), "
                    "comma-separated; shown side by side.")
  flags.DEFINE_string("ground_truth", None, "True accuracies, FILE[:COLUMN]: an exhaustive "
                      "table.csv (mixnas_tf.exhaustive), the reference CSV, ... (any "
                      "mixnas_tf.rank source).")
  flags.DEFINE_list("tuner", [], "KerasTuner work directories (mixnas_tf.tune), "
                    "comma-separated, compared like the searches.")
  flags.DEFINE_string("out", None, "Output directory of report.md and its PNGs.")
  flags.DEFINE_string("space", None, "Search space of the configurations (default: the "
                      "searches' own, from their results.json).")


def main(argv):
  cli.check_no_positional(argv)
  if not flags.FLAGS.search:
    raise errors.UsageError("--search is required (one or more search work directories)")
  if not flags.FLAGS.out:
    raise errors.UsageError("--out is required (the report's directory)")
  path = lib.build_report(flags.FLAGS.search, os.path.abspath(flags.FLAGS.out),
                      ground_truth=flags.FLAGS.ground_truth, tuner_dirs=flags.FLAGS.tuner,
                      space_name=flags.FLAGS.space,
                      command=" ".join(shlex.quote(a) for a in
                                       ["python", "-m", "mixnas_tf.report", *sys.argv[1:]]))
  print(f"report: {path}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
