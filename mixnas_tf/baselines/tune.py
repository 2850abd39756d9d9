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

from collections.abc import Callable
import dataclasses
import glob
import importlib.util
import math
import os

import keras_tuner as kt

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import standalone

TUNERS = ("random", "grid", "hyperband", "bayesian")
OBJECTIVE = "val_accuracy"
# Fields of DIR/flags.json that may change on resume without changing the results.
RESUMABLE_FIELDS = standalone.RESUMABLE_FIELDS


class _Stop(BaseException):
  """Leaves `Tuner.search`, which turns any Exception of a trial into a failed trial.

  args[0] is None for a graceful interruption (SIGINT/SIGTERM), or the UsageError to
  report.
  """


def hyperband_schedule(max_epochs: int, factor: int) -> list[dict]:
  """KerasTuner 1.4.8's Hyperband brackets (HyperbandOracle._get_size/_get_epochs).

  Returns:
    One entry per (bracket, round): {"bracket", "round", "trials", "epochs"}, where
    "epochs" is `tuner/epochs`, the total epochs of each of the round's trials.
  """
  brackets, epochs = 0, float(max_epochs)
  while epochs >= 1:  # HyperbandOracle._get_num_brackets with min_epochs = 1.
    epochs /= factor
    brackets += 1
  bracket0_end_size = math.ceil(1 + math.log(max_epochs, factor))
  schedule = []
  for bracket in range(brackets - 1, -1, -1):  # The oracle starts at the last bracket.
    for rnd in range(bracket + 1):
      schedule.append({
          "bracket": bracket, "round": rnd,
          "trials": math.ceil(bracket0_end_size / (bracket + 1) * factor**(bracket - rnd)),
          "epochs": math.ceil(max_epochs / factor**(bracket - rnd))})
  return schedule


def hyperband_cost(max_epochs: int, factor: int) -> tuple[int, int]:
  """(total epochs when every trial trains from scratch, number of fresh configurations)."""
  schedule = hyperband_schedule(max_epochs, factor)
  return (sum(s["trials"] * s["epochs"] for s in schedule),
          sum(s["trials"] for s in schedule if s["round"] == 0))


