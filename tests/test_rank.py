"""Tests for mixnas_tf.rank: readers, metrics (pinned on the reference CSV), command line."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf.analysis import rank
from mixnas_tf.analysis import sources

# The shared folder sits beside the repository: /work/main -> /work/shared.
REFERENCE = (Path(__file__).resolve().parents[1].parent / "shared" / "reference" /
             "resnet20_cifar10_configs.csv")


@pytest.fixture(name="reference")
def fixture_reference():
  if not REFERENCE.exists():
    pytest.skip(f"reference table {REFERENCE} is absent (the shared folder is not beside "
                "the repository); the hand-made cases still run")
  return str(REFERENCE)


# ALGORITHM.md: "Rank correlations computed from that file (scipy): Kendall tau M1 0.143,
# M2 0.312, M4 0.597, M8 0.530; Spearman M1 0.233, M4 0.757."
@pytest.mark.parametrize("column,kendall,spearman", [
    ("M1_avg", 0.143, 0.233), ("M2_avg", 0.312, None), ("M4_avg", 0.597, 0.757),
    ("M8_avg", 0.530, None)])
def test_reference_rank_correlations(reference, column, kendall, spearman):
  truth = sources.read(f"{reference}:baseline_avg")
  result = rank.compare_sources(truth, sources.read(f"{reference}:{column}"))
  assert result["num_compared"] == 36
  assert round(result["kendall_tau"], 3) == kendall
  if spearman is not None:
    assert round(result["spearman"], 3) == spearman
  # ALGORITHM.md: best stand-alone is 34 [7,1,2] at 92.01.
  assert result["best"]["index"] == 34 and result["best"]["stages"] == "[7,1,2]"
  assert result["best"]["true_accuracy"] == pytest.approx(92.01, abs=0.005)
  assert result["regret"] == pytest.approx(
      92.01 - result["chosen"]["true_accuracy"], abs=0.005)


def test_reference_default_column_is_baseline(reference):
  source = sources.read(reference)
  assert source.column == "baseline_avg" and len(source.values) == 36
  assert source.values[1] == pytest.approx(87.44666667)


def test_hand_made_metrics():
  truth = {1: 90.0, 2: 80.0, 3: 70.0, 4: 60.0, 5: 50.0}
  # One swap of the two best: one discordant pair of 10.
  estimate = {1: 0.8, 2: 0.9, 3: 0.7, 4: 0.6, 5: 0.5, 6: 0.99}
  result = rank.compare(truth, estimate)
  assert result["num_compared"] == 5
  assert result["estimate_only"] == [6] and result["truth_only"] == []
  assert result["kendall_tau"] == pytest.approx(0.8)  # (9 - 1) / 10
  assert result["spearman"] == pytest.approx(1 - 6 * 2 / (5 * 24))  # d = (1, 1, 0, 0, 0)
  assert result["top_k_overlap"] == {"1": 0.0, "3": 1.0, "5": 1.0}
  assert result["chosen"]["index"] == 2 and result["chosen"]["true_rank"] == 2
  assert result["regret"] == pytest.approx(10.0)
  # An estimate of a subset (a tuner's sample) is charged against the best of the truth.
  subset = rank.compare(truth, {3: 0.9, 4: 0.2, 5: 0.1})
  assert subset["num_compared"] == 3 and subset["truth_only"] == [1, 2]
  assert subset["chosen"]["index"] == 3 and subset["chosen"]["true_rank"] == 3
  assert subset["regret"] == pytest.approx(20.0)
  assert subset["regret_among_compared"] == 0.0
  perfect = rank.compare(truth, truth)
  assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["regret"] == 0.0
  # A perfect ranking stays perfect whichever configurations are drawn.
  assert perfect["kendall_tau_interval"] == [1.0, 1.0]
  low, high = result["kendall_tau_interval"]
  assert -1.0 <= low <= result["kendall_tau"] <= high == 1.0
  assert "90% interval resampling the configurations:" in rank.format_comparison(
      {**result, "estimate": "e"})


def test_batched_kendall_tau_b_is_scipys_with_ties():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 4, (6, 12)).astype(float)  # Many ties.
  y = rng.normal(size=(6, 12))
  y[0] = 1.0  # Constant: undefined.
  taus = rank.kendall_tau_b(x, y)
  assert np.isnan(taus[0])
  np.testing.assert_allclose(taus[1:], [stats.kendalltau(a, b).statistic
                                        for a, b in zip(x[1:], y[1:])], atol=1e-12)
  # 5 items, one swapped pair: (9 - 1) / 10.
  assert rank.kendall_tau_b([1, 2, 3, 4, 5], [2, 1, 3, 4, 5]) == pytest.approx(0.8)


def test_paired_bootstrap_of_a_tau_difference():
  truth = {i: float(i) for i in range(1, 21)}
  reverse = {i: -v for i, v in truth.items()}
  # A perfect ranker against its mirror: tau 1 - (-1) = 2 in every draw with two or more
  # distinct configurations.
  out = rank.bootstrap_tau(truth, [truth, truth], [reverse, reverse], samples=300)
  assert out["value"] == 2.0 and out["low"] == 2.0 and out["high"] == 2.0
  assert out["share_above_zero"] == 1.0 and out["num_compared"] == 20 and out["seeds"] == 2
  # A method against itself: exactly 0 in every draw, none above zero.
  rng = np.random.default_rng(1)
  noisy = [{i: v + 8 * rng.normal() for i, v in truth.items()} for _ in range(2)]
  same = rank.bootstrap_tau(truth, noisy, noisy, samples=300)
  assert (same["value"], same["low"], same["high"], same["share_above_zero"]) == (
      0.0, 0.0, 0.0, 0.0)
  # The observed difference is the mean over seeds of scipy's taus; the interval holds it.
  other = [{i: v + 3 * rng.normal() for i, v in truth.items()} for _ in range(2)]
  out = rank.bootstrap_tau(truth, other, noisy, samples=500, seed=3)
  t = list(truth.values())
  expected = np.mean([stats.kendalltau(t, list(o.values())).statistic
                      - stats.kendalltau(t, list(n.values())).statistic
                      for o, n in zip(other, noisy)])
  assert out["value"] == pytest.approx(expected)
  assert out["low"] < out["value"] < out["high"]
  # Only the configurations every source has are compared.
  partial = rank.bootstrap_tau(truth, [{1: 1.0, 2: 2.0, 3: 3.0, 99: 0.0}],
                                          [{1: 3.0, 2: 2.0, 3: 1.0}], samples=50)
  assert partial["num_compared"] == 3 and partial["value"] == 2.0
  with pytest.raises(errors.UsageError, match="paired by seed; received 2 and 1"):
    rank.bootstrap_tau(truth, noisy, noisy[:1])
  with pytest.raises(errors.UsageError, match="only 2 configuration"):
    rank.bootstrap_tau(truth, [{1: 1.0, 2: 2.0}], [{1: 1.0, 2: 2.0}])


def test_constant_estimate_has_no_correlation_and_too_few_configs_fail():
  result = rank.compare({1: 1.0, 2: 2.0, 3: 3.0}, {1: 0.5, 2: 0.5, 3: 0.5})
  assert result["kendall_tau"] is None and result["spearman"] is None
  assert result["chosen"]["index"] == 1  # Ties go to the lower reference number.
  with pytest.raises(errors.UsageError, match="only 1 configuration"):
    rank.compare({1: 1.0, 2: 2.0}, {2: 1.0, 3: 1.0})


def _write(path, text):
  path.write_text(text)
  return str(path)


def test_readers_convert_our_fractions_to_percent(tmp_path):
  results = {"configs": [{"index": 24, "stages": [4, 3, 3], "estimated_accuracy": 0.5,
                          "macs": 10},
                         {"index": 1, "stages": [1, 1, 8], "estimated_accuracy": 0.25,
                          "macs": 5}],
             "ranking": [24, 1]}
  search_dir = tmp_path / "search"
  search_dir.mkdir()
  _write(search_dir / "results.json", json.dumps(results))
  assert sources.read(str(search_dir)).values == {24: 50.0, 1: 25.0}
  assert sources.read(f"{search_dir}/results.json:macs").values == {24: 10.0, 1: 5.0}
  ranking = _write(tmp_path / "ranking.csv",
                   "rank,index,stages,code,model,estimated_accuracy,macs\n"
                   "1,24,\"[4,3,3]\",\"0,0,0,0,1,0,0,1,0,0\",0,0.500000,10\n")
  assert sources.read(ranking).values == {24: 50.0}
  table = _write(tmp_path / "table.csv",
                 "architecture,stages,baseline_avg,baseline_stdev,seeds,macs,params\n"
                 "24,\"[4,3,3]\",61.5,0.0,1,10,20\n5,\"[1,5,4]\",60.0,0.0,1,10,20\n")
  assert sources.read(table).values == {24: 61.5, 5: 60.0}
  by_stages = _write(tmp_path / "stages.csv", "stages,acc\n\"[4,3,3]\",1\n\"[7,1,2]\",2\n")
  assert sources.read(f"{by_stages}:acc").values == {24: 1.0, 34: 2.0}
  tune = {"trials": [
      {"config": 5, "accuracy": 0.4, "epochs": 1, "status": "COMPLETED"},
      {"config": 5, "accuracy": 0.3, "epochs": 3, "status": "COMPLETED"},  # Longer wins.
      {"config": 7, "accuracy": 0.6, "epochs": 1, "status": "COMPLETED"},
      {"config": 8, "accuracy": None, "epochs": 1, "status": "RUNNING"}]}
  tune_file = _write(tmp_path / "tune_results.json", json.dumps(tune))
  assert sources.read(tune_file).values == pytest.approx({5: 30.0, 7: 60.0})


def test_search_results_are_re_estimated_by_estimator_name(tmp_path):
  records = [{"index": 24, "stages": [4, 3, 3], "estimated_accuracy": 0.5,
              "accuracy_per_model": [0.5, 0.7], "assignment": [0.9, 0.1]},
             {"index": 1, "stages": [1, 1, 8], "estimated_accuracy": 0.6,
              "accuracy_per_model": [0.4, 0.6], "assignment": [0.2, 0.8]}]
  path = _write(tmp_path / "results.json", json.dumps({"configs": records,
                                                       "ranking": [1, 24]}))
  assert sources.read(f"{path}:assigned").values == pytest.approx({24: 50.0, 1: 60.0})
  assert sources.read(f"{path}:mean").values == pytest.approx({24: 60.0, 1: 50.0})
  assert sources.read(f"{path}:max").values == pytest.approx({24: 70.0, 1: 60.0})
  records[0]["accuracy_per_model"][1] = None  # Evaluated under its assigned set only.
  _write(tmp_path / "results.json", json.dumps({"configs": records, "ranking": [1, 24]}))
  with pytest.raises(errors.UsageError, match="final_eval=all_pairs"):
    sources.read(f"{path}:mean")


def test_reader_errors_are_one_line(tmp_path):
  table = _write(tmp_path / "t.csv", "architecture,a\n1,2\n")
  with pytest.raises(errors.UsageError, match="name the column"):
    sources.read(table)
  with pytest.raises(errors.UsageError, match="no column 'b'; columns: architecture, a"):
    sources.read(f"{table}:b")
  with pytest.raises(errors.UsageError, match="does not exist"):
    sources.read(str(tmp_path / "missing.csv:a"))
  bad = _write(tmp_path / "bad.csv", "architecture,a\n99,1\n")
  with pytest.raises(errors.UsageError, match="outside the resnet20 space's 1..36"):
    sources.read(f"{bad}:a")


def test_command_line_json_and_error(tmp_path):
  truth = _write(tmp_path / "truth.csv", "architecture,baseline_avg,est\n"
                 "1,90,0.1\n2,80,0.3\n3,70,0.2\n")
  out = subprocess.run([sys.executable, "-m", "mixnas_tf.rank", f"--truth={truth}",
                        f"--estimate={truth}:est", "--json"],
                       capture_output=True, text=True, check=True)
  result = json.loads(out.stdout)["comparisons"][0]
  assert result["num_compared"] == 3 and result["chosen"]["index"] == 2
  assert result["regret"] == pytest.approx(10.0)
  out = subprocess.run([sys.executable, "-m", "mixnas_tf.rank", f"--truth={truth}"],
                       capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      "error: --truth and --estimate are required (FILE or FILE:COLUMN)"]


RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def test_results_of_earlier_versions_still_read():
  """results.json and table.csv written by mixnas_tf 0.1 (committed under
  experiments/results) read with every estimator and rank against the truth."""
  old = str(RESULTS / "study_cifar10" / "search_k4_results.json")
  truth = sources.read(str(RESULTS / "study_cifar10" / "truth_table.csv"))
  assert len(truth.values) == 12
  for estimator in ("estimated_accuracy", "assigned", "max", "mean", "centered"):
    values = sources.read(f"{old}:{estimator}").values
    assert len(values) == 12 and all(0 < v < 100 for v in values.values())
    assert rank.compare(truth.values, values)["num_compared"] == 12
  assert sources.read(f"{old}:assigned").values == pytest.approx(sources.read(old).values)


def test_a_space_numbered_from_zero_reads_its_first_configuration_and_refuses_past_its_last(
    tmp_path):
  resnet18 = spaces.get_space("resnet18")  # Numbered 0..55, as the reference does.
  table = _write(tmp_path / "t.csv", "architecture,a\n0,50\n55,60\n")
  assert sources.read(f"{table}:a", resnet18).values == pytest.approx({0: 50.0, 55: 60.0})
  past = _write(tmp_path / "past.csv", "architecture,a\n56,50\n")
  with pytest.raises(errors.UsageError, match="outside the resnet18 space's 0..55"):
    sources.read(f"{past}:a", resnet18)


def test_an_estimator_reads_only_the_configurations_the_final_evaluation_covered(tmp_path):
  records = [{"index": 24, "stages": [4, 3, 3], "estimated_accuracy": 0.5,
              "accuracy_per_model": [0.5, None], "assignment": [0.9, 0.1]},
             {"index": 1, "stages": [1, 1, 8], "estimated_accuracy": None,  # Left out.
              "accuracy_per_model": [None, None], "assignment": [0.2, 0.8]},
             {"index": 2, "stages": [1, 2, 7], "estimated_accuracy": 0.4,
              "accuracy_per_model": [None, 0.4], "assignment": [0.3, 0.7]}]
  path = _write(tmp_path / "results.json", json.dumps({"configs": records,
                                                       "ranking": [24, 2]}))
  for estimator in ("assigned", "max"):
    assert sources.read(f"{path}:{estimator}").values == pytest.approx({24: 50.0, 2: 40.0})
