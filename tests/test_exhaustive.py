"""Tests for mixnas_tf.exhaustive: resume at the right configuration, shards and merge."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

from conftest import make_image_folder
import pytest

from mixnas_tf import errors
from mixnas_tf.analysis import sources
from mixnas_tf.baselines import exhaustive
from mixnas_tf.methods import standalone

CONFIGS = "1;24;36"  # Reference numbers, in this (reference) order.
STEPS = 4  # 36 training images (48 less a 0.25 holdout) at batch 8.


@pytest.fixture(name="cfg", scope="module")
def fixture_cfg(tmp_path_factory):
  root = make_image_folder(tmp_path_factory.mktemp("folder"), classes=("a", "b"),
                           per_class=24, size=8)
  return standalone.StandaloneConfig(
      dataset=f"folder:{root}", epochs=1, batch_size=8, eval_batch_size=8,
      eval_split="holdout", holdout_fraction=0.25, jit_compile=False, progress=False,
      log_every=1)


@pytest.fixture(name="finished", scope="module")
def fixture_finished(cfg, tmp_path_factory):
  """An exhaustive run of CONFIGS stopped by SIGTERM in its second configuration, then
  resumed: (workdir, global steps seen by the resumed run, config 1's metrics mtime)."""
  workdir = str(tmp_path_factory.mktemp("exhaustive"))
  calls = []

  def stop_in_second_config(step):
    calls.append(step)
    if len(calls) == STEPS + 2:  # Step 2 of the second configuration.
      os.kill(os.getpid(), signal.SIGTERM)

  assert exhaustive.run_exhaustive(cfg, workdir, configs=CONFIGS,
                                   after_step=stop_in_second_config) is None
  rows = exhaustive.read_table(os.path.join(workdir, "table.csv"))
  assert [r["architecture"] for r in rows] == ["1"]
  assert not os.path.exists(exhaustive.run_dir(workdir, 24, 0) + "/metrics.json")
  assert not os.path.exists(exhaustive.run_dir(workdir, 36, 0))
  first_metrics = exhaustive.run_dir(workdir, 1, 0) + "/metrics.json"
  mtime = os.path.getmtime(first_metrics)
  resumed = []
  rows = exhaustive.run_exhaustive(cfg, workdir, configs=CONFIGS, after_step=resumed.append)
  return workdir, rows, resumed, mtime


def test_resumes_at_the_unfinished_configuration(finished):
  workdir, rows, resumed, mtime = finished
  # Config 1 was not trained again; config 24 went on from its checkpoint (global step
  # 3 of 4), then config 36 ran from its first step.
  assert resumed == [3, 4] + list(range(1, STEPS + 1))
  assert os.path.getmtime(exhaustive.run_dir(workdir, 1, 0) + "/metrics.json") == mtime
  assert [r["architecture"] for r in rows] == ["1", "24", "36"]
  table = exhaustive.read_table(os.path.join(workdir, "table.csv"))
  assert table == rows
  assert [r["stages"] for r in table] == ["[1,1,8]", "[4,3,3]", "[8,1,1]"]
  assert all(r["seeds"] == "1" and r["baseline_stdev"] == "" for r in table)
  assert 0.0 <= float(table[0]["baseline_avg"]) <= 100.0
  # The table is what rank reads (percent, keyed by reference number).
  assert sorted(sources.read(os.path.join(workdir, "table.csv")).values) == [1, 24, 36]


def test_resume_refuses_other_settings(cfg, finished):
  workdir = finished[0]
  with pytest.raises(errors.UsageError, match="different flags: --epochs=1"):
    exhaustive.run_exhaustive(dataclasses.replace(cfg, epochs=2), workdir, configs=CONFIGS)


def test_shards_and_merge_without_loss_or_duplication(cfg, finished, tmp_path):
  source = finished[0]
  workdir = str(tmp_path / "sharded")
  assert exhaustive.shard_configs([1, 24, 36], (0, 2)) == [1, 36]
  assert exhaustive.shard_configs([1, 24, 36], (1, 2)) == [24]
  for shard, numbers in (((0, 2), (1, 36)), ((1, 2), (24,))):
    directory = exhaustive.shard_dir(workdir, shard)
    # Finished runs copied in: the shard builds its table without training.
    for number in numbers:
      shutil.copytree(exhaustive.run_dir(source, number, 0),
                      exhaustive.run_dir(directory, number, 0))
    rows = exhaustive.run_exhaustive(cfg, workdir, configs=CONFIGS, shard=shard,
                                     after_step=lambda step: pytest.fail("trained"))
    assert [int(r["architecture"]) for r in rows] == list(numbers)
  out = os.path.join(workdir, "table.csv")  # Merged into DIR: merging again reads shards.
  report = exhaustive.merge([workdir], out)
  assert report["missing"] == [] and report["rows"] == 3
  assert exhaustive.merge([workdir], out)["tables"] == report["tables"]
  assert len(report["tables"]) == 2
  assert report["identical_duplicates"] == []
  assert exhaustive.read_table(out) == exhaustive.read_table(source + "/table.csv")
  # The same shard twice: identical rows are kept once.
  shard0 = exhaustive.shard_dir(workdir, (0, 2))
  assert exhaustive.merge([workdir, shard0], out)["identical_duplicates"] == [1, 36]
  # Shard 0 alone: 24 is reported missing.
  assert exhaustive.merge([shard0], out)["missing"] == [24]


def test_merge_refuses_conflicts(tmp_path):
  row = {"architecture": "5", "stages": "[1,5,4]", "baseline_avg": "60.0000",
         "baseline_stdev": "", "seeds": "1", "macs": "10", "params": "20"}
  a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
  exhaustive.write_table(a, [row])
  exhaustive.write_table(b, [{**row, "baseline_avg": "61.0000"}])
  with pytest.raises(errors.UsageError,
                     match=r"configuration 5 \[1,5,4\] is in .* different values "
                           r"\(baseline_avg 60.0000 vs 61.0000\)"):
    exhaustive.merge([a, b], str(tmp_path / "out.csv"))
  # Tables without flags.json: the whole space is expected.
  report = exhaustive.merge([a], str(tmp_path / "out.csv"))
  assert len(report["missing"]) == 35 and "whole resnet20" in report["expected_from"]
  for directory, epochs in (("s0", 1), ("s1", 2)):
    os.makedirs(tmp_path / directory)
    exhaustive.write_table(str(tmp_path / directory / "table.csv"), [])
    (tmp_path / directory / "flags.json").write_text(
        f'{{"epochs": {epochs}, "shard": "{directory[1]}/2", "configs": [5]}}')
  with pytest.raises(errors.UsageError, match="different settings .*epochs: 1 vs 2"):
    exhaustive.merge([str(tmp_path / "s0"), str(tmp_path / "s1")], str(tmp_path / "o.csv"))


@pytest.mark.parametrize("text", ["2/2", "0/0", "1", "a/b", "-1/2"])
def test_bad_shard_is_a_usage_error(text):
  with pytest.raises(errors.UsageError, match="--shard"):
    exhaustive.parse_shard(text)


def test_merge_command_line(finished, tmp_path):
  out = tmp_path / "merged.csv"
  result = subprocess.run(
      [sys.executable, "-m", "mixnas_tf.exhaustive", "merge", f"--out={out}", finished[0]],
      capture_output=True, text=True, check=True)
  assert "merged 3 configurations from 1 tables" in result.stdout
  assert "missing" not in result.stderr
  bad = subprocess.run([sys.executable, "-m", "mixnas_tf.exhaustive", "--workdir",
                        str(tmp_path / "w"), "--shard=3/2"], capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1].startswith("error: --shard=3/2: I must be in")


def test_augmentation_in_the_step_is_the_same_training(cfg, tmp_path):
  # Stand-alone training (retrain, exhaustive, tuner, widths) with the crop + flip in the
  # XLA-compiled step trains on the pipeline's very batches.
  metrics = {}
  for in_step in (False, True):
    run = dataclasses.replace(cfg, jit_compile=True, augment_in_step=in_step, epochs=2)
    metrics[in_step] = standalone.train_standalone(run, str(tmp_path / str(in_step)))
  for key in ("test_accuracy", "train_accuracy_last_epoch"):
    assert metrics[True][key] == pytest.approx(metrics[False][key], abs=1e-6), key
  assert metrics[True]["test_loss"] == pytest.approx(metrics[False]["test_loss"], rel=1e-5)


def test_the_baselines_accept_spaces_whose_default_is_not_resnet20s(cfg, tmp_path):
  # `config` is not a flag of exhaustive or tune and keeps "4,3,3", which ResNet18 and
  # ResNet50 do not parse; their settings are validated without it. The missing folder is
  # then the first thing either command meets.
  from mixnas_tf.baselines import tune  # pylint: disable=g-import-not-at-top
  for space, configs in (("resnet18", "3,2,2,2"), ("resnet50", "3,4,6,3")):
    other = dataclasses.replace(cfg, space=space, dataset="folder:/nonexistent/x")
    with pytest.raises(errors.UsageError, match="/nonexistent/x does not exist"):
      exhaustive.run_exhaustive(other, str(tmp_path / space / "e"), configs=configs)
    with pytest.raises(errors.UsageError, match="/nonexistent/x does not exist"):
      tune.run_tune(other, str(tmp_path / space / "t"), tuner="grid", budget_epochs=2,
                    epochs_per_trial=1, configs=f"{configs};{configs[::-1]}", summary=False)


def test_merge_expects_the_numbers_of_a_space_numbered_from_zero(tmp_path):
  row = {"architecture": "0", "stages": "[1,1,1,6]", "baseline_avg": "60.0000",
         "baseline_stdev": "", "seeds": "1", "macs": "10", "params": "20"}
  table = str(tmp_path / "a.csv")
  exhaustive.write_table(table, [row])
  report = exhaustive.merge([table], str(tmp_path / "out.csv"), space_name="resnet18")
  assert report["missing"] == list(range(1, 56))
