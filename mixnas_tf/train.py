r"""Balanced-mixture search of where a ResNet should downsample (ResNet20, ResNet18, ResNet50).

  python -m mixnas_tf.train --dataset=cifar10 --workdir=runs/search
  python -m mixnas_tf.train --flagfile=experiments/cifar10_resnet20_m4.flags --workdir=DIR

Writes the resolved flags and the search space to --workdir before the first step, then
TensorBoard summaries and checkpoints; the same command on the same --workdir resumes.
At the end: results.json, ranking.csv, assignment.png, estimated_accuracy.png.
"""

import dataclasses

from absl import flags

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf.methods import evaluate  # pylint: disable=wrong-import-position
from mixnas_tf.methods import search  # pylint: disable=wrong-import-position

_D = search.SearchConfig()

flags.DEFINE_string("workdir", None, "Directory for flags, checkpoints, TensorBoard logs and "
                    "results. Running again on the same directory resumes the run.")
cli.define_data_flags(_D)
cli.define_space_flag(_D.space, "the network whose downsampling positions are searched")
flags.DEFINE_string("configs", _D.configs, "Configurations to search, ';'-separated, each as "
                    f"{cli.CONFIG_NOTATIONS}; 'all' searches the whole space.")
flags.DEFINE_integer("num_models", _D.num_models, "K, the number of SuperNets (weight sets) "
                     "in the mixture; 1 is the single-SuperNet (SPOS) baseline.", lower_bound=1)
flags.DEFINE_integer("shared_epochs", _D.shared_epochs, "Epochs during which one shared "
                     "SuperNet (weight set 0) trains on every configuration before the K sets "
                     "split from it and the balanced mixture starts (few-shot NAS style "
                     "warm-up); 0 is the paper's method. Ignored when --num_models=1.",
                     lower_bound=0)
flags.DEFINE_float("max_temperature", _D.max_temperature, "Final temperature of the "
                   "assignment softmax; it rises linearly from 1 over the mixture's epochs (after "
                   "--shared_epochs) (ALGORITHM.md: "
                   "100 for ResNet20, 300 for Food101; at most 500).", lower_bound=1.0,
                   upper_bound=500.0)
flags.DEFINE_float("ema_decay", _D.ema_decay, "Decay of the scores' moving average of "
                   "validation-batch accuracy, W <- d W + (1 - d) a (reference: 0.9 for "
                   "ResNet20/50, 0.95 for ResNet18).", lower_bound=0.0, upper_bound=0.999)
flags.DEFINE_integer("epochs", _D.epochs, "Training epochs over the search-train split "
                     "(see --budget).")
flags.DEFINE_enum("budget", _D.budget, list(search.BUDGETS), "What --epochs counts when K > 1. "
                  "total: the run's epochs, shared by the K weight sets (each gets about 1/K "
                  "of the steps; the same compute as K=1). per_set: each weight set's epochs, "
                  "so the run trains K x --epochs epochs and takes K times as long; the "
                  "paper's protocol for its M > 1 results (README, 'How far to trust a "
                  "ranking'). --warmup_epochs counts like --epochs; --shared_epochs counts the "
                  "run's epochs (one shared SuperNet trains them all).")
flags.DEFINE_float("val_fraction", _D.val_fraction, "Fraction of the training split held out "
                   "as search-validation (0.5 as in the paper).")
flags.DEFINE_integer("train_size", _D.train_size, "Subsample search-train to this many "
                     "images for quick runs; 0 keeps it whole.", lower_bound=0)
flags.DEFINE_integer("val_size", _D.val_size, "Subsample search-validation to this many "
                     "images; 0 keeps it whole.", lower_bound=0)
cli.define_downsample_flag(_D.downsample)
flags.DEFINE_enum("batchnorm", _D.batchnorm, ["batch_stats", "standard"], "SuperNet "
                  "BatchNorm: batch statistics always and no affine parameters (reference), "
                  "or standard BatchNorm per weight set.")
cli.define_optim_flags(_D)
flags.DEFINE_string("final_eval", _D.final_eval, "After training, what is evaluated on the "
                    "whole search-validation split: " + evaluate.FINAL_EVAL_HELP + ".")
flags.DEFINE_enum("estimate", _D.estimate, list(search.ESTIMATES), "How a configuration's "
                  "accuracy is estimated from the final evaluation: under its assigned weight "
                  "set (assigned, the paper's), the max or the mean over the sets, or the "
                  "assigned set's accuracy with the set's overall advantage removed "
                  "(centered, weighted); see mixnas_tf/methods/estimators.py. mean, centered "
                  "and weighted need --final_eval=all_pairs. auto: centered when every pair is "
                  "evaluated and K > 1 (the best measured, README; under --budget=per_set "
                  "estimators.AUTO_PER_SET), else assigned; a resumed run keeps its own.")
cli.define_run_flags(_D)
flags.DEFINE_integer("max_live_programs", _D.max_live_programs, "Compiled step programs (one "
                     "per configuration) kept alive per step kind; the least recently used "
                     "beyond it are traced again when met. XLA is used only when every "
                     "searched configuration fits (XLA never frees a compiled program), "
                     "else graph mode.", lower_bound=1)
flags.DEFINE_integer("compile_threads", _D.compile_threads, "With XLA, every configuration's "
                     "steps compile before the first step, this many at a time (0: the "
                     "host's cores).", lower_bound=0)
cli.define_xla_cache_flag()

FLAGS = flags.FLAGS


def main(argv):
  cli.check_no_positional(argv)
  fields = {f.name for f in dataclasses.fields(search.SearchConfig)}
  cfg = search.SearchConfig(**{name: FLAGS[name].value for name in fields})
  workdir = cli.required_workdir(FLAGS.workdir)
  results = search.run_search(cfg, workdir)
  if results is None:
    cli.exit_interrupted()
  best = results["best"]
  print(f"best configuration: {best['index']} {best['stages']} "
        f"estimated accuracy {best['estimated_accuracy']:.4f}; "
        f"results in {FLAGS.workdir}/results.json")
  print(f"next: python -m mixnas_tf.retrain --from_search={workdir} "
        f"--workdir={workdir}_retrain")


if __name__ == "__main__":
  cli.run(main)
