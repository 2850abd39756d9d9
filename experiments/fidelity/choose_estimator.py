"""Pools fidelity studies to choose the default estimator of a K > 1 search (issue 9).

Reads the `study.json` that `analyse.py` wrote for each study, keeps the runs of the paper's
method with several weight sets (ours `k4` and the PyTorch oracle's `oracle_k4`; the
shared-warm-up variant is listed apart) and prints, per estimator, Kendall tau and regret
against the stand-alone accuracies: mean, worst and per run. The rule it applies (fixed
before the 15-epoch oracle run was in): the highest mean tau; among the estimators within
TIE of it, the lowest mean regret.

    python experiments/fidelity/choose_estimator.py \
        experiments/results/fidelity/oracle_10_epochs experiments/results/fidelity/cpu_15_epochs \
        [--out=experiments/results/fidelity/estimator_choice.md]
"""

import argparse
import collections
import json
import os
import sys

PAPER_METHODS = ("k4", "oracle_k4")
# Mean taus closer than this are a tie (one seed moves a tau by more).
TIE = 0.02


def pooled(studies: list[str]) -> tuple[list[dict], list[str]]:
  """(one row per estimator, sorted by mean tau; the run names pooled)."""
  by_estimator = collections.defaultdict(list)
  names = []
  for study in studies:
    with open(os.path.join(study, "study.json")) as f:
      runs = json.load(f)["runs"]
    for run in runs:
      if run["method"] not in PAPER_METHODS or run["K"] < 2:
        continue
      name = f"{os.path.basename(os.path.normpath(study))}/{run['run']}"
      by_estimator[run["estimator"]].append((name, run["kendall_tau"], run["regret"]))
      if name not in names:
        names.append(name)
  rows = []
  for estimator, values in by_estimator.items():
    taus = [v[1] for v in values]
    regrets = [v[2] for v in values]
    rows.append({"estimator": estimator, "runs": len(values),
                 "mean_tau": sum(taus) / len(taus), "worst_tau": min(taus),
                 "mean_regret": sum(regrets) / len(regrets), "worst_regret": max(regrets),
                 "per_run": {v[0]: (round(v[1], 3), round(v[2], 2)) for v in values}})
  rows.sort(key=lambda r: (-r["mean_tau"], r["mean_regret"]))
  return rows, names


def choice(rows: list[dict]) -> str:
  """The highest mean tau; within TIE of it, the lowest mean regret."""
  best = max(r["mean_tau"] for r in rows)
  return min((r for r in rows if r["mean_tau"] >= best - TIE),
             key=lambda r: r["mean_regret"])["estimator"]


def markdown(rows: list[dict], names: list[str]) -> str:
  lines = ["| estimator | runs | mean tau | worst tau | mean regret | worst regret | "
           + " | ".join(f"{n} (tau, regret)" for n in names) + " |",
           "|---" * (6 + len(names)) + "|"]
  for r in rows:
    cells = [f"{r['per_run'][n][0]:.3f}, {r['per_run'][n][1]:.2f}" if n in r["per_run"]
             else "" for n in names]
    lines.append(f"| {r['estimator']} | {r['runs']} | {r['mean_tau']:.3f} | "
                 f"{r['worst_tau']:.3f} | {r['mean_regret']:.2f} | {r['worst_regret']:.2f} | "
                 + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("studies", nargs="+", help="directories holding a study.json")
  parser.add_argument("--out", help="also write the table to this markdown file")
  args = parser.parse_args()
  for study in args.studies:
    if not os.path.isfile(os.path.join(study, "study.json")):
      print(f"error: {study} holds no study.json (write it with analyse.py)", file=sys.stderr)
      return 2
  rows, names = pooled(args.studies)
  if not rows:
    print("error: no K > 1 run of the paper's method in these studies", file=sys.stderr)
    return 2
  text = markdown(rows, names) + (f"\nchoice (highest mean tau; within {TIE} of it, the "
                                   f"lowest mean regret): {choice(rows)}\n")
  print(text, end="")
  if args.out:
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      f.write("# Estimators pooled over the K = 4 searches of the paper's method\n\n"
              "    python experiments/fidelity/choose_estimator.py "
              + " ".join(args.studies) + f" --out={args.out}\n\n" + text)
    os.replace(tmp, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
