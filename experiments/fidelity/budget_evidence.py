"""What budget did the paper's mixtures train with? The numbers behind README's answer (issue 9).

At an equal budget (one run's steps shared by the K weight sets) a weight set of a K = 4
mixture is less trained than the single SuperNet of K = 1, in our code and in the
independent PyTorch oracle alike. The reference's own SuperNet estimates
(`../shared/reference/resnet20_cifar10_configs.csv`, columns M1_avg .. M8_avg, the
accuracies its final evaluation gave each configuration under its assigned set) rise with
M instead. This prints both side by side:

  1. per M of the reference: the mean, lowest and highest estimate over the 36
     configurations and its Kendall tau against `baseline_avg`;
  2. per study committed under experiments/results/fidelity (each `study.json` given), per
     run: K and the mean accuracy of its weight sets over all configurations, on the
     search-validation split; K = 1 and K = 4 of one study share split, epochs and seed.

    python experiments/fidelity/budget_evidence.py \\
        --reference=../shared/reference/resnet20_cifar10_configs.csv \\
        experiments/results/fidelity/oracle_10_epochs experiments/results/fidelity/cpu_15_epochs \\
        experiments/results/fidelity/cpu_20_epochs [--out=FILE.md]
"""

import argparse
import csv
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from mixnas_tf.analysis import rank  # pylint: disable=wrong-import-position

MIXTURES = (1, 2, 4, 8)


def reference_rows(path: str) -> list[dict]:
  """One row per M of the reference CSV: mean / min / max estimate and Kendall tau."""
  with open(path, newline="") as f:
    rows = [r for r in csv.DictReader(f) if r.get("baseline_avg")]
  truth = np.array([float(r["baseline_avg"]) for r in rows])
  out = []
  for m in MIXTURES:
    est = np.array([float(r[f"M{m}_avg"]) for r in rows])
    out.append({"M": m, "configurations": len(rows), "mean": float(est.mean()),
                "min": float(est.min()), "max": float(est.max()),
                "kendall_tau": float(rank.kendall_tau_b(est, truth))})
  return out


def study_rows(study: str) -> list[dict]:
  """One row per run of a study (its `assigned` row): K, seed, the weight sets' mean."""
  with open(os.path.join(study, "study.json")) as f:
    runs = json.load(f)["runs"]
  out = []
  for run in runs:
    if run["estimator"] != "assigned":
      continue
    out.append({"study": os.path.basename(os.path.normpath(study)), "run": run["run"],
                "K": run["K"], "seed": run["seed"],
                "set_mean": float(np.mean(run["set_means"])),
                "set_range": [min(run["set_means"]), max(run["set_means"])]})
  return out


def render(reference: list[dict], studies: list[dict]) -> str:
  lines = ["# The reference's SuperNet estimates by M (its CSV)", "",
           "| M | configurations | mean estimate | lowest | highest | Kendall tau vs baseline |",
           "|---|---|---|---|---|---|"]
  for r in reference:
    lines.append(f"| {r['M']} | {r['configurations']} | {r['mean']:.2f} | {r['min']:.2f} | "
                 f"{r['max']:.2f} | {r['kendall_tau']:.3f} |")
  lines += ["", "# Weight sets at an equal budget (our studies; `oracle_*`: the PyTorch oracle)",
            "", "Mean accuracy of each run's weight sets over every configuration, "
            "search-validation split, percent.", "",
            "| study | run | K | seed | weight sets' mean | lowest / highest set |",
            "|---|---|---|---|---|---|"]
  for r in studies:
    lines.append(f"| {r['study']} | {r['run']} | {r['K']} | {r['seed']} | "
                 f"{100 * r['set_mean']:.1f} | {100 * r['set_range'][0]:.1f} / "
                 f"{100 * r['set_range'][1]:.1f} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("studies", nargs="+", help="folders holding an analyse.py study.json")
  parser.add_argument("--reference", required=True, help="the reference's ResNet20 CSV")
  parser.add_argument("--out", default=None, help="also write the tables to this file")
  args = parser.parse_args(argv)
  for path in [args.reference] + [os.path.join(s, "study.json") for s in args.studies]:
    if not os.path.exists(path):
      print(f"error: {path} does not exist", file=sys.stderr)
      return 2
  text = render(reference_rows(args.reference),
                [row for s in args.studies for row in study_rows(s)])
  print(text, end="")
  if args.out:
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
