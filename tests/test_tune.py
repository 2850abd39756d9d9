"""Tests for mixnas_tf.tune: budget arithmetic and a tiny KerasTuner search through our loop."""

import dataclasses
import json
import os
import pathlib
import signal

from conftest import make_image_folder
import keras_tuner
import pytest

from mixnas_tf import errors
from mixnas_tf.analysis import sources
from mixnas_tf.baselines import tune
from mixnas_tf.methods import standalone


@pytest.mark.parametrize("max_epochs,factor", [(1, 3), (4, 3), (30, 3), (81, 3), (10, 2)])
def test_hyperband_schedule_is_keras_tuners(max_epochs, factor):
  oracle = keras_tuner.oracles.HyperbandOracle(objective="val_accuracy",
                                               max_epochs=max_epochs, factor=factor)
  # pylint: disable=protected-access
  brackets = oracle._get_num_brackets()
  expected = [(b, r, oracle._get_size(b, r), oracle._get_epochs(b, r))
              for b in range(brackets - 1, -1, -1) for r in range(b + 1)]
  # pylint: enable=protected-access
  assert [(s["bracket"], s["round"], s["trials"], s["epochs"])
          for s in tune.hyperband_schedule(max_epochs, factor)] == expected


def test_budget_plans():
  random = tune.plan("random", 30, 3, num_configs=36)
  assert random.max_trials == 10 and random.planned_epochs == 30
  grid = tune.plan("grid", 40, 1, num_configs=36)
  assert grid.max_trials == 40 and grid.planned_epochs == 36  # Stops after all 36.
  hyperband = tune.plan("hyperband", 30, 3, num_configs=36)
  # max_epochs=4, factor 3 (KerasTuner's sizes): bracket 1 = 5 trials x 2 epochs, then
  # the best 2 retrained from scratch x 4 = 18; bracket 0 = 3 x 4 = 12; 30 epochs in all.
  assert (hyperband.max_epochs, hyperband.planned_epochs) == (4, 30)
  assert tune.hyperband_cost(5, 3)[0] > 30
  with pytest.raises(errors.UsageError, match="less than one trial"):
    tune.plan("random", 2, 3, num_configs=36)
  with pytest.raises(errors.UsageError, match="--tuner must be one of"):
    tune.plan("evolution", 30, 3, num_configs=36)


def test_bayesian_without_scikit_learn_is_a_one_line_error(monkeypatch):
  monkeypatch.setattr(tune.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(errors.UsageError, match=r"needs scikit-learn.*\[bayesian\]"):
    tune.check_tuner_available("bayesian")
  tune.check_tuner_available("random")


# KerasTuner 1.4.8 calls threading.currentThread(), deprecated in Python 3.10+.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_random_search_of_two_trials_runs_through_our_loop(tmp_path, capsys):
  root = make_image_folder(tmp_path / "folder", classes=("a", "b"), per_class=24,
                           size=8, seed=1)
  base = standalone.StandaloneConfig(
      dataset=f"folder:{root}", batch_size=8, eval_batch_size=8, holdout_fraction=0.25,
      jit_compile=False, progress=False, log_every=1)
  workdir = str(tmp_path / "tune")
  kwargs = dict(tuner="random", budget_epochs=2, epochs_per_trial=1, configs="1;24;36")
  calls = []

  def stop_in_first_trial(step):
    calls.append(step)
    if len(calls) == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  assert tune.run_tune(base, workdir, after_step=stop_in_first_trial, **kwargs) is None
  steps = []
  results = tune.run_tune(base, workdir, after_step=steps.append, **kwargs)
  # The interrupted trial was retried under its id and resumed from its checkpoint
  # (global steps 3, 4), then the second trial ran (4 steps).
  assert steps == [3, 4, 1, 2, 3, 4]
  assert "Results summary" in capsys.readouterr().out
  project = pathlib.Path(workdir) / "random"
  assert (project / "oracle.json").exists() and (project / "tuner0.json").exists()
  trials = results["trials"]
  assert [t["trial_id"] for t in trials] == ["0", "1"]
  assert all(t["status"] == "COMPLETED" and t["epochs"] == 1 for t in trials)
  assert len({t["config"] for t in trials}) == 2
  assert results["epochs_used"] == 2 and results["best"] is not None
  for t in trials:
    run = project / f"trial_{t['trial_id']}"
    assert json.loads((run / "trial.json").read_text())["hyperparameters"]["values"] == {
        "config": t["config"]}
    metrics = json.loads((run / "metrics.json").read_text())
    # Held-out part of train, never a test split; the score is that accuracy.
    assert metrics["eval_split"].startswith("holdout")
    assert metrics["test_accuracy"] == pytest.approx(t["accuracy"])
    assert metrics["config"]["index"] == t["config"]
  on_disk = json.loads((pathlib.Path(workdir) / "tune_results.json").read_text())
  assert on_disk["trials"] == trials
  # rank reads both the results file and KerasTuner's own project directory.
  expected = {t["config"]: 100 * t["accuracy"] for t in trials}
  assert sources.read(workdir).values == pytest.approx(expected)
  assert sources.read(str(project)).values == pytest.approx(expected)
  # Finished: running again trains nothing.
  again = tune.run_tune(base, workdir, after_step=lambda step: pytest.fail("trained"),
                        summary=False, **kwargs)
  assert again["trials"] == trials
  # A trial proposing an already trained configuration reuses its result.
  tuner = tune.make_tuner(tune.plan("random", 2, 1, 3), dataclasses.replace(
      base, eval_split="holdout"), [1, 24, 36], workdir, "random",
                          load=lambda: pytest.fail("loaded"))
  repeat = keras_tuner.engine.trial.Trial(tuner.oracle.get_space(), trial_id="9")
  repeat.hyperparameters.values = {"config": trials[0]["config"]}
  assert tuner.run_trial(repeat) == {"val_accuracy": trials[0]["accuracy"]}
  assert json.loads((project / "trial_9" / "reused.json").read_text())["reused_from"] == str(
      project / "trial_0")
  with pytest.raises(errors.UsageError, match="different flags"):
    tune.run_tune(base, workdir, **{**kwargs, "budget_epochs": 3})
