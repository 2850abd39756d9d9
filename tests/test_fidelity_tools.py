"""experiments/fidelity/choose_estimator.py: pooling studies to choose the default estimator."""

import json
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "fidelity"))
import choose_estimator  # noqa: E402  pylint: disable=g-import-not-at-top


def _study(path, runs):
  path.mkdir()
  rows = [{"run": run, "method": method, "seed": 0, "K": k, "estimator": est,
           "kendall_tau": tau, "regret": regret}
          for run, method, k, est, tau, regret in runs]
  (path / "study.json").write_text(json.dumps({"runs": rows}))
  return str(path)


def test_pools_the_paper_method_with_several_sets_only(tmp_path):
  a = _study(tmp_path / "a", [
      ("k1_s0", "k1", 1, "assigned", 0.9, 0.0),         # K = 1: left out.
      ("k4_s0", "k4", 4, "assigned", 0.1, 1.0),
      ("k4_s0", "k4", 4, "mean", 0.5, 0.5),
      ("k4w_s0", "k4w", 4, "mean", 0.9, 0.0)])          # Warm-up variant: left out.
  b = _study(tmp_path / "b", [
      ("oracle_k4_s0", "oracle_k4", 4, "assigned", 0.3, 2.0),
      ("oracle_k4_s0", "oracle_k4", 4, "mean", -0.1, 1.5)])
  rows, names = choose_estimator.pooled([a, b], ("k4", "oracle_k4"))
  assert names == ["a/k4_s0", "b/oracle_k4_s0"]
  # Equal mean tau: the lower mean regret first, and chosen.
  assert [r["estimator"] for r in rows] == ["mean", "assigned"]
  assert choose_estimator.choice(rows) == "mean"
  mean, assigned = rows
  assert assigned["mean_tau"] == pytest.approx(0.2) and assigned["worst_tau"] == 0.1
  assert assigned["mean_regret"] == pytest.approx(1.5) and assigned["worst_regret"] == 2.0
  assert mean["mean_tau"] == pytest.approx(0.2) and mean["worst_tau"] == -0.1
  assert mean["per_run"] == {"a/k4_s0": (0.5, 0.5), "b/oracle_k4_s0": (-0.1, 1.5)}
  # A clearly higher mean tau wins whatever its regret.
  rows[1]["mean_tau"] = 0.3
  assert choose_estimator.choice(rows) == "assigned"
  out = tmp_path / "choice.md"
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                             "choose_estimator.py"), a, b, f"--out={out}"],
                        capture_output=True, text=True, check=True)
  table = done.stdout.splitlines()
  assert table[3] == "| assigned | 2 | 0.200 | 0.100 | 1.50 | 2.00 | 0.100, 1.00 | 0.300, 2.00 |"
  assert table[-1].endswith("equal regrets, the higher tau): mean; tied in tau (mean tau, "
                            "mean regret): mean (0.200, 1.00), assigned (0.200, 1.50)")
  assert out.read_text().endswith(done.stdout)
  # --methods pools other runs: here the warm-up variant alone.
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                             "choose_estimator.py"), a, b, "--methods=k4w"],
                        capture_output=True, text=True, check=True)
  assert done.stdout.splitlines()[2] == "| mean | 1 | 0.900 | 0.900 | 0.00 | 0.00 | 0.900, 0.00 |"
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                             "choose_estimator.py"), a, "--methods=k5"],
                        capture_output=True, text=True)
  assert done.returncode == 2 and done.stderr.splitlines() == [
      "error: no K > 1 run of the methods k5 in these studies "
      "(method = a run's name without its _sN)"]


def test_a_folder_without_a_study_is_one_line(tmp_path):
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                             "choose_estimator.py"), str(tmp_path)],
                        capture_output=True, text=True)
  assert done.returncode == 2
  assert done.stderr.splitlines() == [f"error: {tmp_path} holds no study.json "
                                      "(write it with analyse.py)"]


def test_k4_is_compared_with_each_k1_of_its_own_implementation_by_seed():
  import analyse  # noqa: E402  pylint: disable=g-import-not-at-top,import-outside-toplevel
  truth = {i: float(i) for i in range(1, 11)}
  good, bad = dict(truth), {i: -v for i, v in truth.items()}
  estimates = {("k4lr", "mean", 0): good, ("k4lr", "mean", 1): good,
               ("k1", "assigned", 0): bad,  # Seed 1 of k1 is missing: one pair.
               ("k1lr", "assigned", 0): good, ("k1lr", "assigned", 1): good,
               ("oracle_k4", "mean", 0): bad, ("oracle_k1", "assigned", 0): good}
  rows = [{"method": m, "estimator": e, "seed": s, "K": 1 if "k1" in m else 4,
           "regret": 0.0 if v is good else 2.5} for (m, e, s), v in estimates.items()]
  out = {(c["method"], c["baseline"]): c
         for c in analyse.compare_with_one_set(rows, estimates, truth)}
  # Ours against ours, the oracle against the oracle; never across.
  assert sorted(out) == [("k4lr", "k1"), ("k4lr", "k1lr"), ("oracle_k4", "oracle_k1")]
  assert out[("k4lr", "k1")]["seed_list"] == [0]
  assert out[("k4lr", "k1")]["value"] == 2.0
  assert out[("k4lr", "k1")]["regret_difference"] == -2.5
  assert out[("k4lr", "k1lr")]["seed_list"] == [0, 1]
  assert out[("k4lr", "k1lr")]["value"] == 0.0
  assert out[("oracle_k4", "oracle_k1")]["value"] == -2.0


