"""Tables and plots of the fidelity study (experiments/fidelity/study.sh).

For every finished run under --runs (our searches `k1_s0`, `k4_s0`, `k4w_s0`, ... and the
PyTorch oracle's `oracle_k*_s*`), or kept in --out by the analysis of an earlier sitting
(a study may take several sittings on machines that do not keep their work directories),
and every estimator of mixnas_tf/methods/estimators.py, computes
Kendall tau, Spearman rho and regret against the truth with
`mixnas_tf.analysis.rank.compare` (the
project's one definition of these metrics), the agreement between seeds, and each weight
set's mean accuracy; writes OUT/study.md, OUT/study.json, OUT/<run>_results.json (the
runs' small result files) and OUT/*.png.

    python experiments/fidelity/analyse.py --runs=runs/fidelity \
        --truth=../shared/reference/resnet20_cifar10_configs.csv:baseline_avg \
        --out=experiments/results/fidelity
"""

import os
import re
import shutil

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from scipy import stats  # pylint: disable=wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import rank  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import sources  # pylint: disable=wrong-import-position
from mixnas_tf.methods import estimators  # pylint: disable=wrong-import-position
from mixnas_tf.methods import mixture  # pylint: disable=wrong-import-position

_RUNS = flags.DEFINE_string("runs", "runs/fidelity", "Folder of the study's work directories.")
_TRUTH = flags.DEFINE_string(
    "truth", "../shared/reference/resnet20_cifar10_configs.csv:baseline_avg",
    "The true accuracies (a rank source).")
_OUT = flags.DEFINE_string("out", "experiments/results/fidelity", "Output folder.")

SPACE = spaces.get_space("resnet20")
RUN_NAME = re.compile(r"^(oracle_)?k(\d+)(w|lr|ps|x4)?_s(\d+)$")
METHODS = {"k1": "ours, K=1", "k4": "ours, K=4 (paper)", "k4w": "ours, K=4, shared warm-up",
           "k1lr": "ours, K=1, 1 epoch LR warm-up", "k4lr": "ours, K=4, 1 epoch LR warm-up",
           "k4ps": "ours, K=4, --budget=per_set (4x the steps)",
           "k1x4": "ours, K=1, 4x the epochs (k4ps's steps)",
           "oracle_k1": "oracle, K=1", "oracle_k4": "oracle, K=4 (paper)"}


def _number(value) -> float:
  """A correlation, or NaN where `rank.compare` has none (a constant estimate): tables
  then say nan instead of failing."""
  return float("nan") if value is None else float(value)


def load_run(path: str) -> dict | None:
  """A finished run's work directory: accuracy [C, K], assignment [C, K], indices, timings."""
  results_path = os.path.join(path, "results.json")
  return load_results(results_path) if os.path.exists(results_path) else None


def load_results(results_path: str) -> dict:
  """A run's results.json (in its work directory, or the copy an earlier analysis kept)."""
  results = workdir_lib.read_json(results_path)
  order = sorted(range(len(results["configs"])), key=lambda i: results["configs"][i]["index"])
  records = [results["configs"][i] for i in order]
  accuracy = np.array([[np.nan if a is None else a for a in r["accuracy_per_model"]]
                       for r in records])
  if "assignment" in records[0]:
    probs = np.array([r["assignment"] for r in records])
  else:  # The oracle keeps the assignment as a matrix, its rows in the order of its configs.
    probs = np.array(results["assignment"])[order]
  train_s = results.get("train_seconds") or 0.0
  return {"indices": [r["index"] for r in records], "accuracy": accuracy, "probs": probs,
          "train_seconds": train_s, "eval_seconds": results.get("eval_seconds") or 0.0,
          "results_path": results_path}


def seed_agreement(estimates: dict) -> dict[str, float]:
  """Kendall tau between the estimates of two seeds of one method and estimator, the mean
  over every pair of its seeds, keyed "method:estimator" (3 decimals)."""
  pair_taus = {}
  for (method, estimator, seed), estimate in estimates.items():
    for (method2, estimator2, seed2), other in estimates.items():
      if (method2, estimator2) == (method, estimator) and seed2 > seed:
        common = sorted(set(estimate) & set(other))
        tau = stats.kendalltau([estimate[i] for i in common], [other[i] for i in common])
        if np.isfinite(tau.statistic):
          pair_taus.setdefault(f"{method}:{estimator}", []).append(float(tau.statistic))
  return {key: round(float(np.mean(taus)), 3) for key, taus in pair_taus.items()}


