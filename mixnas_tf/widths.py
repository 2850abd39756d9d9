r"""Width search: where a network's channels should go (the heterogeneity hypothesis).

  python -m mixnas_tf.widths --config=4,3,3 --width_mult=2 --flops_ratio=0.25 \
      --dataset=cifar10 --epochs=30 --workdir=runs/widths
  python -m mixnas_tf.widths --from_search=runs/search --target_macs=40.8e6 --workdir=DIR

Widens every layer of the configuration's network by --width_mult, trains it for
--search_epochs with an l1 penalty on the BatchNorm scales (--gamma_l1), keeps the channels
whose |scale| reaches one global threshold (binary-searched until the pruned network's MACs
are within 0.1 % of --flops_ratio x the widened network's, or of --target_macs; residual
channels of a stage pruned together, the last stage kept whole), then trains the pruned
network for the rest of --epochs, from scratch or from its kept weights (--inherit), and
exports it as plain Keras. With --from_search the configuration is a finished search's
choice (the joint search: downsampling positions, then widths). Writes DIR/widths.json,
DIR/widths.png, DIR/summary.json, DIR/final/export/ (see methods/width_search.py).
"""

import dataclasses

from absl import flags

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.methods import retraining  # pylint: disable=wrong-import-position
from mixnas_tf.methods import standalone  # pylint: disable=wrong-import-position
from mixnas_tf.methods import width_search  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  d, w = standalone.StandaloneConfig(), width_search.WidthConfig(standalone.StandaloneConfig())
  flags.DEFINE_string("workdir", None, "Output directory (search/, widths.json, final/, "
                      "summary.json). Running again on the same directory resumes.")
  flags.DEFINE_string("config", d.config, "The configuration whose widths are searched: "
                      f"{cli.CONFIG_NOTATIONS}. Exclusive with --from_search.")
  flags.DEFINE_string("from_search", None, "Work directory of a finished search: search the "
                      "widths of its best configuration (its dataset, image size, space and "
                      "downsampling op are reused).")
  flags.DEFINE_float("width_mult", w.width_mult, "Every layer is widened by this before "
                     "the search.", lower_bound=1.0)
  flags.DEFINE_float("flops_ratio", w.flops_ratio, "Target MACs as a fraction of the "
                     "widened network's (0.25 of a 2x widened network ~ the default's).")
  flags.DEFINE_float("target_macs", w.target_macs, "Target MACs per image, instead of "
                     "--flops_ratio (e.g. 40.8e6, ResNet20 [4,3,3] at 32 px).", lower_bound=0)
  flags.DEFINE_integer("search_epochs", w.search_epochs, "Epochs of the widened network's "
                       "search phase, out of --epochs (0: a tenth of them).", lower_bound=0)
  flags.DEFINE_float("gamma_l1", w.gamma_l1, "Weight of the l1 penalty on the BatchNorm "
                     "scales during the search phase.", lower_bound=0.0)
  flags.DEFINE_float("min_keep", w.min_keep, "Every unit keeps at least this fraction of "
                     "its channels.", lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_bool("prune_last", w.prune_last, "Also prune the last stage's output (the "
                    "classifier's input), which the reference keeps whole on CIFAR.")
  flags.DEFINE_bool("inherit", w.inherit, "Train the pruned network from the search's kept "
                    "weights instead of from scratch.")
  cli.define_standalone_flags(d)


def main(argv):
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(FLAGS.workdir)
  # retrain's rule: a search's settings are inherited unless given on this command line.
  names = [f.name for f in dataclasses.fields(standalone.StandaloneConfig)]
  base, _ = retraining.resolve(*cli.flag_values([*names, "from_search"]))
  wcfg = width_search.WidthConfig(
      base=base, width_mult=FLAGS.width_mult, flops_ratio=FLAGS.flops_ratio,
      target_macs=FLAGS.target_macs, search_epochs=FLAGS.search_epochs,
      gamma_l1=FLAGS.gamma_l1, min_keep=FLAGS.min_keep, prune_last=FLAGS.prune_last,
      inherit=FLAGS.inherit)
  summary = width_search.run_widths(wcfg, workdir)
  if summary is None:
    cli.exit_interrupted()
  print(f"{spaces.format_stages(summary['config']['stages'])}: widths "
        f"{summary['widths']}, {summary['macs'] / 1e6:.1f} M MACs "
        f"({summary['macs_over_target']:.4f} of the target), test accuracy "
        f"{summary['test_accuracy']:.4f}; {workdir}/summary.json")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
