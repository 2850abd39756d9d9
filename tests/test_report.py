"""Tests for mixnas_tf.report: it renders from a tiny search, with and without the truth."""

import json
import os
import shutil
import subprocess
import sys

from conftest import make_image_folder
import pytest

from mixnas_tf import errors
from mixnas_tf.analysis import report
from mixnas_tf.analysis import report_figures
from mixnas_tf.methods import search


@pytest.fixture(name="search_dir", scope="module")
def fixture_search_dir(tmp_path_factory):
  folder = make_image_folder(tmp_path_factory.mktemp("folder"), per_class=16, size=16)
  workdir = str(tmp_path_factory.mktemp("search") / "k2")
  search.run_search(search.SearchConfig(
      dataset=f"folder:{folder}", configs="1;24;36", num_models=2, epochs=2, batch_size=8,
      eval_batch_size=8, progress=False, log_every=1, jit_compile=False), workdir)
  return workdir


def test_pareto_front():
  points = {1: (10.0, 50.0), 2: (20.0, 60.0), 3: (30.0, 55.0), 4: (40.0, 70.0),
            5: (10.0, 40.0)}
  assert report_figures.pareto_front(points) == [1, 2, 4]


def test_report_with_ground_truth_and_tuner(search_dir, tmp_path):
  # A second search beside the first: same files under another name (side by side).
  other = str(tmp_path / "k2_copy")
  shutil.copytree(search_dir, other)
  truth = tmp_path / "table.csv"
  truth.write_text("architecture,stages,baseline_avg,baseline_stdev,seeds,macs,params\n"
                   '1,"[1,1,8]",60.0,,1,1000000,10\n24,"[4,3,3]",70.0,,1,2000000,10\n'
                   '36,"[8,1,1]",65.0,,1,3000000,10\n')
  tune_dir = tmp_path / "tune"
  tune_dir.mkdir()
  (tune_dir / "tune_results.json").write_text(json.dumps({
      "tuner": "random", "budget_epochs": 2, "epochs_used": 2, "trials": [
          {"trial_id": "0", "status": "COMPLETED", "config": 24, "stages": [4, 3, 3],
           "accuracy": 0.5, "epochs": 1},
          {"trial_id": "1", "status": "COMPLETED", "config": 1, "stages": [1, 1, 8],
           "accuracy": 0.4, "epochs": 1}]}))
  out = str(tmp_path / "out")
  path = report.build_report([search_dir, other], out, ground_truth=str(truth),
                             tuner_dirs=[str(tune_dir)])
  text = open(path).read()
  for heading in ("## Searches", "## KerasTuner runs", "## Ranking against the ground truth",
                  "## Accuracy against multiply-accumulates",
                  "## Assignment p(weight set | configuration)",
                  "## Score matrix and weight-set shares over the epochs",
                  "## Training curves"):
    assert heading in text
  assert "| k2 | 2 | 2 | 3 |" in text and "| k2_copy | 2 | 2 | 3 |" in text
  # The tuner ranks 24 over 1: chosen = the truly best, regret 0, 2 compared (no top-3).
  assert ("| KerasTuner tune | 2 | 1.000 | 1.000 | 1.00 | n/a | 24 [4,3,3] (70.00 %, 1/3) | "
          "0.00 |") in text
  assert "| ground truth | 1 [1,1,8] (1.0, 60.00), 24 [4,3,3] (2.0, 70.00) |" in text
  images = [i for line in text.splitlines() for i in
            [part.split(")")[0] for part in line.split("](")[1:]]]
  assert len(images) == 2 + 2 * 3 + 1  # 2 shared plots, 3 per search, training curves.
  for image in images:
    assert os.path.getsize(os.path.join(out, image)) > 1000, image


def test_report_without_ground_truth_and_errors(search_dir, tmp_path):
  out = str(tmp_path / "out")
  text = open(report.build_report([search_dir], out)).read()
  assert "## Estimated accuracy per configuration" in text
  assert "Ranking against" not in text
  assert os.path.getsize(os.path.join(out, "0_k2_estimated.png")) > 1000
  with pytest.raises(errors.UsageError, match="holds no finished search"):
    report.build_report([str(tmp_path)], out)
  result = subprocess.run([sys.executable, "-m", "mixnas_tf.report", f"--search={tmp_path}",
                           f"--out={out}"], capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path} holds no finished search")


def test_report_reads_the_searches_space_and_a_partial_final_evaluation(search_dir, tmp_path):
  partial = tmp_path / "partial"
  shutil.copytree(search_dir, partial)
  results = json.loads((partial / "results.json").read_text())
  assert results["space"] == "resnet20"
  results["configs"][-1]["estimated_accuracy"] = None  # Left out (--final_eval=top:2).
  (partial / "results.json").write_text(json.dumps(results))
  text = open(report.build_report([str(partial)], str(tmp_path / "out"))).read()
  assert "## Estimated accuracy per configuration" in text
  with pytest.raises(errors.UsageError, match="--space=resnet18, but the searches are of "
                     "resnet20; leave --space out"):
    report.build_report([str(partial)], str(tmp_path / "out2"), space_name="resnet18")
  other = tmp_path / "other"
  shutil.copytree(search_dir, other)
  results["space"] = "resnet18"
  (other / "results.json").write_text(json.dumps(results))
  with pytest.raises(errors.UsageError, match="different spaces .resnet18, resnet20."):
    report.build_report([str(partial), str(other)], str(tmp_path / "out3"))