def hyperband_max_epochs(budget_epochs: int, factor: int) -> int:
  """The largest max_epochs whose from-scratch Hyperband cost is within the budget."""
  best = None
  for max_epochs in range(1, budget_epochs + 1):
    if hyperband_cost(max_epochs, factor)[0] <= budget_epochs:
      best = max_epochs
  if best is None:
    raise errors.UsageError(f"--budget_epochs={budget_epochs} is below the cost of the "
                            "smallest Hyperband (1 epoch)")
  return best


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a tuner spends the budget."""
  tuner: str
  max_trials: int | None
  epochs_per_trial: int
  max_epochs: int | None  # Hyperband only.
  factor: int | None  # Hyperband only.
  planned_epochs: int
  description: str


def plan(tuner: str, budget_epochs: int, epochs_per_trial: int, num_configs: int,
         factor: int = 3) -> Plan:
  """Turns an epoch budget into KerasTuner's arguments.

  Raises:
    errors.UsageError: unknown tuner or a budget too small for one trial.
  """
  if tuner not in TUNERS:
    raise errors.UsageError(f"--tuner must be one of {', '.join(TUNERS)} (received {tuner!r})")
  if budget_epochs < 1 or epochs_per_trial < 1:
    raise errors.UsageError(f"--budget_epochs and --epochs_per_trial must be >= 1 (received "
                            f"{budget_epochs} and {epochs_per_trial})")
  if tuner == "hyperband":
    if factor < 2:
      raise errors.UsageError(f"--hyperband_factor must be >= 2 (received {factor})")
    max_epochs = hyperband_max_epochs(budget_epochs, factor)
    cost, fresh = hyperband_cost(max_epochs, factor)
    note = (f"; it plans {fresh} fresh configurations but the space has {num_configs}, so it "
            "will stop early" if fresh > num_configs else "")
    return Plan(tuner, None, max_epochs, max_epochs, factor, cost,
                f"hyperband: max_epochs={max_epochs}, factor={factor}, one iteration: "
                f"{cost} epochs of the {budget_epochs}-epoch budget (trials train from "
                f"scratch){note}")
  max_trials = budget_epochs // epochs_per_trial
  if max_trials < 1:
    raise errors.UsageError(f"--budget_epochs={budget_epochs} is less than one trial of "
                            f"--epochs_per_trial={epochs_per_trial}")
  trials = min(max_trials, num_configs) if tuner == "grid" else max_trials
  note = ""
  if tuner == "grid" and max_trials < num_configs:
    note = (f"; grid search walks the list in order, so only its first {max_trials} "
            "configurations are tried")
  elif max_trials > num_configs:
    note = (f"; the space has only {num_configs} configurations, so it stops after at "
            "most that many distinct trials")
  return Plan(tuner, max_trials, epochs_per_trial, None, None, trials * epochs_per_trial,
              f"{tuner}: {max_trials} trials x {epochs_per_trial} epochs = "
              f"{max_trials * epochs_per_trial} of the {budget_epochs}-epoch budget{note}")


def check_tuner_available(tuner: str) -> None:
  """BayesianOptimization needs scikit-learn (the `[bayesian]` extra)."""
  if tuner == "bayesian" and importlib.util.find_spec("sklearn") is None:
    raise errors.UsageError("--tuner=bayesian needs scikit-learn, which is not installed; "
                            "pip install 'mixnas_tf[bayesian]' (or scikit-learn)")


def make_oracle(the_plan: Plan, configs: list[int], seed: int):
  """The KerasTuner oracle of `the_plan` over `configs` (reference numbers)."""
  hp = kt.HyperParameters()
  hp.Choice("config", configs, ordered=False)
  common = dict(objective=kt.Objective(OBJECTIVE, direction="max"), hyperparameters=hp,
                tune_new_entries=False, allow_new_entries=False,
                # KerasTuner treats a seed of 0 as "pick one at random".
                seed=seed + 1)
  if the_plan.tuner == "random":
    return kt.oracles.RandomSearchOracle(max_trials=the_plan.max_trials, **common)
  if the_plan.tuner == "grid":
    return kt.oracles.GridSearchOracle(max_trials=the_plan.max_trials, **common)
  if the_plan.tuner == "bayesian":
    return kt.oracles.BayesianOptimizationOracle(max_trials=the_plan.max_trials, **common)
  return kt.oracles.HyperbandOracle(max_epochs=the_plan.max_epochs, factor=the_plan.factor,
                                    hyperband_iterations=1, **common)


class StandaloneTuner(kt.Tuner):
  """A KerasTuner whose trials are `standalone.train_standalone` runs.

  Args:
    oracle: the KerasTuner oracle (its space holds the "config" choice).
    base: the stand-alone settings of every trial (config and epochs are set per trial).
    epochs_per_trial: epochs of a trial when the oracle does not set `tuner/epochs`.
    load: () -> `standalone.load_data(base)`, called once, at the first trial.
    after_step: test hook passed to every run.
    **kwargs: keras_tuner.Tuner's (directory, project_name, overwrite, ...).
  """

  def __init__(self, oracle, *, base: standalone.StandaloneConfig, epochs_per_trial: int,
               load: Callable[[], tuple], after_step=None, **kwargs):
    self.base = base
    self.epochs_per_trial = epochs_per_trial
    self._load = load
    self._loaded = None
    self._after_step = after_step
    self.space = spaces.get_space(base.space)
    super().__init__(oracle=oracle, hypermodel=None, **kwargs)

  def on_search_begin(self):
    # tuner0.json marks the project as started, so that a run interrupted during its
    # first trial reloads the oracle (and retries that trial) instead of starting over.
    self.save()

  def trial_config(self, trial) -> standalone.StandaloneConfig:
    """The base settings with the trial's configuration and epochs."""
    values = trial.hyperparameters.values
    config = spaces.from_index(self.space, int(values["config"]))
    return dataclasses.replace(self.base, config=spaces.to_code_string(config),
                               epochs=int(values.get("tuner/epochs",
                                                     self.epochs_per_trial)))

  def finished_run(self, cfg: standalone.StandaloneConfig) -> tuple[str, dict] | None:
    """(trial directory, metrics) of a finished earlier trial of the same configuration
    and epochs in this project (whose other settings DIR/flags.json pins), if any."""
    index = spaces.to_index(self.space, spaces.parse_config(self.space, cfg.config))
    for path in sorted(glob.glob(os.path.join(self.project_dir, "trial_*", "metrics.json"))):
      metrics = workdir_lib.read_json(path)
      if metrics["config"]["index"] == index and metrics["epochs"] == cfg.epochs:
        return os.path.dirname(path), metrics
    return None

  def run_trial(self, trial, *args, **kwargs):
    """Trains the trial's configuration in its directory; returns the held-out accuracy.

    A configuration that an earlier trial already trained for the same epochs (Bayesian
    optimisation may propose it again) is not trained twice: its result is reused and
    the trial directory says so in reused.json.
    """
    cfg = self.trial_config(trial)
    directory = self.get_trial_dir(trial.trial_id)
    earlier = None if os.path.exists(os.path.join(directory, "metrics.json")) else (
        self.finished_run(cfg))
    if earlier is not None:
      workdir_lib.atomic_write_json(os.path.join(directory, "reused.json"),
                                    {"reused_from": earlier[0]})
      return {OBJECTIVE: earlier[1]["test_accuracy"]}
    try:
      if self._loaded is None:
        self._loaded = self._load()
      metrics = standalone.train_standalone(cfg, directory, after_step=self._after_step,
                                            loaded=self._loaded)
    except errors.UsageError as e:
      raise _Stop(e) from None
    if metrics is None:
      raise _Stop(None)
    return {OBJECTIVE: metrics["test_accuracy"]}


