"""PNG plots of search results (matplotlib, Agg backend, atomic writes).

Every plot is meant to be legible at a glance: all text at least FONT points, legends
outside the data, a colour key for every colour-coded panel, integer epoch ticks, and
figures that grow with the number of labelled items (beyond MAX_LABELS items, only every
k-th is labelled and the title says so). The helpers below are shared with report.py.
"""

import math

import matplotlib

matplotlib.use("Agg")
from matplotlib import patches  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import text  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import transforms  # pylint: disable=g-import-not-at-top,wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position

# The smallest text size of any plot (tick labels, annotations, legends), in points.
FONT = 8
TITLE_FONT = 10
# At most this many tick labels along an axis of configurations; beyond, every k-th.
MAX_LABELS = 60
# Inches per labelled row or column of configurations (FONT-point text needs ~0.11).
LABEL_PITCH = 0.17


# ----------------------------------------------------------------------------
# Helpers.


def label_step(count: int, max_labels: int = MAX_LABELS) -> int:
  """Label every `label_step`-th of `count` items so that at most `max_labels` are."""
  return max(1, math.ceil(count / max_labels))


def labelled_extent(count: int, max_labels: int = MAX_LABELS) -> float:
  """Inches an axis of `count` labelled items needs at FONT points (capped)."""
  return LABEL_PITCH * min(count, max_labels)


def set_item_ticks(ax, labels, axis: str = "y", rotation: float = 0,
                   max_labels: int = MAX_LABELS, what: str = "configurations") -> str:
  """Ticks at 0..n-1 with `labels` (every k-th beyond `max_labels`), FONT points.

  Returns a note for the title ("" when every item is labelled)."""
  labels = list(labels)
  step = label_step(len(labels), max_labels)
  positions = list(range(0, len(labels), step))
  shown = [labels[p] for p in positions]
  if axis == "y":
    ax.set_yticks(positions, shown, fontsize=FONT)
  else:
    ax.set_xticks(positions, shown, fontsize=FONT, rotation=rotation)
  return "" if step == 1 else f"every {_ordinal(step)} of {len(labels)} {what} labelled"


def _ordinal(n: int) -> str:
  suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
  return f"{n}{suffix}"


def with_note(title: str, note: str) -> str:
  return f"{title}\n({note})" if note else title


def integer_epochs(ax) -> None:
  """Integer ticks on the x axis (epochs), even when it spans less than two epochs."""
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))


def legend_right(ax, handles=None, labels=None, **kwargs):
  """A legend beside the axes, to the right (outside the data)."""
  if handles is not None:
    kwargs["handles"] = handles
    kwargs["labels"] = [h.get_label() for h in handles] if labels is None else labels
  return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                   fontsize=FONT, **kwargs)


def legend_below(ax, handles=None, labels=None, ncol: int = 1, **kwargs):
  """A legend under the axes, below its tick labels and x label (outside the data)."""
  fig = ax.figure
  renderer = fig.canvas.get_renderer()
  boxes = [a.get_tightbbox(renderer) for a in fig.axes
           if a is ax or a.bbox.bounds == ax.bbox.bounds]  # Twin axes share the box.
  drop = (ax.get_window_extent(renderer).y0 - min(b.y0 for b in boxes)) / fig.dpi + 0.06
  if handles is None:
    handles, labels = [], []
    for a in fig.axes:
      if a.bbox.bounds == ax.bbox.bounds:
        h, l = a.get_legend_handles_labels()
        handles += h
        labels += l
  elif labels is None:
    labels = [h.get_label() for h in handles]
  return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   bbox_transform=transforms.offset_copy(ax.transAxes, fig=fig, y=-drop,
                                                         units="inches"),
                   borderaxespad=0.0, ncol=ncol, fontsize=FONT, **kwargs)


def annotate_points(ax, xs, ys, texts, order=None, fontsize: float = FONT, others=(),
                    soft=()) -> int:
  """Labels points with `texts` where a label fits: inside the axes, over no other label
  and no point (those of xs/ys but its own, and `others`, a list of (x, y)); positions
  around each point are tried, then farther ones with a leader line. Points are tried in
  `order` (most important first); those left unlabelled are tried again over the `soft`
  points (on a white background), and the rest stay unlabelled. Call it once the figure's layout is final
  (tight_layout). Returns how many were labelled."""
  fig = ax.figure
  fig.canvas.draw()
  renderer = fig.canvas.get_renderer()
  inside = ax.get_window_extent(renderer)

  def to_pixels(points):
    return ax.transData.transform(np.array(list(points), dtype=float).reshape(-1, 2))

  own = to_pixels(zip(xs, ys))
  hard = to_pixels(others)
  weak = to_pixels(soft)
  radius = 3.5 * fig.dpi / 72
  near = ((4, 3, "left", "bottom"), (4, -3, "left", "top"), (-4, 3, "right", "bottom"),
          (-4, -3, "right", "top"), (0, 5, "center", "bottom"), (0, -5, "center", "top"),
          (7, 0, "left", "center"), (-7, 0, "right", "center"))
  # Farther away, joined to the point by a thin leader line.
  far = tuple((dx * r, dy * r, ha, va) for r in (4, 7) for dx, dy, ha, va in near)
  placed = []  # Label boxes.
  leaders = [np.zeros((0, 2))]  # Points along the leader lines drawn.

  def covers(box, pixels, margin=radius):
    return bool(np.any((pixels[:, 0] > box.x0 - margin) & (pixels[:, 0] < box.x1 + margin) &
                       (pixels[:, 1] > box.y0 - margin) & (pixels[:, 1] < box.y1 + margin)))

  def place(i, obstacles, background, offsets, leader):
    for dx, dy, ha, va in offsets:
      note = ax.annotate(
          texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
          fontsize=fontsize, ha=ha, va=va, zorder=5,
          bbox=(dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.8)
                if background else None),
          arrowprops=(dict(arrowstyle="-", color="0.35", lw=0.6, shrinkA=0, shrinkB=3)
                      if leader else None))
      note.update_positions(renderer)
      box = text.Text.get_window_extent(note, renderer).padded(1.5)  # Not the leader.
      # The leader runs from the point to the label's nearest edge point.
      start = own[i]
      end = np.clip(start, [box.x0, box.y0], [box.x1, box.y1])
      line = (start + np.linspace(0.15, 1, 12)[:, None] * (end - start) if leader
              else np.zeros((0, 2)))
      if (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and
          box.y1 <= inside.y1 and not any(box.overlaps(b) for b in placed) and
          not covers(box, np.delete(own, i, axis=0)) and not covers(box, obstacles) and
          not covers(box, np.concatenate(leaders), 1.0) and
          not any(covers(b, line, 1.0) for b in placed)):
        placed.append(box)
        leaders.append(line)
        return True
      note.remove()
    return False

  left = list(range(len(texts)) if order is None else order)
  everything = np.concatenate([hard, weak])
  passes = [(everything, False, near, False), (everything, False, far, True)]
  if len(weak):
    passes += [(hard, True, near, False), (hard, True, far, True)]
  for obstacles, background, offsets, leader in passes:
    left = [i for i in left if not place(i, obstacles, background, offsets, leader)]
  return len(texts) - len(left)