def find_runs(runs_dir: str, out_dir: str) -> dict[str, dict]:
  """Every finished run of the study, by name: the work directories under `runs_dir`, and
  the runs of earlier sittings that only `out_dir` still holds (the `<run>_results.json`
  copies an earlier analysis committed; work directories do not outlive a machine). A work
  directory wins over its copy."""
  runs = {}
  if os.path.isdir(out_dir):
    for file in sorted(os.listdir(out_dir)):
      name = file.removesuffix("_results.json")
      if file.endswith("_results.json") and RUN_NAME.match(name):
        runs[name] = load_results(os.path.join(out_dir, file))
  if os.path.isdir(runs_dir):
    for name in sorted(os.listdir(runs_dir)):
      if RUN_NAME.match(name) and (run := load_run(os.path.join(runs_dir, name))):
        runs[name] = run
  return dict(sorted(runs.items()))


def main(argv):
  del argv
  truth = sources.read(_TRUTH.value).values
  runs = find_runs(_RUNS.value, _OUT.value)
  if not runs:
    raise SystemExit(f"error: no finished run in {_RUNS.value} or {_OUT.value}")
  os.makedirs(_OUT.value, exist_ok=True)
  rows, estimates = [], {}
  for name, run in runs.items():
    method, seed = name.rsplit("_s", 1)
    copy = os.path.join(_OUT.value, f"{name}_results.json")
    if os.path.abspath(run["results_path"]) != os.path.abspath(copy):
      shutil.copyfile(run["results_path"], copy)
    for flags_name in ("flags.json", "args.json"):
      src = os.path.join(_RUNS.value, name, flags_name)
      if os.path.exists(src):
        shutil.copyfile(src, os.path.join(_OUT.value, f"{name}_{flags_name}"))
    k = run["accuracy"].shape[1]
    for estimator in estimators.ESTIMATORS:
      if k == 1 and estimator != "assigned":
        continue
      values = estimators.estimate(estimator, run["accuracy"], run["probs"])
      estimate = {i: 100 * v for i, v in zip(run["indices"], values)}
      estimates[(method, estimator, int(seed))] = estimate
      result = rank.compare(truth, estimate, SPACE)
      rows.append({"run": name, "method": method, "seed": int(seed), "K": k,
                   "estimator": estimator, "kendall_tau": _number(result["kendall_tau"]),
                   "spearman": _number(result["spearman"]), "regret": result["regret"],
                   "chosen": result["chosen"]["stages"],
                   "chosen_true_rank": result["chosen"]["true_rank"],
                   "set_means": [round(float(v), 4) for v in np.mean(run["accuracy"], 0)],
                   "estimate_range": [round(min(estimate.values()), 2),
                                      round(max(estimate.values()), 2)],
                   "train_minutes": round(run["train_seconds"] / 60, 1),
                   "eval_minutes": round(run["eval_seconds"] / 60, 1)})
  agreement = seed_agreement(estimates)
  # Mean over seeds per (method, estimator).
  summary = {}
  for row in rows:
    key = (row["method"], row["estimator"])
    summary.setdefault(key, []).append(row)
  table = []
  for (method, estimator), group in sorted(summary.items()):
    table.append({"method": method, "estimator": estimator, "seeds": len(group),
                  "kendall_tau": float(np.mean([r["kendall_tau"] for r in group])),
                  "spearman": float(np.mean([r["spearman"] for r in group])),
                  "regret": float(np.mean([r["regret"] for r in group])),
                  "seed_agreement": agreement.get(f"{method}:{estimator}")})
  comparisons = compare_with_one_set(rows, estimates, truth)
  pooled = pool_seeds(estimates, truth)
  special = {name: {**mixture.specialisation(run["accuracy"], run["probs"]),
                    "true_mean_per_set": true_mean_per_set(run, truth)}
             for name, run in runs.items()
             if run["accuracy"].shape[1] > 1 and not np.isnan(run["accuracy"]).any()}
  workdir_lib.atomic_write_json(os.path.join(_OUT.value, "study.json"),
                                {"truth": _TRUTH.value, "runs": rows, "summary": table,
                                 "seed_agreement": agreement, "comparisons": comparisons,
                                 "pooled_over_seeds": pooled,
                                 "specialisation": special})
  lines = ["# Fidelity study: per run", "",
           "| run | estimator | Kendall tau | Spearman | regret | chosen (true rank) | "
           "set means | train / eval min |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['run']} | {r['estimator']} | {r['kendall_tau']:.3f} | "
                 f"{r['spearman']:.3f} | {r['regret']:.2f} | {r['chosen']} "
                 f"({r['chosen_true_rank']}) | {', '.join(f'{v:.3f}' for v in r['set_means'])}"
                 f" | {r['train_minutes']} / {r['eval_minutes']} |")
  lines += ["", "# Mean over seeds", "",
            "| method | estimator | seeds | Kendall tau | Spearman | regret | "
            "tau between seeds |", "|---|---|---|---|---|---|---|"]
  for t in table:
    agree = "" if t["seed_agreement"] is None else f"{t['seed_agreement']:.3f}"
    lines.append(f"| {METHODS.get(t['method'], t['method'])} | {t['estimator']} | "
                 f"{t['seeds']} | {t['kendall_tau']:.3f} | {t['spearman']:.3f} | "
                 f"{t['regret']:.2f} | {agree} |")
  if pooled:
    lines += ["", "# Estimates averaged over seeds", "",
              "Each configuration's estimate averaged over a method's seeds (so the seeds' "
              "compute together), ranked like one run's, beside the mean of the seeds' own "
              "taus. If a ranking's errors were seed noise, the average would rank better; "
              "errors the seeds share remain.", "",
              "| method | estimator | seeds | tau of the average | mean of the seeds' taus | "
              "regret of the average |", "|---|---|---|---|---|---|"]
    for p in pooled:
      lines.append(f"| {METHODS.get(p['method'], p['method'])} | {p['estimator']} | "
                   f"{p['seeds']} | {p['kendall_tau']:.3f} | {p['mean_seed_tau']:.3f} | "
                   f"{p['regret']:.2f} |")
  if special:
    lines += ["", "# Did the weight sets specialise?", "",
              "A configuration's accuracy under its own (assigned) set minus its mean under "
              "the others, in points, mean over configurations with its standard error; the "
              "same with each set's mean advantage removed; the share of configurations "
              "whose own set is their best (1/K by chance); mean max p(m | c); and the "
              "true accuracy of the configurations assigned to each set (mean, %). `centered` "
              "and `weighted` subtract each set's mean accuracy over all configurations "
              "(the set means of the first table); where the sets' configurations differ "
              "in true accuracy, compare the two.", "",
              "| run | own - others (SE) | set advantage removed | own set is best | "
              "max p(m given c) | configurations per set | their true accuracy |",
              "|---|---|---|---|---|---|---|"]
    for name, sp in special.items():
      lines.append(f"| {name} | {100 * sp['own_minus_others']:+.2f} "
                   f"({100 * sp['own_minus_others_se']:.2f}) | "
                   f"{100 * sp['set_advantage_removed']:+.2f} | {sp['own_is_best']:.2f} | "
                   f"{sp['hardness']:.2f} | {', '.join(map(str, sp['configs_per_set']))} | "
                   f"{', '.join('-' if v is None else f'{v:.2f}' for v in sp['true_mean_per_set'])} |")
  if comparisons:
    lines += ["", "# K > 1 against K = 1, paired by seed", "",
              "Differences of the means over the seeds both methods have (K > 1 minus K = 1):"
              " Kendall tau with its 90% paired-bootstrap interval over the configurations,"
              " and regret (points; negative: K > 1 chose better).", "",
              "| K > 1 | estimator | K = 1 | seeds | tau difference | 90% interval | "
              "share of draws > 0 | regret difference |", "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
      lines.append(f"| {c['method']} | {c['estimator']} | {c['baseline']} | {c['seeds']} | "
                   f"{c['value']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}] | "
                   f"{c['share_above_zero']:.2f} | {c['regret_difference']:+.2f} |")
  workdir_lib.atomic_write_text(os.path.join(_OUT.value, "study.md"), "\n".join(lines) + "\n")
  plot_estimates(runs, truth, os.path.join(_OUT.value, "estimated_vs_true.png"))
  plot_set_means(runs, os.path.join(_OUT.value, "set_means.png"))
  print("\n".join(lines))


def true_mean_per_set(run, truth) -> list[float | None]:
  """The mean true accuracy of the configurations assigned to each weight set (None for a
  set with none)."""
  assigned = mixture.assigned_models(run["probs"])
  true = np.array([truth[i] for i in run["indices"]])
  return [float(np.mean(true[assigned == m])) if np.any(assigned == m) else None
          for m in range(run["probs"].shape[1])]


def pool_seeds(estimates, truth) -> list[dict]:
  """Per (method, estimator) with 2 or more seeds: the ranking of the configurations'
  estimates averaged over the seeds (over the configurations every seed estimated)."""
  groups = {}
  for (method, estimator, seed), estimate in estimates.items():
    groups.setdefault((method, estimator), {})[seed] = estimate
  out = []
  for (method, estimator), by_seed in sorted(groups.items()):
    if len(by_seed) < 2:
      continue
    common = sorted(set.intersection(*(set(e) for e in by_seed.values())))
    average = {i: float(np.mean([e[i] for e in by_seed.values()])) for i in common}
    result = rank.compare(truth, average, SPACE)
    out.append({"method": method, "estimator": estimator, "seeds": len(by_seed),
                "kendall_tau": _number(result["kendall_tau"]), "regret": result["regret"],
                "mean_seed_tau": float(np.mean([
                    _number(rank.compare(truth, e, SPACE)["kendall_tau"])
                    for e in by_seed.values()]))})
  return out


def compare_with_one_set(rows, estimates, truth) -> list[dict]:
  """Every K > 1 method and estimator against every K = 1 method of the same
  implementation (ours, or the oracle's), over the seeds both have:
  rank.bootstrap_tau and the difference of the mean regrets."""
  regret = {(r["method"], r["estimator"], r["seed"]): r["regret"] for r in rows}
  k_of = {r["method"]: r["K"] for r in rows}
  oracle = lambda method: method.startswith("oracle_")
  out = []
  for method in sorted(m for m in k_of if k_of[m] > 1):
    for baseline in sorted(m for m in k_of if k_of[m] == 1 and oracle(m) == oracle(method)):
      for estimator in estimators.ESTIMATORS:
        seeds = sorted(s for (m, e, s) in estimates if m == method and e == estimator
                       and (baseline, "assigned", s) in estimates)
        if not seeds:
          continue
        result = rank.bootstrap_tau(
            truth, [estimates[(method, estimator, s)] for s in seeds],
            [estimates[(baseline, "assigned", s)] for s in seeds])
        out.append({"method": method, "estimator": estimator, "baseline": baseline,
                    **result, "seed_list": seeds,
                    "regret_difference": float(np.mean(
                        [regret[(method, estimator, s)] - regret[(baseline, "assigned", s)]
                         for s in seeds]))})
  return out


def plot_estimates(runs, truth, path):
  """Estimated (assigned: the paper's; mean; centered: the default for K > 1 at
  --budget=total; max) against true accuracy, one panel per run (4 a row)."""
  names = list(runs)
  cols = min(len(names), 4)
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 4.0 * rows), squeeze=False)
  for ax in axes.flat[len(names):]:
    ax.set_visible(False)
  colors = {"assigned": "tab:blue", "mean": "tab:orange", "centered": "tab:green",
            "max": "tab:red"}
  for ax, name in zip(axes.flat, names):
    run = runs[name]
    true = [truth[i] for i in run["indices"]]
    taus = []
    for estimator, color in colors.items():
      if run["accuracy"].shape[1] == 1 and estimator != "assigned":
        continue
      values = 100 * estimators.estimate(estimator, run["accuracy"], run["probs"])
      taus.append(f"{estimator} {stats.kendalltau(true, values).statistic:.2f}")
      ax.scatter(true, values, s=12, color=color, alpha=0.8, label=estimator)
    lines = [", ".join(taus[i:i + 2]) for i in range(0, len(taus), 2)]  # Two a line.
    ax.set_title(f"{name}, Kendall tau:\n" + "\n".join(lines), fontsize=9)
    ax.set_xlabel("stand-alone accuracy (reference, %)", fontsize=9)
    ax.set_ylabel("SuperNet estimate (%)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
  # One colour key for all panels, outside the data (right of the first row).
  handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=e)
             for e, c in colors.items()]
  axes[0][cols - 1].legend(handles=handles, title="estimator", loc="upper left",
                           bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0, fontsize=8,
                           title_fontsize=9)
  fig.tight_layout()
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)