def make_tuner(the_plan: Plan, base: standalone.StandaloneConfig, configs: list[int],
               workdir: str, project: str, load: Callable[[], tuple], after_step=None):
  """A StandaloneTuner in DIR/<project> (reloaded from there if it exists)."""
  return StandaloneTuner(make_oracle(the_plan, configs, base.seed), base=base,
                         epochs_per_trial=the_plan.epochs_per_trial, load=load,
                         after_step=after_step, directory=workdir, project_name=project,
                         overwrite=False)


def is_distributed_worker() -> bool:
  """Whether this process is a KerasTuner worker (not the chief, not single-process)."""
  tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
  return "KERASTUNER_ORACLE_IP" in os.environ and "chief" not in tuner_id


def collect_results(tuner, the_plan: Plan, budget_epochs: int) -> dict:
  """tune_results.json: every trial of the oracle, the best, and the epochs spent."""
  space = tuner.space
  trials = []
  for trial_id, trial in sorted(tuner.oracle.trials.items()):
    values = trial.hyperparameters.values
    index = int(values["config"])
    completed = trial.status == "COMPLETED" and trial.score is not None
    directory = os.path.join(tuner.project_dir, f"trial_{trial_id}")
    seconds = reused_from = None
    if os.path.exists(os.path.join(directory, "metrics.json")):
      seconds = workdir_lib.read_json(os.path.join(directory, "metrics.json")).get(
          "train_seconds")
    if os.path.exists(os.path.join(directory, "reused.json")):
      reused_from = os.path.basename(
          workdir_lib.read_json(os.path.join(directory, "reused.json"))["reused_from"])
    trials.append({
        "trial_id": trial_id, "status": trial.status, "config": index,
        "stages": list(spaces.to_stages(space, spaces.from_index(space, index))),
        "accuracy": float(trial.score) if completed else None,
        "epochs": int(values.get("tuner/epochs", the_plan.epochs_per_trial)),
        "bracket": values.get("tuner/bracket"), "round": values.get("tuner/round"),
        "train_seconds": seconds, "reused_from": reused_from})
  done = [t for t in trials if t["accuracy"] is not None]
  # KerasTuner's own choice (on ties, the earlier trial).
  best_trials = tuner.oracle.get_best_trials(1) if done else []
  best = next((t for t in trials if best_trials and t["trial_id"] == best_trials[0].trial_id),
              None)
  return {"tuner": the_plan.tuner, "objective": f"{OBJECTIVE} (held-out part of train)",
          "budget_epochs": budget_epochs, "planned_epochs": the_plan.planned_epochs,
          "plan": the_plan.description,
          # Epochs actually trained: a reused result cost none.
          "epochs_used": sum(t["epochs"] for t in done if t["reused_from"] is None),
          "project_dir": tuner.project_dir, "trials": trials, "best": best}