def test_seeds_averaged_cancel_noise_they_do_not_share_and_keep_what_they_share():
  import analyse  # noqa: E402  pylint: disable=g-import-not-at-top,import-outside-toplevel
  truth = {i: float(i) for i in range(1, 11)}
  # Opposite errors on two configurations in the two seeds: seed 0 swaps 4 and 5, seed 1
  # puts 4 below 3 and 5 above 6; the average is the truth. A shared error (configurations
  # 1 and 10 swapped in both seeds) stays.
  noisy_0 = {**truth, 4: 5.5, 5: 3.5}
  noisy_1 = {**truth, 4: 2.5, 5: 6.5}
  shared = {**truth, 1: 10.5, 10: 0.5}
  estimates = {("k1", "assigned", 0): noisy_0, ("k1", "assigned", 1): noisy_1,
               ("k1lr", "assigned", 0): shared, ("k1lr", "assigned", 1): dict(shared),
               ("k4lr", "mean", 0): truth}  # One seed: nothing to average.
  out = {(p["method"], p["estimator"]): p for p in analyse.pool_seeds(estimates, truth)}
  assert sorted(out) == [("k1", "assigned"), ("k1lr", "assigned")]
  # Kendall tau of 10 items with d discordant pairs of 45: 1 - 2 d / 45; d = 1 and 2.
  assert out[("k1", "assigned")]["mean_seed_tau"] == pytest.approx(1 - 3 / 45)
  assert out[("k1", "assigned")]["kendall_tau"] == pytest.approx(1.0)
  assert out[("k1", "assigned")]["seeds"] == 2
  # Configurations 1 and 10 swapped: 17 discordant pairs of 45, in each seed and averaged.
  assert out[("k1lr", "assigned")]["kendall_tau"] == pytest.approx(1 - 2 * 17 / 45)
  assert out[("k1lr", "assigned")]["mean_seed_tau"] == pytest.approx(1 - 2 * 17 / 45)


def _results(path, accuracy):
  """A results.json of `accuracy` [C, K] for configurations 1..C."""
  path.parent.mkdir(parents=True, exist_ok=True)
  configs = [{"index": i + 1, "accuracy_per_model": list(row),
              "assignment": [1.0 / len(row)] * len(row)} for i, row in enumerate(accuracy)]
  path.write_text(json.dumps({"configs": configs, "train_seconds": 60.0}))


def test_a_study_joins_work_directories_and_the_runs_earlier_sittings_kept(tmp_path):
  import analyse  # noqa: E402  pylint: disable=g-import-not-at-top,import-outside-toplevel
  runs, out = tmp_path / "runs", tmp_path / "out"
  _results(out / "k1lr_s0_results.json", [[0.5], [0.6]])       # Only an earlier copy.
  _results(out / "k4lr_s0_results.json", [[0.1, 0.1], [0.1, 0.1]])
  _results(runs / "k4lr_s0" / "results.json", [[0.3, 0.4], [0.5, 0.6]])  # Wins over it.
  _results(runs / "k1lr_s1" / "results.json", [[0.7], [0.8]])
  (runs / "k1_s2").mkdir()                                     # Unfinished: no results.json.
  _results(out / "oracle_k4_he_init_results.json", [[0.1, 0.1], [0.1, 0.1]])  # Not a run name.
  found = analyse.find_runs(str(runs), str(out))
  assert list(found) == ["k1lr_s0", "k1lr_s1", "k4lr_s0"]
  assert found["k1lr_s0"]["accuracy"].tolist() == [[0.5], [0.6]]
  assert found["k4lr_s0"]["accuracy"].tolist() == [[0.3, 0.4], [0.5, 0.6]]
  assert found["k4lr_s0"]["results_path"] == str(runs / "k4lr_s0" / "results.json")
  assert found["k1lr_s1"]["indices"] == [1, 2]
  assert analyse.find_runs(str(tmp_path / "absent"), str(out)).keys() == {"k1lr_s0", "k4lr_s0"}