def plot_set_means(runs, path):
  """Each weight set's mean accuracy over the configurations, per run."""
  names = list(runs)
  k = max(runs[name]["accuracy"].shape[1] for name in names)
  colors = plt.get_cmap("tab10" if k <= 10 else "tab20").colors
  fig, ax = plt.subplots(figsize=(2.0 + 0.6 * len(names), 4.0))
  for x, name in enumerate(names):
    means = 100 * np.mean(runs[name]["accuracy"], axis=0)
    for m, mean in enumerate(means):  # Side by side, so sets of equal accuracy stay visible.
      ax.scatter([x + 0.12 * (m - (len(means) - 1) / 2)], [mean], s=30, color=colors[m],
                 zorder=3)
  ax.set_xticks(range(len(names)), names, rotation=45, fontsize=9, ha="right")
  ax.set_xlim(-0.6, len(names) - 0.4)
  ax.tick_params(axis="y", labelsize=9)
  ax.set_ylabel("weight set's mean accuracy (%)", fontsize=9)
  ax.grid(axis="y", alpha=0.3)
  ax.set_title("weight-set quality per run", fontsize=10)
  handles = [plt.Line2D([], [], marker="o", linestyle="", color=colors[m], label=f"m{m}")
             for m in range(k)]
  ax.legend(handles=handles, title="weight set", loc="upper left", bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0, fontsize=8, title_fontsize=9)
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)

if __name__ == "__main__":
  app.run(main)
