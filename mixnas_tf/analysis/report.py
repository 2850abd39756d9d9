r"""A Markdown report with PNG plots of one or several searches, against the truth.

  python -m mixnas_tf.report --search=DIR[,DIR2,...] [--ground_truth=TABLE[:COLUMN]] \
      [--tuner=DIR[,DIR2,...]] --out=OUT

Writes OUT/report.md and its PNGs:
  - a summary of each search (K, epochs, chosen configuration, time) and KerasTuner run;
  - with --ground_truth: the rank metrics of every search and tuner (mixnas_tf.rank) and
    estimated vs true accuracy per configuration, the points labelled [a,b,c] where the
    label fits;
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
from matplotlib import colors as mpl_colors  # pylint: disable=g-import-not-at-top,wrong-import-order
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


def _labelled_note(count: int, total: int) -> str:
  return (f"all {total} points labelled" if count == total else
          f"{count} of {total} points labelled, where a label fits")


def plot_estimate_vs_truth(space, truth: dict[int, float], estimates: list[tuple[str, dict]],
                           metrics: list[dict], path: str) -> str:
  """One panel per estimate: estimated vs true accuracy, the points labelled [a,b,c] where
  the label fits (the chosen and the truly best first, then by true accuracy)."""
  fig, axes = _panels(len(estimates), width=5.8, height=5.6)
  best = max(truth, key=lambda i: (truth[i], -i))
  panels = []
  for ax, (name, estimate), result in zip(axes, estimates, metrics):
    common = sorted(set(truth) & set(estimate))
    x = [truth[i] for i in common]
    y = [estimate[i] for i in common]
    ax.scatter(x, y, s=16, color="tab:blue", label="configuration")
    chosen = result["chosen"]["index"]
    ax.scatter([truth[chosen]], [estimate[chosen]], s=90, facecolors="none",
               edgecolors="tab:orange", linewidths=1.8, label=f"chosen {_label(space, chosen)}")
    if best in estimate:
      ax.scatter([truth[best]], [estimate[best]], s=90, marker="s", facecolors="none",
                 edgecolors="tab:green", linewidths=1.8,
                 label=f"truly best {_label(space, best)}")
    tau = result["kendall_tau"]
    title = (f"{name}\nKendall tau {'n/a' if tau is None else f'{tau:.3f}'}, "
             f"regret {result['regret']:.2f}")
    # The label count is known once the layout is final: a placeholder of the same height.
    ax.set_title(plots.with_note(title, _labelled_note(len(common), len(common))),
                 fontsize=plots.TITLE_FONT)
    ax.set_xlabel("true accuracy (%)")
    ax.set_ylabel("estimated accuracy (%)")
    ax.grid(alpha=0.3)
    order = sorted(range(len(common)), key=lambda j: (common[j] != chosen, common[j] != best,
                                                      -x[j], common[j]))
    panels.append((ax, x, y, [_label(space, i) for i in common], order, title))
  for ax in axes:
    plots.legend_below(ax, ncol=3)
  fig.tight_layout()
  for ax, x, y, labels, order, title in panels:
    count = plots.annotate_points(ax, x, y, labels, order)
    ax.set_title(plots.with_note(title, _labelled_note(count, len(labels))),
                 fontsize=plots.TITLE_FONT)
  return _save(fig, path)


def plot_accuracy_vs_macs(space, sources: list[tuple[str, dict]], macs: dict[int, int],
                          path: str) -> str:
  """One panel per source: accuracy against MACs, the Pareto front joined and labelled
  (where a label fits, the most accurate first)."""
  fig, axes = _panels(len(sources), width=5.8, height=5.0)
  panels = []
  for ax, (name, values) in zip(axes, sources):
    points = {i: (macs[i] / 1e6, v) for i, v in values.items() if i in macs}
    front = pareto_front(points)
    ax.scatter([p[0] for p in points.values()], [p[1] for p in points.values()], s=14,
               color="tab:gray", label="configuration")
    fx = [points[i][0] for i in front]
    fy = [points[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", linewidth=1)
    ax.scatter(fx, fy, s=24, color="tab:red", label="Pareto front", zorder=3)
    ax.set_xlabel("multiply-accumulates per image (millions)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(plots.with_note(name, _labelled_note(len(front), len(front))),
                 fontsize=plots.TITLE_FONT)
    order = sorted(range(len(front)), key=lambda j: -fy[j])
    # The other points and the front's line (sampled) are kept free of labels.
    line = []
    for (x0, y0), (x1, y1) in zip(zip(fx, fy), zip(fx[1:], fy[1:])):
      line += [(x, y0) for x in np.linspace(x0, x1, 25)]
      line += [(x1, y) for y in np.linspace(y0, y1, 25)]
    rest = [p for i, p in points.items() if i not in front]
    panels.append((ax, fx, fy, [_label(space, i) for i in front], order, line, rest, name))
  for ax in axes:
    plots.legend_below(ax, ncol=2)
  fig.tight_layout()
  for ax, fx, fy, labels, order, line, rest, name in panels:
    count = plots.annotate_points(ax, fx, fy, labels, order, others=line, soft=rest)
    ax.set_title(plots.with_note(name, _labelled_note(count, len(labels)).replace(
        "points", "Pareto-front points")), fontsize=plots.TITLE_FONT)
  return _save(fig, path)


def _weight_set_colors(k: int) -> list:
  """One colour per weight set, the same in every panel."""
  return list(plt.get_cmap("tab10" if k <= 10 else "tab20").colors)[:k]


def plot_evolution(space, search: Search, path: str) -> str | None:
  """Weight-set shares and temperature, and each configuration's assigned set, per epoch."""
  history = [h for h in search.history if "search/scores" in h]
  if not history:
    return None
  k = search.results["num_models"]
  colors = _weight_set_colors(k)
  epochs = [h["epoch"] + 1 for h in history]
  rows = len(search.searched)
  height = max(4.4, 1.8 + plots.labelled_extent(rows))
  fig = plt.figure(figsize=(11, height))
  share_height = 3.4
  if height > share_height + 2.4:  # The shares keep a readable height; the map grows.
    grid = fig.add_gridspec(2, 2, width_ratios=[1.15, 1],
                            height_ratios=[share_height, height - share_height])
    ax_share = fig.add_subplot(grid[0, 0])
  else:
    grid = fig.add_gridspec(1, 2, width_ratios=[1.15, 1])
    ax_share = fig.add_subplot(grid[0, 0])
  ax_assign = fig.add_subplot(grid[:, 1])
  for m in range(k):
    ax_share.plot(epochs, [h.get(f"search/share_model_{m}", np.nan) for h in history],
                  marker=".", color=colors[m], label=f"m{m}")
  ax_share.set_xlabel("epoch")
  plots.integer_epochs(ax_share)
  ax_share.set_ylabel("share of configurations (balanced)")
  ax_share.set_ylim(0, 1.05)
  ax_share.grid(alpha=0.3)
  twin = ax_share.twinx()
  twin.plot(epochs, [h.get("search/temperature", np.nan) for h in history], color="black",
            linestyle="--", linewidth=1, label="temperature (right axis)")
  twin.set_ylabel("temperature (dashed)")
  ax_share.set_title(f"{search.name}: weight-set shares", fontsize=plots.TITLE_FONT)
  plots.legend_below(ax_share, ncol=min(k + 1, 5))
  # The assignment each epoch ends with: the epoch's scores at its temperature, balanced.
  assigned = np.array([mixture.assigned_models(mixture.assignment_probs(
      np.asarray(h["search/scores"], np.float64), h["search/temperature"],
      mixture.epoch_balance(np.asarray(h["search/scores"], np.float64),
                            h["search/temperature"])))
                       for h in history]).T  # [C, epochs]
  image = ax_assign.imshow(
      assigned, aspect="auto", cmap=mpl_colors.ListedColormap(colors),
      norm=mpl_colors.BoundaryNorm(np.arange(k + 1) - 0.5, k),
      interpolation="nearest",
      extent=(epochs[0] - 0.5, epochs[-1] + 0.5, rows - 0.5, -0.5))
  note = plots.set_item_ticks(ax_assign, [_label(space, i) for i in search.searched], "y")
  ax_assign.set_xlabel("epoch")
  ax_assign.set_ylabel("configuration")
  plots.integer_epochs(ax_assign)
  ax_assign.set_title(plots.with_note("assigned weight set per configuration", note),
                      fontsize=plots.TITLE_FONT)
  key = fig.colorbar(image, ax=ax_assign, ticks=range(k), fraction=0.06, pad=0.03)
  key.set_ticklabels([f"m{m}" for m in range(k)], fontsize=plots.FONT + 1)
  key.set_label("weight set", fontsize=plots.FONT + 1)
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
  rows = len(search.searched)
  fig, axes = plt.subplots(1, len(picks), figsize=(
      2.4 + (0.45 * k + 0.9) * len(picks), max(3.6, 1.8 + plots.labelled_extent(rows))),
                           squeeze=False, layout="constrained")
  note = ""
  for ax, p, s in zip(axes[0], picks, scores):
    image = ax.imshow(s, aspect="auto", cmap="magma", vmin=low, vmax=high,
                      interpolation="nearest")
    ax.set_xticks(range(k), [f"m{m}" for m in range(k)], fontsize=plots.FONT + 1)
    ax.set_xlabel("weight set", fontsize=plots.FONT + 1)
    ax.set_title(f"epoch {history[p]['epoch'] + 1}", fontsize=plots.TITLE_FONT)
    if p == picks[0]:
      note = plots.set_item_ticks(ax, [_label(space, i) for i in search.searched], "y")
      ax.set_ylabel("configuration")
    else:
      ax.set_yticks([])
  key = fig.colorbar(image, ax=list(axes[0]), fraction=0.04 if len(picks) > 2 else 0.08,
                     pad=0.02)
  key.set_label("W (EMA of validation-batch accuracy)", fontsize=plots.FONT + 1)
  key.ax.tick_params(labelsize=plots.FONT)
  fig.suptitle(plots.with_note(f"{search.name}: score matrix W", note),
               fontsize=plots.TITLE_FONT)
  return _save(fig, path)


def plot_training_curves(searches: list[Search], path: str) -> str | None:
  """Per-epoch training metrics of every search, one line per search."""
  if not any(s.history for s in searches):
    return None
  fig, axes = plt.subplots(1, len(TRAINING_CURVES), figsize=(4.2 * len(TRAINING_CURVES), 3.6))
  for ax, metric in zip(axes, TRAINING_CURVES):
    for search in searches:
      points = [(h["epoch"] + 1, h[metric]) for h in search.history if metric in h]
      if points:
        ax.plot(*zip(*points), marker=".", label=search.name)
    ax.set_xlabel("epoch")
    plots.integer_epochs(ax)
    ax.grid(alpha=0.3)
    ax.set_title(metric, fontsize=plots.TITLE_FONT)
  plots.legend_right(axes[-1], title="search", title_fontsize=plots.FONT + 1)
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
