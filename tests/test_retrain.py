"""Retraining: configuration sources, seeds summary, a real short run, resume, CLI errors."""

import dataclasses
import json
import math
import os
import pathlib
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.methods import retraining as retrain
from mixnas_tf.methods import standalone
from mixnas_tf.nn import network

SPACE = spaces.get_space("resnet20")
REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"


def _search_dir(root, ranking=(27, 24, 3), dataset="folder:/data/x", downsample="avgpool"):
  """A hand-written finished search: results.json (best + ranking) and its flags.json."""
  root.mkdir(parents=True, exist_ok=True)
  best = ranking[0]
  (root / "results.json").write_text(json.dumps({
      "space": "resnet20", "dataset": dataset,
      "best": {"index": best, "stages": list(spaces.to_stages(SPACE, spaces.from_index(SPACE, best))),
               "estimated_accuracy": 0.5},
      "ranking": list(ranking)}))
  (root / "flags.json").write_text(json.dumps({
      "dataset": dataset, "tfds_data_dir": None, "image_size": 0, "space": "resnet20",
      "downsample": downsample, "epochs": 100}))
  return root


def test_search_choice_takes_best_or_rank(tmp_path):
  search = _search_dir(tmp_path / "search")
  best = retrain.search_choice(str(search))
  assert (best.index, best.rank) == (27, 1)
  assert best.config == spaces.to_code_string(spaces.from_index(SPACE, 27))
  assert best.settings["downsample"] == "avgpool"
  third = retrain.search_choice(str(search), rank=3)
  assert (third.index, third.config) == (3, spaces.to_code_string(spaces.from_index(SPACE, 3)))
  with pytest.raises(errors.UsageError, match="--rank=4 is beyond the 3"):
    retrain.search_choice(str(search), rank=4)
  with pytest.raises(errors.UsageError, match="no search results"):
    retrain.search_choice(str(tmp_path))


def test_resolve_from_search_inherits_unless_given(tmp_path):
  search = str(_search_dir(tmp_path / "search"))
  cfg, source = retrain.resolve({"from_search": search, "rank": 2, "epochs": 3})
  assert cfg.config == "0,0,0,0,1,0,0,1,0,0"  # Reference number 24 = [4,3,3].
  assert (cfg.dataset, cfg.downsample, cfg.epochs) == ("folder:/data/x", "avgpool", 3)
  assert source["index"] == 24 and source["rank"] == 2
  cfg, _ = retrain.resolve({"from_search": search, "downsample": "conv"},
                           given={"downsample"})
  assert cfg.downsample == "conv" and cfg.config == spaces.to_code_string(
      spaces.from_index(SPACE, 27))
  with pytest.raises(errors.UsageError, match="not both"):
    retrain.resolve({"from_search": search, "config": "5,3,2"}, given={"config"})
  with pytest.raises(errors.UsageError, match="--rank needs --from_search"):
    retrain.resolve({"rank": 2})
  cfg, source = retrain.resolve({"config": "[5,3,2]"}, given={"config"})
  assert cfg.config == "0,0,0,0,0,1,0,0,1,0" and source == {"config": "[5,3,2]"}
  cfg, _ = retrain.resolve({"config": "5,3,2", "step_boundaries": ["0.3", "0.6"]})
  assert cfg.step_boundaries == (0.3, 0.6)
  with pytest.raises(errors.UsageError, match=r"--step_boundaries must be comma-separated "
                     r"numbers.*\(received a,b\)"):
    retrain.resolve({"config": "5,3,2", "step_boundaries": ["a", "b"]})


def test_summary_mean_and_sample_std():
  runs = [{"seed": s, "test_accuracy": a, "test_loss": 1.0, "config": {"index": 24},
           "eval_split": "test", "test_images": 10, "params": 5, "macs": 7}
          for s, a in ((0, 0.5), (1, 0.7), (2, 0.6))]
  summary = retrain.summarize(standalone.StandaloneConfig(), runs)
  assert summary["mean_test_accuracy"] == pytest.approx(0.6)
  assert summary["std_test_accuracy"] == pytest.approx(0.1)  # ddof = 1.
  assert summary["seeds"] == [0, 1, 2] and (summary["params"], summary["macs"]) == (5, 7)
  one = retrain.summarize(standalone.StandaloneConfig(), runs[:1])
  assert one["std_test_accuracy"] is None
  assert retrain.format_accuracy(summary) == "60.00 +- 10.00 %"


