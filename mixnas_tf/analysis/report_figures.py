"""The report's figures (`mixnas_tf.report`): estimated vs true accuracy, accuracy vs
MACs with the Pareto front, and per search the assignment's evolution, score snapshots and
training curves. matplotlib's Agg backend is set by plots.py; files are written atomically.
"""

import os
from typing import TYPE_CHECKING

# plots imports matplotlib with the Agg backend first.
from matplotlib import colors as mpl_colors  # pylint: disable=g-import-not-at-top,wrong-import-order
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-order
import numpy as np

from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.analysis import plots
from mixnas_tf.methods import mixture

if TYPE_CHECKING:
  from mixnas_tf.analysis.report import Search

TRAINING_CURVES = ("train/loss", "train/accuracy", "train/val_batch_accuracy")
# Score-matrix snapshots per search (first epoch, last epoch and evenly in between).
SNAPSHOTS = 4


def label(space: spaces.SearchSpace, index: int) -> str:
  return spaces.format_stages(spaces.to_stages(space, spaces.from_index(space, index)))


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
               edgecolors="tab:orange", linewidths=1.8, label=f"chosen {label(space, chosen)}")
    if best in estimate:
      ax.scatter([truth[best]], [estimate[best]], s=90, marker="s", facecolors="none",
                 edgecolors="tab:green", linewidths=1.8,
                 label=f"truly best {label(space, best)}")
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
    panels.append((ax, x, y, [label(space, i) for i in common], order, title))
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
    panels.append((ax, fx, fy, [label(space, i) for i in front], order, line, rest, name))
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


def plot_evolution(space, search: "Search", path: str) -> str | None:
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
  note = plots.set_item_ticks(ax_assign, [label(space, i) for i in search.searched], "y")
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


def plot_score_snapshots(space, search: "Search", path: str) -> str | None:
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
      note = plots.set_item_ticks(ax, [label(space, i) for i in search.searched], "y")
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


def plot_training_curves(searches: list["Search"], path: str) -> str | None:
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
