"""Retraining a chosen configuration from scratch, over one or several seeds, and exporting it.

  python -m mixnas_tf.retrain --workdir=DIR --config=5,3,2 [--seeds=3]
  python -m mixnas_tf.retrain --workdir=DIR --from_search=SEARCH_DIR [--rank=2]

Each seed s is one `standalone.train_standalone` run in DIR/seed_<s>/ (same network
builder, train step and loop as the search; flags first, TensorBoard, checkpoints,
resume, atomic metrics.json). DIR/flags.json holds the resolved settings before the first
step; DIR/summary.json (written atomically when every seed is done) holds the per-seed
test accuracies, their mean and sample standard deviation, the configuration, its
parameters and multiply-accumulates. The first seed's model (or each seed's) is then
exported (export.py). The same command on the same DIR resumes; finished seeds are
skipped; a larger --seeds adds seeds to a finished DIR.

The library part (`search_choice`, `resolve`, `run`) is what tests and
experiments/compare_default.py call; `main` only reads flags.
"""

import dataclasses
import os

from absl import flags

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.methods import retraining as lib  # pylint: disable=wrong-import-position
from mixnas_tf.methods import standalone  # pylint: disable=wrong-import-position


def define_flags(config_flags: bool = True) -> None:
  """StandaloneConfig fields as flags (defaults from the dataclass), plus the seeds.

  Fields that only a learned-stride ("diffstride") network reads are left out and keep
  their defaults: retraining trains the fixed downsampling ops, the ones export.py can
  express in standard Keras layers.

  Args:
    config_flags: also define --config, --from_search and --rank.
  """
  d = standalone.StandaloneConfig()
  flags.DEFINE_string("workdir", None, "Output directory: DIR/seed_<s>/ per seed (flags, "
                      "checkpoints, TensorBoard, metrics.json), DIR/summary.json and "
                      "DIR/export/. Running again on the same directory resumes.")
  if config_flags:
    flags.DEFINE_string("config", d.config, "The configuration to train: "
                        f"{cli.CONFIG_NOTATIONS}. Exclusive with --from_search.")
    flags.DEFINE_string("from_search", None, "Work directory of a finished search "
                        "(python -m mixnas_tf.train): train its best configuration, or the "
                        "--rank-th of its ranking. Its dataset, image size, space and "
                        "downsampling op are used unless given here.")
    flags.DEFINE_integer("rank", None, "With --from_search: train the configuration at this "
                         "1-based position of the search's ranking instead of its best.",
                         lower_bound=1)
  cli.define_standalone_flags(d)
  flags.DEFINE_integer("seeds", 1, "Train this many seeds, --seed .. --seed+N-1, and report "
                       "the mean and standard deviation of their test accuracy.",
                       lower_bound=1)
  flags.DEFINE_enum("export", "first", list(lib.EXPORT_MODES), "Export the first seed's trained "
                    "model to WORKDIR/export, each seed's to WORKDIR/seed_<s>/export, or none.")


def main(argv):
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(flags.FLAGS.workdir)
  names = [f.name for f in dataclasses.fields(standalone.StandaloneConfig)]
  cfg, source = lib.resolve(*cli.flag_values([*names, "from_search", "rank"]))
  summary = lib.run(cfg, workdir, seeds=flags.FLAGS.seeds, export=flags.FLAGS.export,
                source=source)
  if summary is None:
    cli.exit_interrupted()
  print(f"{spaces.format_stages(summary['config']['stages'])} (#{summary['config']['index']}): "
        f"test accuracy {lib.format_accuracy(summary)} over {len(summary['seeds'])} seed(s); "
        f"summary in {os.path.join(workdir, 'summary.json')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
