"""Pools fidelity studies to choose the default estimator of a K > 1 search (issue 9).

Reads the `study.json` that `analyse.py` wrote for each study, keeps the runs with several
weight sets of the methods named by --methods (by default the paper's: ours `k4` and the
PyTorch oracle's `oracle_k4`; `k4lr` is K=4 with one epoch of learning-rate warm-up) and
prints, per estimator, Kendall tau and regret against the stand-alone accuracies: mean,
worst and per run. The rule it applies (fixed before the 15-epoch oracle run was in): the
highest mean tau; among the estimators within TIE of it, the lowest mean regret. Means are
compared rounded (ROUND decimals), so sums in another order cannot decide; where regrets are
then equal, the higher mean tau wins (a tie-break the rule did not state: it decided the
rule's first outcome, `mean` over `centered`, and is printed since 2026-12-07).

    python experiments/fidelity/choose_estimator.py \
        experiments/results/fidelity/oracle_10_epochs experiments/results/fidelity/cpu_15_epochs \
        [--methods=k4,oracle_k4] [--out=experiments/results/fidelity/estimator_choice.md]
"""

import argparse
import collections
import json
import os
import sys

PAPER_METHODS = "k4,oracle_k4"
# Mean taus closer than this are a tie (one seed moves a tau by more).
TIE = 0.02
# Decimals of the means the rule compares: regrets are differences of 8-decimal percents.
ROUND = 6


def pooled(studies: list[str], methods: tuple[str, ...]) -> tuple[list[dict], list[str]]:
  """(one row per estimator, sorted by mean tau; the run names pooled)."""
  by_estimator = collections.defaultdict(list)
  names = []
  for study in studies:
    with open(os.path.join(study, "study.json")) as f:
      runs = json.load(f)["runs"]
    for run in runs:
      if run["method"] not in methods or run["K"] < 2:
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


def tied(rows: list[dict]) -> list[dict]:
  """The rows whose mean tau is within TIE of the highest (the boundary included)."""
  best = round(max(r["mean_tau"] for r in rows), ROUND)
  return [r for r in rows if round(r["mean_tau"], ROUND) >= round(best - TIE, ROUND)]


def choice(rows: list[dict]) -> str:
  """The highest mean tau; within TIE of it, the lowest mean regret; equal regrets (at
  ROUND decimals), the higher mean tau."""
  return min(tied(rows), key=lambda r: (round(r["mean_regret"], ROUND),
                                        -r["mean_tau"]))["estimator"]


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
  parser.add_argument("--methods", default=PAPER_METHODS,
                      help="comma-separated run methods to pool (default: %(default)s)")
  parser.add_argument("--out", help="also write the table to this markdown file")
  args = parser.parse_args()
  for study in args.studies:
    if not os.path.isfile(os.path.join(study, "study.json")):
      print(f"error: {study} holds no study.json (write it with analyse.py)", file=sys.stderr)
      return 2
  methods = tuple(m for m in args.methods.split(",") if m)
  rows, names = pooled(args.studies, methods)
  if not rows:
    print(f"error: no K > 1 run of the methods {','.join(methods)} in these studies "
          "(method = a run's name without its _sN)", file=sys.stderr)
    return 2
  candidates = ", ".join(f"{r['estimator']} ({r['mean_tau']:.3f}, {r['mean_regret']:.2f})"
                         for r in tied(rows))
  text = markdown(rows, names) + (f"\nchoice (highest mean tau; within {TIE} of it, the "
                                   f"lowest mean regret; equal regrets, the higher tau): "
                                   f"{choice(rows)}; tied in tau (mean tau, mean regret): "
                                   f"{candidates}\n")
  print(text, end="")
  if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
    print(f"error: --out {args.out}: its directory does not exist", file=sys.stderr)
    return 2
  if args.out:
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      f.write(f"# Estimators pooled over the K > 1 searches of {', '.join(methods)}\n\n"
              "    python experiments/fidelity/choose_estimator.py "
              + " ".join(args.studies) + f" --methods={args.methods} --out={args.out}\n\n"
              + text)
    os.replace(tmp, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