@workdir_lib.holding
def run_tune(base: standalone.StandaloneConfig, workdir: str, *, tuner: str,
             budget_epochs: int, epochs_per_trial: int, configs: str = "all",
             project: str | None = None, hyperband_factor: int = 3,
             after_step=None, summary: bool = True) -> dict | None:
  """Runs (or resumes) a KerasTuner search; returns tune_results.json's content.

  Args:
    base: the stand-alone settings of every trial (`eval_split` is forced to "holdout";
      `config` and `epochs` are set per trial).
    workdir: DIR; KerasTuner's project is DIR/<project>.
    tuner: one of TUNERS.
    budget_epochs: total epochs of all trials.
    epochs_per_trial: epochs of each trial (not Hyperband, which sets its own).
    configs: ';'-separated configurations to choose from, or "all".
    project: KerasTuner's project name (default: the tuner's name).
    hyperband_factor: Hyperband's reduction factor.
    after_step: test hook passed to every run.
    summary: print KerasTuner's results_summary().

  Returns:
    The results (also DIR/tune_results.json), {"worker": True} on a distributed worker,
    or None if interrupted.

  Raises:
    errors.UsageError: invalid settings, a missing optional dependency, or DIR holds a
      run with other settings.
  """
  base = dataclasses.replace(base, eval_split="holdout")
  space = standalone.validate_settings(base)
  indices = [spaces.to_index(space, c) for c in spaces.parse_configs(space, configs)]
  if len(indices) < 2:
    raise errors.UsageError(f"--configs must hold at least 2 configurations to tune over "
                            f"(received {configs!r})")
  the_plan = plan(tuner, budget_epochs, epochs_per_trial, len(indices), hyperband_factor)
  check_tuner_available(tuner)
  project = project or tuner
  workdir = os.path.abspath(workdir)
  settings = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("config",
                                                                              "epochs")}
  workdir_lib.prepare(workdir, {**settings, "tuner": tuner, "budget_epochs": budget_epochs,
                                "epochs_per_trial": epochs_per_trial, "configs": indices,
                                "project": project, "hyperband_factor": hyperband_factor},
                      ignore=RESUMABLE_FIELDS)
  print(the_plan.description, flush=True)
  kt_tuner = make_tuner(the_plan, base, indices, workdir, project,
                        load=lambda: standalone.load_data(base), after_step=after_step)
  try:
    kt_tuner.search()
  except _Stop as stop:
    if stop.args[0] is not None:
      raise stop.args[0] from None
    kt_tuner.save()
    return None
  if is_distributed_worker():
    return {"worker": True}
  results = collect_results(kt_tuner, the_plan, budget_epochs)
  workdir_lib.atomic_write_json(os.path.join(workdir, "tune_results.json"), results)
  if summary:
    kt_tuner.results_summary()
  return results