def test_budget_evidence_tabulates_the_reference_by_m_and_the_studies_sets(tmp_path):
  import budget_evidence  # noqa: E402  pylint: disable=g-import-not-at-top
  csv = tmp_path / "ref.csv"
  # Three configurations; M4 ranks them as the truth does, M1 reversed.
  lines = ["architecture,baseline_avg,M1_avg,M2_avg,M4_avg,M8_avg,"]
  for i, (truth, m1) in enumerate([(90.0, 80.0), (91.0, 79.0), (92.0, 78.0)], 1):
    lines.append(f"{i},{truth},{m1},{m1},{truth - 10},{truth - 8},")
  csv.write_text("\n".join(lines) + "\n")
  rows = budget_evidence.reference_rows(str(csv))
  assert [(r["M"], r["mean"], r["min"], r["max"]) for r in rows] == [
      (1, 79.0, 78.0, 80.0), (2, 79.0, 78.0, 80.0), (4, 81.0, 80.0, 82.0),
      (8, 83.0, 82.0, 84.0)]
  assert [r["kendall_tau"] for r in rows] == pytest.approx([-1.0, -1.0, 1.0, 1.0])
  study = tmp_path / "s"
  study.mkdir()
  runs = [{"run": "k1_s0", "K": 1, "seed": 0, "estimator": "assigned", "set_means": [0.7]},
          {"run": "k4_s0", "K": 4, "seed": 0, "estimator": "mean",
           "set_means": [0.5, 0.6, 0.5, 0.6]},  # Not the assigned row: left out.
          {"run": "k4_s0", "K": 4, "seed": 0, "estimator": "assigned",
           "set_means": [0.5, 0.6, 0.5, 0.6]}]
  (study / "study.json").write_text(json.dumps({"runs": runs}))
  out = tmp_path / "evidence.md"
  done = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                             "budget_evidence.py"), str(study),
                         f"--reference={csv}", f"--out={out}"],
                        capture_output=True, text=True, check=True)
  table = done.stdout.splitlines()
  assert "| 4 | 3 | 81.00 | 80.00 | 82.00 | 1.000 |" in table
  assert table[-2:] == ["| s | k1_s0 | 1 | 0 | 70.0 | 70.0 / 70.0 |",
                        "| s | k4_s0 | 4 | 0 | 55.0 | 50.0 / 60.0 |"]
  assert out.read_text() == done.stdout
  missing = subprocess.run([sys.executable, str(ROOT / "experiments" / "fidelity" /
                                                "budget_evidence.py"), str(tmp_path / "no"),
                            f"--reference={csv}"], capture_output=True, text=True)
  assert missing.returncode == 2 and missing.stderr.splitlines() == [
      f"error: {tmp_path / 'no' / 'study.json'} does not exist"]


def test_the_oracles_assignment_follows_its_configurations_into_index_order(tmp_path):
  import analyse  # noqa: E402  pylint: disable=g-import-not-at-top,import-outside-toplevel
  # The oracle keeps p(m | c) as one matrix in the order it searched, here 5 before 1.
  path = tmp_path / "oracle_k4_s0_results.json"
  path.write_text(json.dumps({
      "configs": [{"index": 5, "accuracy_per_model": [0.5, 0.6]},
                  {"index": 1, "accuracy_per_model": [0.1, 0.2]}],
      "assignment": [[0.9, 0.1], [0.3, 0.7]], "train_seconds": 1.0}))
  run = analyse.load_results(str(path))
  assert run["indices"] == [1, 5]
  assert run["accuracy"].tolist() == [[0.1, 0.2], [0.5, 0.6]]
  assert run["probs"].tolist() == [[0.3, 0.7], [0.9, 0.1]]


def test_seed_agreement_is_the_mean_over_every_pair_of_seeds():
  import analyse  # noqa: E402  pylint: disable=g-import-not-at-top,import-outside-toplevel
  order = {0: [1, 2, 3, 4], 1: [1, 2, 3, 4], 2: [4, 3, 2, 1]}  # Seed 2 reverses the others.
  estimates = {("k1", "assigned", seed): {i + 1: float(v) for i, v in enumerate(values)}
               for seed, values in order.items()}
  estimates[("k4", "max", 0)] = {1: 1.0, 2: 2.0}  # One seed: no agreement to report.
  # Pairs (0, 1), (0, 2), (1, 2): tau 1, -1, -1.
  assert analyse.seed_agreement(estimates) == {"k1:assigned": round(-1 / 3, 3)}


def test_the_rule_compares_rounded_means_and_breaks_equal_regrets_by_tau():
  def row(name, tau, regret):
    return {"estimator": name, "mean_tau": tau, "mean_regret": regret}
  # Regrets equal in decimals but not in floats (1.12 + 1.13666667 vs 1.09 + 1.16666667):
  # the higher tau wins, not the rounding.
  a = row("a", 0.45, (1.09 + 1.16666667) / 2)
  b = row("b", 0.44, (1.12 + 1.13666667) / 2)
  assert a["mean_regret"] != b["mean_regret"]
  assert choose_estimator.choice([a, b]) == "a"
  # Exactly TIE below the best is tied (the boundary included), and its lower regret wins.
  assert choose_estimator.choice([row("a", 0.224, 1.5), row("b", 0.204, 1.0)]) == "b"
  assert choose_estimator.choice([row("a", 0.224, 1.5), row("b", 0.203, 1.0)]) == "a"
