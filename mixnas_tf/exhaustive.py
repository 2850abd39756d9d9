"""Exhaustive ground truth: every configuration trained stand-alone with one budget.

  python -m mixnas_tf.exhaustive --workdir=DIR [--configs=all] [--seeds=1] --epochs=E ...
  python -m mixnas_tf.exhaustive --workdir=DIR --shard=I/N ...      (writes DIR/shard_I_of_N)
  python -m mixnas_tf.exhaustive merge --out=TABLE DIR_OR_TABLE [DIR_OR_TABLE ...]

Each (configuration, seed) is one `standalone.train_standalone` run in
DIR/runs/<reference number>_seed<s>/ (the same network builder, train step and loop as
the search and the retraining; checkpoints and resume inside a run). When every seed of a
configuration is done, its row is added to DIR/table.csv (rewritten atomically), so a
stopped run, started again with the same command, skips the finished configurations and
resumes the unfinished one from its checkpoint.

table.csv has the columns of the reference CSV it is compared with
(`../shared/reference/resnet20_cifar10_configs.csv`):
  architecture,stages,baseline_avg,baseline_stdev,seeds,macs,params
with accuracies in percent: the mean over seeds and the sample standard deviation
(empty for one seed). All seeds and configurations share one data split (drawn from
--data_seed), so they differ in initialisation, data order and augmentation only.

`--shard=I/N` trains the configurations whose position in --configs is I mod N, in
DIR/shard_I_of_N/, so N processes or machines can share the work; `merge` joins their
tables (a directory argument stands for all its shard_*/table.csv, or else its table.csv),
refuses a configuration listed twice with different values or shards trained with
different settings, and reports the configurations that no table holds.
"""

from collections.abc import Iterable
import os
import sys

from absl import flags

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf import errors  # pylint: disable=wrong-import-position
from mixnas_tf.baselines import exhaustive as lib  # pylint: disable=wrong-import-position
from mixnas_tf.methods import standalone  # pylint: disable=wrong-import-position

# ----------------------------------------------------------------------------
# Flags, shared with mixnas_tf.tune: the budget of one stand-alone training.


def define_budget_flags(skip: Iterable[str] = ()) -> None:
  """Every StandaloneConfig field but `config` (and `skip`) as a flag with its default."""
  cli.define_standalone_flags(standalone.StandaloneConfig(), skip)


def budget_from_flags(**overrides) -> standalone.StandaloneConfig:
  """A StandaloneConfig from the flags `define_budget_flags` defined, plus `overrides`."""
  return cli.standalone_values(standalone.StandaloneConfig, **overrides)


def define_flags() -> None:
  """The command's flags (defined only when it runs, so that tune can import this)."""
  flags.DEFINE_string("workdir", None, "Output directory: runs/<number>_seed<s>/ per run, "
                      "table.csv, flags.json (DIR/shard_I_of_N with --shard). Running the same "
                      "command again resumes at the first unfinished configuration.")
  flags.DEFINE_string("configs", "all", "Configurations to train, ';'-separated, each as "
                      f"{cli.CONFIG_NOTATIONS}; 'all' is the whole space.")
  flags.DEFINE_integer("seeds", 1, "Seeds per configuration: --seed .. --seed+N-1 (mean and "
                       "sample standard deviation in the table).", lower_bound=1)
  flags.DEFINE_string("shard", "0/1", "I/N: train only the configurations whose position in "
                      "--configs is I mod N, in WORKDIR/shard_I_of_N; join the shards with "
                      "`merge`.")
  flags.DEFINE_string("out", None, "merge: path of the merged table.")
  define_budget_flags()


FLAGS = flags.FLAGS


def merge_main(inputs: list[str]) -> None:
  if not FLAGS.out:
    raise errors.UsageError("merge needs --out=TABLE (the merged table's path)")
  report = lib.merge(inputs, os.path.abspath(os.path.expanduser(FLAGS.out)), FLAGS.space)
  print(f"merged {report['rows']} configurations from {len(report['tables'])} tables into "
        f"{FLAGS.out}")
  if report["identical_duplicates"]:
    print(f"{len(report['identical_duplicates'])} configurations were in several tables "
          f"with equal values (kept once): {report['identical_duplicates']}")
  if report["missing"]:
    print(f"missing {len(report['missing'])} configurations expected from "
          f"{report['expected_from']}: {' '.join(map(str, report['missing']))}",
          file=sys.stderr)


def main(argv):
  if len(argv) > 1 and argv[1] == "merge":
    merge_main(argv[2:])
    return
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(FLAGS.workdir)
  shard = lib.parse_shard(FLAGS.shard)
  cfg = budget_from_flags()
  rows = lib.run_exhaustive(cfg, workdir, configs=FLAGS.configs, seeds=FLAGS.seeds, shard=shard)
  if rows is None:
    cli.exit_interrupted()
  table = os.path.join(lib.shard_dir(workdir, shard), "table.csv")
  print(f"{len(rows)} configurations in {table}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
