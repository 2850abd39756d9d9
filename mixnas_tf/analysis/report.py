r"""A Markdown report with PNG plots of one or several searches, against the truth.

  python -m mixnas_tf.report --search=DIR[,DIR2,...] [--ground_truth=TABLE[:COLUMN]] \
      [--tuner=DIR[,DIR2,...]] --out=OUT

Writes OUT/report.md and its PNGs:
  - a summary of each search (K, epochs, chosen configuration, time) and KerasTuner run;
  - with --ground_truth: the rank metrics of every search and tuner (mixnas_tf.rank) and
    estimated vs true accuracy per configuration, each point labelled [a,b,c];
  - accuracy against multiply-accumulates, the Pareto front (the configurations no other
    beats at lower or equal cost) marked: the view a user picks a network from;
  - per search: the assignment matrix p(weight set | configuration), the score matrix W
    at a few epochs, the weight sets' shares, the temperature and the assignment of every
    configuration over the epochs (from state.json's history);
  - training curves of all searches.
Several searches (K = 1, 2, 4, 8, ...) are laid out side by side.
"""

import dataclasses
import os
import re

# plots imports matplotlib with the Agg backend first.
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-order
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-order
import numpy as np

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.analysis import rank
from mixnas_tf.methods import mixture

TRAINING_CURVES = ("train/loss", "train/accuracy", "train/val_batch_accuracy")
# Score-matrix snapshots per search (first epoch, last epoch and evenly in between).
SNAPSHOTS = 4


@dataclasses.dataclass
class Search:
  """A finished search's files.

  Attributes:
    name: its label in the report.
    path: its work directory.
    results: results.json.
    flags: flags.json.
    searched: reference numbers of the searched configurations, in the row order of the
      score and assignment matrices.
    history: state.json's per-epoch records ([] if absent).
  """
  name: str
  path: str
  results: dict
  flags: dict
  searched: list[int]
  history: list[dict]

  @property
  def estimate(self) -> dict[int, float]:
    """Estimated accuracy in percent per reference number."""
    return {r["index"]: 100.0 * r["estimated_accuracy"] for r in self.results["configs"]}


def load_search(path: str, name: str | None = None) -> Search:
  """Reads a search work directory.

  Raises:
    errors.UsageError: the directory holds no finished search.
  """
  path = os.path.abspath(os.path.expanduser(path))
  results_path = os.path.join(path, "results.json")
  if not os.path.isfile(results_path):
    raise errors.UsageError(f"{path} holds no finished search (no results.json); give the "
                            "work directory of a finished `python -m mixnas_tf.train` run")
  results = workdir_lib.read_json(results_path)
  flags_json = _read_optional(os.path.join(path, "flags.json"), {})
  space_json = _read_optional(os.path.join(path, "search_space.json"), {})
  state = _read_optional(os.path.join(path, "state.json"), {})
  searched = space_json.get("searched") or [r["index"] for r in results["configs"]]
  return Search(name=name or os.path.basename(path.rstrip("/")), path=path, results=results,
                flags=flags_json, searched=[int(i) for i in searched],
                history=state.get("history", []))


def _read_optional(path: str, default):
  return workdir_lib.read_json(path) if os.path.exists(path) else default


def _label(space: spaces.SearchSpace, index: int) -> str:
  return spaces.format_stages(spaces.to_stages(space, spaces.from_index(space, index)))


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_") or "run"


def _unique_names(paths: list[str]) -> list[str]:
  """Base names, with the parent folder added where two would be equal."""
  names = [os.path.basename(os.path.abspath(p).rstrip("/")) for p in paths]
  return [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), n)
          if names.count(n) > 1 else n for p, n in zip(paths, names)]


def pareto_front(points: dict[int, tuple[float, float]]) -> list[int]:
  """Reference numbers on the front of {index: (macs, accuracy)}, cheapest first.

  A configuration is on the front when every cheaper-or-equal one is less accurate.
  """
  front, best = [], -np.inf
  for index, (macs, accuracy) in sorted(points.items(), key=lambda kv: (kv[1][0],
                                                                        -kv[1][1], kv[0])):
    if accuracy > best:
      front.append(index)
      best = accuracy
  return front


