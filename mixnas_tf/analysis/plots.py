"""PNG plots of search results (matplotlib, Agg backend, atomic writes)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position


def assignment_matrix(probs, row_labels, path: str, title: str = "p(weight set | configuration)"):
  """Heat map of the assignment [C, K]; rows labelled `[a,b,c]`."""
  probs = np.asarray(probs)
  fig, ax = plt.subplots(figsize=(1.2 + 0.6 * probs.shape[1], 1.0 + 0.22 * probs.shape[0]))
  image = ax.imshow(probs, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
  ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
  ax.set_xticks(range(probs.shape[1]), [f"m{m}" for m in range(probs.shape[1])])
  ax.set_xlabel("weight set")
  ax.set_title(title, fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.05)
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)


def estimated_accuracy(records, path: str, title: str = "estimated accuracy"):
  """Bar chart of estimated accuracy per configuration (reference order), best marked."""
  records = sorted((r for r in records if r["estimated_accuracy"] is not None),
                   key=lambda r: r["index"])
  values = [r["estimated_accuracy"] for r in records]
  labels = [spaces.format_stages(r["stages"]) for r in records]
  best = int(np.argmax(values))
  fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * len(records) + 1.5), 3.2))
  colors = ["tab:orange" if i == best else "tab:blue" for i in range(len(records))]
  ax.bar(range(len(records)), values, color=colors)
  low = min(values)
  ax.set_ylim(max(0.0, low - 0.1 * (max(values) - low + 1e-3) - 0.01), max(values) * 1.01 + 1e-3)
  ax.set_xticks(range(len(records)), labels, rotation=90, fontsize=7)
  ax.set_ylabel("accuracy")
  ax.set_title(title, fontsize=9)
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)


def layer_widths(outputs: dict, inners: dict, path: str, title: str = "widths per layer"):
  """Per layer (stem = 0), the output widths of each named network (bars side by side)
  and their inner widths (markers): a default, a widened and a pruned network."""
  names = list(outputs)
  layers = np.arange(len(next(iter(outputs.values()))))
  width = 0.8 / len(names)
  fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) + 2), 3.4))
  for n, name in enumerate(names):
    x = layers + (n - (len(names) - 1) / 2) * width
    ax.bar(x, outputs[name], width=width, label=f"{name}: output")
    if name in inners:
      inner = np.asarray(inners[name], float)
      shown = inner > 0
      ax.plot(x[shown], inner[shown], "k_", markersize=9, markeredgewidth=2)
  ax.plot([], [], "k_", markersize=9, markeredgewidth=2, label="inner width")
  ax.set_xticks(layers, ["stem"] + [str(i) for i in layers[1:]], fontsize=8)
  ax.set_xlabel("layer")
  ax.set_ylabel("channels")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  workdir_lib.atomic_savefig(fig, path)
  plt.close(fig)