def _run_cli(*args, cwd):
  return subprocess.run([sys.executable, "-m", "mixnas_tf.retrain", *args],
                        capture_output=True, text=True, timeout=300, cwd=cwd,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.parametrize("case", ["unknown_config", "no_results", "rank_beyond"])
def test_cli_bad_input_is_one_line_and_exit_2(case, tmp_path):
  search = _search_dir(tmp_path / "search")
  workdir = tmp_path / "run"
  args, expected = {
      "unknown_config": (["--config=9,9,9"], "configuration '9,9,9'"),
      "no_results": ([f"--from_search={tmp_path}"], "no search results"),
      "rank_beyond": ([f"--from_search={search}", "--rank=7"], "beyond the 3"),
  }[case]
  result = _run_cli(f"--workdir={workdir}", *args, cwd=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and expected in last, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()  # Nothing written.


def _cifar_subset(root: pathlib.Path, per_class: int, test_per_class: int) -> pathlib.Path:
  """Links a small class-balanced part of the real CIFAR-10 folder as train/ and test/."""
  for name in sorted(os.listdir(CIFAR10 / "train")):
    files = sorted(os.listdir(CIFAR10 / "train" / name))
    # The test images are the last ones of each class: disjoint from the training ones.
    for split, chosen in (("train", files[:per_class]), ("test", files[-test_per_class:])):
      folder = root / split / name
      folder.mkdir(parents=True)
      for f in chosen:
        os.symlink(CIFAR10 / "train" / name / f, folder / f)
  return root


STOP_AT = 10


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
  """One real retrain (1,500 CIFAR-10 images, one epoch), stopped by SIGTERM and resumed."""
  if not (CIFAR10 / "train").is_dir():
    pytest.skip(f"the real CIFAR-10 folder is absent ({CIFAR10})")
  root = tmp_path_factory.mktemp("retrain")
  data = _cifar_subset(root / "cifar10_subset", per_class=150, test_per_class=50)
  cfg, _ = retrain.resolve({"dataset": f"folder:{data}", "config": "4,3,3", "epochs": 1,
                            "batch_size": 32, "eval_batch_size": 100, "learning_rate": 0.05,
                            "progress": False, "log_every": 1000})
  workdir = str(root / "run")

  def stop(global_step):
    if global_step == STOP_AT:
      os.kill(os.getpid(), signal.SIGTERM)  # The loop checkpoints after this step.

  interrupted = retrain.run(cfg, workdir, after_step=stop)
  seed0 = os.path.join(workdir, "seed_0")
  state = json.loads(pathlib.Path(seed0, "state.json").read_text())
  leftovers = sorted(os.listdir(workdir)), sorted(os.listdir(seed0))
  summary = retrain.run(cfg, workdir)
  return {"cfg": cfg, "workdir": workdir, "interrupted": interrupted,
          "state_at_stop": state, "leftovers": leftovers, "summary": summary}


def test_interrupted_retrain_resumes_the_same_run(resumed_run):
  assert resumed_run["interrupted"] is None
  assert resumed_run["state_at_stop"]["epoch"] == 0
  assert resumed_run["state_at_stop"]["step_in_epoch"] == STOP_AT
  top, seed0 = resumed_run["leftovers"]
  assert "summary.json" not in top and "metrics.json" not in seed0
  seed0 = os.path.join(resumed_run["workdir"], "seed_0")
  state = json.loads(pathlib.Path(seed0, "state.json").read_text())
  steps = 1500 // 32
  assert (state["epoch"], len(state["history"])) == (1, 1)
  # The trainer's step counter went through every step once: 10 before, 36 after.
  step = tf.train.load_checkpoint(os.path.join(seed0, "checkpoints", state["checkpoint"]))
  assert step.get_tensor("trainer/step/.ATTRIBUTES/VARIABLE_VALUE") == steps
  run = json.loads(pathlib.Path(seed0, "run.json").read_text())
  assert run["steps_per_epoch"] == steps and run["train_images"] == 1500


def test_one_epoch_on_real_cifar10_beats_chance(resumed_run):
  summary = resumed_run["summary"]
  # Chance is 0.1; on 500 test images its standard error is 0.013, and one epoch of
  # 1,500 images reaches 0.24-0.29 here.
  assert summary["mean_test_accuracy"] > 0.17, summary
  assert summary["test_images"] == 500 and summary["eval_split"] == "test"
  config = spaces.parse_config(SPACE, "4,3,3")
  assert summary["config"]["stages"] == [4, 3, 3]
  assert summary["macs"] == network.costs(config, 32, "maxpool", 10)["macs"]
  on_disk = json.loads(pathlib.Path(resumed_run["workdir"], "summary.json").read_text())
  assert on_disk["mean_test_accuracy"] == summary["mean_test_accuracy"]
  info = json.loads(pathlib.Path(resumed_run["workdir"], "export",
                                 "export.json").read_text())
  assert info["test_accuracy"] == summary["test_accuracy"][0]
  assert info["class_names"][0] == "airplane"


def test_exported_model_reproduces_the_reported_test_accuracy(resumed_run):
  """The export is the trained network: its accuracy on the test folder is the run's.

  (The run was interrupted and resumed, and the export restores it from the last
  checkpoint, so this also checks that checkpoints hold the whole network, moving
  statistics included.)
  """
  out = pathlib.Path(resumed_run["workdir"], "export")
  info = json.loads((out / "export.json").read_text())
  test_dir = pathlib.Path(resumed_run["cfg"].dataset.split(":", 1)[1], "test")
  images, labels = [], []
  for label, name in enumerate(info["class_names"]):
    for f in sorted((test_dir / name).iterdir()):
      images.append(tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3).numpy())
      labels.append(label)
  model = keras.models.load_model(out / "model.keras")
  predicted = model.predict(np.stack(images), batch_size=100, verbose=0).argmax(axis=1)
  accuracy = float(np.mean(predicted == np.array(labels)))
  # Same weights and images; float differences may flip a borderline image or two.
  assert len(labels) == 500
  assert abs(accuracy - resumed_run["summary"]["test_accuracy"][0]) <= 0.006, accuracy


def test_rerun_of_a_finished_retrain_changes_nothing(resumed_run):
  path = pathlib.Path(resumed_run["workdir"], "seed_0", "metrics.json")
  before = path.read_bytes()
  again = retrain.run(resumed_run["cfg"], resumed_run["workdir"])
  assert again["test_accuracy"] == resumed_run["summary"]["test_accuracy"]
  assert path.read_bytes() == before
  with pytest.raises(errors.UsageError, match="different flags"):
    retrain.run(dataclasses.replace(resumed_run["cfg"], epochs=2), resumed_run["workdir"])
  assert not math.isnan(again["mean_test_accuracy"])


def test_a_smaller_seeds_keeps_the_seeds_an_earlier_sitting_finished(tmp_path):
  cfg = standalone.StandaloneConfig(dataset="folder:/not/loaded", config="4,3,3", epochs=3)
  workdir = tmp_path / "r"
  for seed, accuracy in ((0, 0.90), (1, 0.92), (2, 0.94), (4, 0.5)):  # Seed 3 unfinished.
    (workdir / f"seed_{seed}").mkdir(parents=True)
    (workdir / f"seed_{seed}" / "metrics.json").write_text(json.dumps({
        "seed": seed, "test_accuracy": accuracy, "test_loss": 0.3, "config": {"index": 24},
        "eval_split": "test", "test_images": 100, "params": 1, "macs": 2}))
  summary = retrain.run(cfg, str(workdir), seeds=1, export="none")
  assert summary["seeds"] == [0, 1, 2]
  assert summary["mean_test_accuracy"] == pytest.approx(0.92)