# ----------------------------------------------------------------------------
# Plots (matplotlib's Agg backend, set by plots.py; atomic writes).


def _save(fig, path: str) -> str:
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)
  return os.path.basename(path)


def _panels(count: int, width: float = 4.2, height: float = 3.6):
  cols = min(count, 4)
  rows = -(-count // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
  for ax in axes.flat[count:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:count])


def plot_estimate_vs_truth(space, truth: dict[int, float], estimates: list[tuple[str, dict]],
                           metrics: list[dict], path: str) -> str:
  """One panel per estimate: estimated vs true accuracy, every point labelled [a,b,c]."""
  fig, axes = _panels(len(estimates))
  best = max(truth, key=lambda i: (truth[i], -i))
  for ax, (name, estimate), result in zip(axes, estimates, metrics):
    common = sorted(set(truth) & set(estimate))
    x = [truth[i] for i in common]
    y = [estimate[i] for i in common]
    ax.scatter(x, y, s=14, color="tab:blue")
    for i, xi, yi in zip(common, x, y):
      ax.annotate(_label(space, i), (xi, yi), fontsize=5, xytext=(2, 2),
                  textcoords="offset points")
    chosen = result["chosen"]["index"]
    ax.scatter([truth[chosen]], [estimate[chosen]], s=60, facecolors="none",
               edgecolors="tab:orange", linewidths=1.5, label=f"chosen {_label(space, chosen)}")
    if best in estimate:
      ax.scatter([truth[best]], [estimate[best]], s=60, marker="s", facecolors="none",
                 edgecolors="tab:green", linewidths=1.5,
                 label=f"truly best {_label(space, best)}")
    tau = result["kendall_tau"]
    ax.set_title(f"{name}\nKendall tau {'n/a' if tau is None else f'{tau:.3f}'}, "
                 f"regret {result['regret']:.2f}", fontsize=8)
    ax.set_xlabel("true accuracy (%)")
    ax.set_ylabel("estimated accuracy (%)")
    ax.legend(fontsize=6, loc="lower right")
  fig.tight_layout()
  return _save(fig, path)