def _save(fig, path: str) -> None:
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)


# ----------------------------------------------------------------------------
# Plots.


def assignment_matrix(probs, row_labels, path: str, title: str = "p(weight set | configuration)"):
  """Heat map of the assignment [C, K]; rows labelled `[a,b,c]`."""
  probs = np.asarray(probs)
  rows, k = probs.shape
  fig, ax = plt.subplots(figsize=(1.6 + 0.6 * k, 1.4 + labelled_extent(rows)))
  image = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                    interpolation="nearest")
  note = set_item_ticks(ax, row_labels, "y")
  ax.set_xticks(range(k), [f"m{m}" for m in range(k)], fontsize=FONT + 1)
  ax.set_xlabel("weight set")
  ax.set_ylabel("configuration")
  ax.set_title(with_note(title, note), fontsize=TITLE_FONT)
  bar = fig.colorbar(image, ax=ax, fraction=0.08 if k < 4 else 0.05, pad=0.04)
  bar.set_label("probability", fontsize=FONT + 1)
  bar.ax.tick_params(labelsize=FONT)
  _save(fig, path)


def estimated_accuracy(records, path: str, title: str = "estimated accuracy"):
  """Bar chart of the estimated accuracy of every configuration, best first; the best
  (the chosen configuration) in orange. The y axis starts a little below the worst."""
  records = sorted((r for r in records if r["estimated_accuracy"] is not None),
                   key=lambda r: (-r["estimated_accuracy"], r["index"]))
  if not records:
    return
  values = np.array([100.0 * r["estimated_accuracy"] for r in records])
  labels = [spaces.format_stages(r["stages"]) for r in records]
  n = len(records)
  fig, ax = plt.subplots(figsize=(max(4.0, 0.2 * min(n, MAX_LABELS) + 1.5), 3.6))
  colors = ["tab:orange" if i == 0 else "tab:blue" for i in range(n)]
  ax.bar(range(n), values, color=colors, width=0.8)
  low, high = float(values.min()), float(values.max())
  span = max(high - low, 1.0)
  ax.set_ylim(max(0.0, math.floor(low - 0.15 * span)), min(100.0, math.ceil(high + 0.05 * span)))
  ax.set_xlim(-0.7, n - 0.3)
  note = set_item_ticks(ax, labels, "x", rotation=90)
  ax.tick_params(axis="y", labelsize=FONT)
  ax.set_xlabel(f"configuration ({n}, sorted by estimated accuracy)")
  ax.set_ylabel("estimated accuracy (%)")
  ax.grid(axis="y", alpha=0.3)
  ax.set_axisbelow(True)
  ax.set_title(with_note(title, note), fontsize=TITLE_FONT)
  handles = [patches.Patch(color="tab:orange", label=f"best: {labels[0]}"),
             patches.Patch(color="tab:blue", label="other configurations")]
  legend_right(ax, handles)
  _save(fig, path)


def layer_widths(outputs: dict, inners: dict, path: str, title: str = "widths per layer"):
  """Per layer (stem = 0), the output widths of each named network (bars side by side)
  and their inner widths (markers): a default, a widened and a pruned network."""
  names = list(outputs)
  layers = np.arange(len(next(iter(outputs.values()))))
  width = 0.8 / len(names)
  fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) + 2), 3.6))
  for n, name in enumerate(names):
    x = layers + (n - (len(names) - 1) / 2) * width
    ax.bar(x, outputs[name], width=width, label=f"{name}: output")
    if name in inners:
      inner = np.asarray(inners[name], float)
      shown = inner > 0
      ax.plot(x[shown], inner[shown], "k_", markersize=9, markeredgewidth=2)
  ax.plot([], [], "k_", markersize=9, markeredgewidth=2, label="inner width")
  ax.set_xticks(layers, ["stem"] + [str(i) for i in layers[1:]], fontsize=FONT + 1)
  ax.tick_params(axis="y", labelsize=FONT + 1)
  ax.set_xlim(-0.6, len(layers) - 0.4)
  ax.set_xlabel("layer")
  ax.set_ylabel("channels")
  ax.grid(axis="y", alpha=0.3)
  ax.set_axisbelow(True)
  ax.set_title(title, fontsize=TITLE_FONT)
  legend_right(ax)
  _save(fig, path)
