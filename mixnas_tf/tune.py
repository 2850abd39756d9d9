r"""KerasTuner over the same configurations, trained by our loop: the comparison baseline.

  python -m mixnas_tf.tune --tuner=random|grid|hyperband|bayesian --workdir=DIR \
      --budget_epochs=E --epochs_per_trial=e [stand-alone training flags]

A `keras_tuner.Tuner` subclass (`StandaloneTuner`, hypermodel None) whose `run_trial`
reads the configuration from `hp.Choice("config", reference numbers, ordered=False)` and
the epochs from `tuner/epochs` (Hyperband) or --epochs_per_trial, and trains it with
`standalone.train_standalone` (the network builder, train step and loop of the search and
the retraining) in the trial's own directory. The objective is the accuracy on a held-out
part of the training split (`eval_split="holdout"`): tuning never sees the test split.

The budget is in epochs (of the stand-alone training split), so that a run can be matched
to a mixture search's cost:
  - random, bayesian, grid: max_trials = budget_epochs // epochs_per_trial (grid walks the
    configurations in reference order and stops early when it has tried them all);
  - hyperband (factor --hyperband_factor, one iteration): every trial here trains from
    scratch (our cosine schedule depends on the total epochs, so a promoted trial cannot
    continue a shorter one), so a trial of round r costs its full `tuner/epochs`;
    `hyperband_cost` replays KerasTuner's bracket arithmetic with that accounting and
    max_epochs is the largest value whose cost fits the budget. With few configurations
    Hyperband may run out of unseen ones and stop below its cost.

Files: KerasTuner's own layout DIR/<project>/{oracle.json, tuner0.json,
trial_<id>/trial.json}, our runs inside the trial directories (flags.json, checkpoints,
metrics.json), DIR/flags.json (this command's settings, checked on resume) and
DIR/tune_results.json (per trial: configuration, stages, accuracy, epochs; readable by
mixnas_tf.rank and mixnas_tf.report). The same command on the same DIR resumes
(`overwrite=False`): finished trials are kept, an interrupted trial is retried by
KerasTuner with the same id and resumes from its checkpoint.
"""

import os

from absl import flags
from absl import logging

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf import errors  # pylint: disable=wrong-import-position
from mixnas_tf import exhaustive  # pylint: disable=wrong-import-position
from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.baselines import tune as lib  # pylint: disable=wrong-import-position


def define_flags() -> None:
  """The command's flags (defined only when it runs)."""
  flags.DEFINE_string("workdir", None, "Output directory: KerasTuner's project in "
                      "WORKDIR/<project>/, flags.json and tune_results.json. Running the same "
                      "command again resumes the search.")
  flags.DEFINE_enum("tuner", "random", list(lib.TUNERS), "KerasTuner algorithm: random search, "
                    "grid search (every configuration in reference order; scored on the "
                    "holdout, so not the exhaustive baseline's test split), Hyperband, "
                    "or Bayesian optimisation (needs scikit-learn: the [bayesian] extra).")
  flags.DEFINE_integer("budget_epochs", None, "Total training epochs of all trials: match "
                       "it to a mixture search's cost.", lower_bound=1)
  flags.DEFINE_integer("epochs_per_trial", 3, "Epochs of each trial (random, grid, "
                       "bayesian); Hyperband sets its own.", lower_bound=1)
  flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's reduction factor (its max_epochs "
                       "is derived from --budget_epochs).", lower_bound=2)
  flags.DEFINE_string("configs", "all", "Configurations the tuner chooses from, "
                      "';'-separated (stages, reference numbers or codes), or 'all'.")
  flags.DEFINE_string("project", None, "KerasTuner project name (default: the tuner's name).")
  exhaustive.define_budget_flags(skip=("epochs", "eval_split"))


def main(argv):
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(flags.FLAGS.workdir)
  if flags.FLAGS.budget_epochs is None:
    raise errors.UsageError("--budget_epochs is required (total epochs of all trials)")
  base = exhaustive.budget_from_flags(eval_split="holdout")
  results = lib.run_tune(base, workdir, tuner=flags.FLAGS.tuner,
                     budget_epochs=flags.FLAGS.budget_epochs,
                     epochs_per_trial=flags.FLAGS.epochs_per_trial,
                     configs=flags.FLAGS.configs, project=flags.FLAGS.project,
                     hyperband_factor=flags.FLAGS.hyperband_factor)
  if results is None:
    cli.exit_interrupted()
  if results.get("worker"):
    print("worker finished: the chief writes tune_results.json")
    return
  best = results["best"]
  if best is None:
    print(f"no trial completed; see {results['project_dir']}")
    return
  logging.flush()
  print(f"best configuration: {best['config']} {spaces.format_stages(best['stages'])} "
        f"held-out accuracy {best['accuracy']:.4f} ({results['epochs_used']} epochs used); "
        f"results in {os.path.join(workdir, 'tune_results.json')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