def plot_accuracy_vs_macs(space, sources: list[tuple[str, dict]], macs: dict[int, int],
                          path: str) -> str:
  """One panel per source: accuracy against MACs, the Pareto front joined and labelled."""
  fig, axes = _panels(len(sources))
  for ax, (name, values) in zip(axes, sources):
    points = {i: (macs[i] / 1e6, v) for i, v in values.items() if i in macs}
    front = pareto_front(points)
    ax.scatter([p[0] for p in points.values()], [p[1] for p in points.values()], s=12,
               color="tab:gray", label="configurations")
    fx = [points[i][0] for i in front]
    fy = [points[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", linewidth=1)
    ax.scatter(fx, fy, s=20, color="tab:red", label="Pareto front", zorder=3)
    for i in front:
      ax.annotate(_label(space, i), points[i], fontsize=6, xytext=(2, -8),
                  textcoords="offset points")
    ax.set_xlabel("multiply-accumulates per image (millions)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(name, fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
  fig.tight_layout()
  return _save(fig, path)


def plot_evolution(space, search: Search, path: str) -> str | None:
  """Weight-set shares and temperature, and each configuration's assigned set, per epoch."""
  history = [h for h in search.history if "search/scores" in h]
  if not history:
    return None
  k = search.results["num_models"]
  epochs = [h["epoch"] + 1 for h in history]
  fig, (ax_share, ax_assign) = plt.subplots(
      1, 2, figsize=(10, max(3.2, 0.16 * len(search.searched) + 1.2)))
  for m in range(k):
    ax_share.plot(epochs, [h.get(f"search/share_model_{m}", np.nan) for h in history],
                  marker=".", label=f"m{m}")
  ax_share.set_xlabel("epoch")
  ax_share.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax_share.set_ylabel("share of configurations (balanced)")
  ax_share.set_ylim(0, 1.05)
  ax_share.legend(fontsize=6, loc="upper left", ncol=min(k, 4))
  twin = ax_share.twinx()
  twin.plot(epochs, [h.get("search/temperature", np.nan) for h in history], color="black",
            linestyle="--", linewidth=1)
  twin.set_ylabel("temperature (dashed)")
  ax_share.set_title(f"{search.name}: weight-set shares", fontsize=8)
  # The assignment each epoch ends with: the epoch's scores at its temperature, balanced.
  assigned = np.array([mixture.assigned_models(mixture.assignment_probs(
      np.asarray(h["search/scores"], np.float64), h["search/temperature"],
      mixture.epoch_balance(np.asarray(h["search/scores"], np.float64),
                            h["search/temperature"])))
                       for h in history]).T  # [C, epochs]
  cmap = plt.get_cmap("tab10", max(k, 2))
  ax_assign.imshow(assigned, aspect="auto", cmap=cmap, vmin=-0.5, vmax=max(k, 2) - 0.5,
                   interpolation="nearest",
                   extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(search.searched) - 0.5,
                           -0.5))
  ax_assign.set_yticks(range(len(search.searched)),
                       [_label(space, i) for i in search.searched], fontsize=5)
  ax_assign.set_xlabel("epoch")
  ax_assign.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax_assign.set_title("assigned weight set per configuration (colour = m)", fontsize=8)
  fig.tight_layout()
  return _save(fig, path)


def plot_score_snapshots(space, search: Search, path: str) -> str | None:
  """The score matrix W [C, K] at up to SNAPSHOTS epochs, side by side."""
  history = [h for h in search.history if "search/scores" in h]
  if not history:
    return None
  picks = sorted({round(x) for x in np.linspace(0, len(history) - 1,
                                                min(SNAPSHOTS, len(history)))})
  scores = [np.asarray(history[p]["search/scores"]) for p in picks]
  low = min(float(s.min()) for s in scores)
  high = max(float(s.max()) for s in scores)
  k = scores[0].shape[1]
  fig, axes = plt.subplots(1, len(picks), figsize=(
      1.6 + (0.5 * k + 0.8) * len(picks), max(3.0, 0.16 * len(search.searched) + 1.2)),
                           squeeze=False)
  for ax, p, s in zip(axes[0], picks, scores):
    image = ax.imshow(s, aspect="auto", cmap="magma", vmin=low, vmax=high)
    ax.set_xticks(range(k), [f"m{m}" for m in range(k)], fontsize=6)
    ax.set_title(f"epoch {history[p]['epoch'] + 1}", fontsize=8)
    ax.set_yticks(range(len(search.searched)),
                  [_label(space, i) for i in search.searched] if p == picks[0] else [],
                  fontsize=5)
  fig.colorbar(image, ax=list(axes[0]), fraction=0.04)
  fig.suptitle(f"{search.name}: score matrix W (EMA of validation-batch accuracy)",
               fontsize=8)
  return _save(fig, path)


def plot_training_curves(searches: list[Search], path: str) -> str | None:
  """Per-epoch training metrics of every search, one line per search."""
  if not any(s.history for s in searches):
    return None
  fig, axes = plt.subplots(1, len(TRAINING_CURVES), figsize=(4.2 * len(TRAINING_CURVES), 3.4))
  for ax, metric in zip(axes, TRAINING_CURVES):
    for search in searches:
      points = [(h["epoch"] + 1, h[metric]) for h in search.history if metric in h]
      if points:
        ax.plot(*zip(*points), marker=".", label=search.name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_title(metric, fontsize=8)
  axes[0].legend(fontsize=6)
  fig.tight_layout()
  return _save(fig, path)


# ----------------------------------------------------------------------------
# The report.


def _fmt(value, spec=".3f") -> str:
  return "n/a" if value is None else format(value, spec)


def _minutes(seconds) -> str:
  return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def _image_row(names: list[str], images: list[str | None]) -> list[str]:
  """A Markdown table laying images side by side, one column per run."""
  return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names),
          "| " + " | ".join(f"![{n}]({i})" if i else "(no history)"
                           for n, i in zip(names, images)) + " |", ""]


def _macs_by_index(searches: list[Search], truth_macs: dict | None) -> dict[int, int]:
  """MACs per reference number: the truth table's column, else the searches' records."""
  macs = {}
  for search in searches:
    macs.update({r["index"]: int(r["macs"]) for r in search.results["configs"]})
  macs.update({i: int(v) for i, v in (truth_macs or {}).items()})
  return macs


def build_report(search_dirs: list[str], out: str, ground_truth: str | None = None,
                 tuner_dirs: list[str] = (), space_name: str = "resnet20",
                 command: str | None = None) -> str:
  """Writes OUT/report.md and its plots; returns the report's path.

  Args:
    search_dirs: search work directories (each with results.json).
    out: output directory.
    ground_truth: FILE[:COLUMN] of true accuracies (mixnas_tf.rank sources).
    tuner_dirs: mixnas_tf.tune work directories.
    space_name: the search space of the reference numbers.
    command: the command line, quoted in the report.

  Raises:
    errors.UsageError: a directory without results, or an unreadable ground truth.
  """
  if not search_dirs:
    raise errors.UsageError("--search needs at least one search work directory")
  space = spaces.get_space(space_name)
  searches = [load_search(p, n) for p, n in zip(search_dirs, _unique_names(search_dirs))]
  tuners = []  # (name, accuracies, tune_results.json or None for a bare KerasTuner project)
  for p, n in zip(tuner_dirs, _unique_names(list(tuner_dirs))):
    source = rank.read(p, space)
    if source.kind != "tuner":
      raise errors.UsageError(f"--tuner={p} is not a KerasTuner run (mixnas_tf.tune)")
    data = workdir_lib.read_json(source.path) if source.path.endswith(".json") else None
    tuners.append((n, source, data))
  truth = rank.read(ground_truth, space) if ground_truth else None
  truth_macs = None
  if truth is not None and truth.kind == "csv":
    try:
      truth_macs = rank.read(f"{truth.path}:macs", space).values
    except errors.UsageError:
      truth_macs = None  # The reference CSV has no MACs: the searches' records give them.
  os.makedirs(out, exist_ok=True)
  estimates = ([(s.name, s.estimate) for s in searches] +
               [(f"KerasTuner {n}", t.values) for n, t, _ in tuners])
  lines = ["# Search report", ""]
  if command:
    lines += ["Generated by:", "", "    " + command, ""]

  lines += ["## Searches", "",
            "| search | K | epochs | configurations | search-train / val images | chosen "
            "(estimated accuracy) | train | compile | final eval |",
            "|---|---|---|---|---|---|---|---|---|"]
  for s in searches:
    best = s.results["best"]
    split = _read_optional(os.path.join(s.path, "search_space.json"), {}).get("split", {})
    lines.append(
        f"| {s.name} | {s.results['num_models']} | {s.flags.get('epochs', 'n/a')} | "
        f"{len(s.searched)} | {split.get('search_train', 'n/a')} / "
        f"{split.get('search_val', 'n/a')} | {best['index']} "
        f"{spaces.format_stages(best['stages'])} ({100 * best['estimated_accuracy']:.2f} %) | "
        f"{_minutes(s.results.get('train_seconds'))} | "
        f"{_minutes(s.results.get('compile_seconds'))} | "
        f"{_minutes(s.results.get('eval_seconds'))} |")
  lines.append("")
  if tuners:
    lines += ["## KerasTuner runs", "",
              "| run | tuner | trials completed | epochs used / budget | best (held-out "
              "accuracy) |", "|---|---|---|---|---|"]
    for name, source, data in tuners:
      best_index = max(source.values, key=lambda i: (source.values[i], -i))
      trials = len(data["trials"]) if data else "n/a"
      used = f"{data['epochs_used']} / {data['budget_epochs']}" if data else "n/a"
      tuner = data["tuner"] if data else "n/a"
      lines.append(f"| {name} | {tuner} | {trials} | {used} | {best_index} "
                   f"{_label(space, best_index)} ({source.values[best_index]:.2f} %) |")
    lines.append("")

  if truth is not None:
    metrics = [rank.compare(truth.values, e, space) for _, e in estimates]
    ks = sorted({k for m in metrics for k in m["top_k_overlap"]}, key=int)
    lines += ["## Ranking against the ground truth", "",
              f"Ground truth: `{truth.source}` ({len(truth.values)} configurations, column "
              f"`{truth.column}`, percent). Metrics over the configurations present in both "
              "(mixnas_tf.rank); regret = true accuracy of the truly best (of all "
              f"{len(truth.values)}) minus true accuracy of the chosen configuration "
              "(points).", "",
              "| estimate | compared | Kendall tau | Spearman | " +
              " | ".join(f"top-{k}" for k in ks) + " | chosen (true accuracy, true rank) | "
              "regret |", "|---|---|---|---|" + "---|" * len(ks) + "---|---|"]
    for (name, _), m in zip(estimates, metrics):
      c = m["chosen"]
      lines.append(
          f"| {name} | {m['num_compared']} | {_fmt(m['kendall_tau'])} | "
          f"{_fmt(m['spearman'])} | " +
          " | ".join(_fmt(m["top_k_overlap"].get(k), ".2f") for k in ks) +
          f" | {c['index']} {c['stages']} ({c['true_accuracy']:.2f} %, "
          f"{c['true_rank']}/{m['num_truth']}) | {m['regret']:.2f} |")
    best = metrics[0]["best"]
    lines += ["", f"Truly best: {best['index']} {best['stages']} "
              f"({best['true_accuracy']:.2f} %).", "",
              "### Estimated vs true accuracy", "",
              "![estimated vs true](" + plot_estimate_vs_truth(
                  space, truth.values, estimates, metrics,
                  os.path.join(out, "estimate_vs_truth.png")) + ")", ""]
  else:
    lines += ["## Estimated accuracy per configuration", ""]
    images = []
    for i, s in enumerate(searches):
      path = os.path.join(out, f"{i}_{_slug(s.name)}_estimated.png")
      plots.estimated_accuracy(s.results["configs"], path, title=f"{s.name}: estimated")
      images.append(os.path.basename(path))
    lines += _image_row([s.name for s in searches], images)

  macs = _macs_by_index(searches, truth_macs)
  sources = ([("ground truth", truth.values)] if truth is not None else []) + estimates
  lines += ["## Accuracy against multiply-accumulates", "",
            "Each panel's Pareto front (red): the configurations that no cheaper-or-equal "
            "configuration beats. MACs per image, forward pass.", "",
            "![accuracy vs MACs](" + plot_accuracy_vs_macs(
                space, sources, macs, os.path.join(out, "accuracy_vs_macs.png")) + ")", "",
            "| source | Pareto front, cheapest first: configuration (MMACs, accuracy %) |",
            "|---|---|"]
  for name, values in sources:
    points = {i: (macs[i] / 1e6, v) for i, v in values.items() if i in macs}
    lines.append(f"| {name} | " + ", ".join(
        f"{i} {_label(space, i)} ({points[i][0]:.1f}, {points[i][1]:.2f})"
        for i in pareto_front(points)) + " |")
  lines.append("")

  names = [s.name for s in searches]
  lines += ["## Assignment p(weight set | configuration)", ""]
  images = []
  for i, s in enumerate(searches):
    path = os.path.join(out, f"{i}_{_slug(s.name)}_assignment.png")
    plots.assignment_matrix(s.results["assignment"], [_label(space, c) for c in s.searched],
                            path, title=f"{s.name}: p(weight set | configuration)")
    images.append(os.path.basename(path))
  lines += _image_row(names, images)
  lines += ["## Score matrix and weight-set shares over the epochs", "",
            "Left: each weight set's share of the configurations under the balanced "
            "assignment, and the temperature; right: the weight set each configuration is "
            "assigned to at the end of each epoch. Below: the score matrix W at a few "
            "epochs.", ""]
  lines += _image_row(names, [plot_evolution(
      space, s, os.path.join(out, f"{i}_{_slug(s.name)}_evolution.png"))
                              for i, s in enumerate(searches)])
  lines += _image_row(names, [plot_score_snapshots(
      space, s, os.path.join(out, f"{i}_{_slug(s.name)}_scores.png"))
                              for i, s in enumerate(searches)])
  curves = plot_training_curves(searches, os.path.join(out, "training_curves.png"))
  lines += ["## Training curves", "",
            "Per-epoch means of the search's training loss and accuracy (on the sampled "
            "configurations) and of the validation-batch accuracy that updates W.", "",
            f"![training curves]({curves})" if curves else "(no history)", ""]
  path = os.path.join(out, "report.md")
  workdir_lib.atomic_write_text(path, "\n".join(lines))
  return path
