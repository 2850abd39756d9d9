r"""Issue 12's evidence: downsampling positions x channel widths, at one MAC budget.

  python experiments/widths_study.py --workdir=runs/widths_study \
      --dataset=folder:../shared/data/cifar10 --searched=5,3,2 --epochs=15 \
      --train_size=10000 --test_size=5000 --seeds=2

Four variants of ResNet20, each trained with the same protocol, epoch budget, data and
seeds (held-out accuracy, since the folder has no test split):
  1. default:  [4,3,3], the default widths (retrain);
  2. widths:   [4,3,3], LW-DNA widths found at the default's MACs (python -m mixnas_tf.widths
               --target_macs=<[4,3,3]'s MACs>: a 2x widened network searched for a tenth of
               the epochs, shrunk, and trained for the rest);
  3. searched: the mixture search's chosen configuration (--searched), default widths;
  4. joint:    the searched configuration with LW-DNA widths at the same MAC target
               (the two-stage joint search).
Every run is a work directory of its own (resumable). Writes WORKDIR/study.json,
WORKDIR/study.md (mean and sample std over seeds, MACs, parameters, wall times) and
WORKDIR/accuracy_vs_macs.png (with the Pareto front over the variants' means).
"""

import os

from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position
from mixnas_tf.analysis import report_figures  # pylint: disable=wrong-import-position
from mixnas_tf.methods import standalone  # pylint: disable=wrong-import-position
from mixnas_tf.methods import width_search  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position

flags.DEFINE_string("workdir", None, "Output directory.", required=True)
flags.DEFINE_string("dataset", "folder:../shared/data/cifar10", "Dataset.")
flags.DEFINE_string("default", "4,3,3", "The default configuration.")
flags.DEFINE_string("searched", "5,3,2", "The mixture search's choice.")
flags.DEFINE_integer("epochs", 15, "Epoch budget of every variant.")
flags.DEFINE_integer("train_size", 10000, "Training images (subsample; 0: all).")
flags.DEFINE_integer("test_size", 5000, "Held-out images.")
flags.DEFINE_integer("seeds", 2, "Seeds per variant.")
flags.DEFINE_float("width_mult", 2.0, "Widening before the width search.")
flags.DEFINE_bool("jit_compile", False, "XLA (graph mode is faster on this CPU).")
flags.DEFINE_list("variants", ["default", "widths", "searched", "joint"], "Which variants.")
FLAGS = flags.FLAGS


def _base(config: str, seed: int) -> standalone.StandaloneConfig:
  return standalone.StandaloneConfig(
      dataset=FLAGS.dataset, config=config, epochs=FLAGS.epochs, batch_size=128,
      learning_rate=0.1, min_learning_rate=0.0, schedule="cosine", weight_decay=5e-4,
      train_size=FLAGS.train_size, test_size=FLAGS.test_size, eval_split="holdout",
      holdout_fraction=0.1, jit_compile=FLAGS.jit_compile, seed=seed, data_seed=0,
      progress=False, log_every=100)


def run_variant(name: str, seed: int, target_macs: float) -> dict:
  config = FLAGS.default if name in ("default", "widths") else FLAGS.searched
  base = _base(config, seed)
  workdir = os.path.join(FLAGS.workdir, f"{name}_seed{seed}")
  if name in ("default", "searched"):
    metrics = standalone.train_standalone(base, workdir)
    return {"accuracy": metrics["test_accuracy"], "macs": metrics["macs"],
            "params": metrics["params"], "widths": list(spaces.get_space("resnet20").widths),
            "seconds": metrics["train_seconds"]}
  summary = width_search.run_widths(width_search.WidthConfig(
      base=base, width_mult=FLAGS.width_mult, target_macs=target_macs, export=False),
      workdir)
  return {"accuracy": summary["test_accuracy"], "macs": summary["macs"],
          "params": summary["params"], "widths": summary["widths"],
          "inner_widths": summary["inner_widths"],
          "seconds": (summary["search_seconds"] or 0) + (summary["final_seconds"] or 0)}


def main(argv):
  del argv
  space = spaces.get_space("resnet20")
  default = spaces.parse_config(space, FLAGS.default)
  target = network.costs(default, 32, "maxpool", 10)["macs"]
  rows = {}
  for name in FLAGS.variants:
    runs = [run_variant(name, seed, target) for seed in range(FLAGS.seeds)]
    acc = np.array([r["accuracy"] for r in runs]) * 100
    config = FLAGS.default if name in ("default", "widths") else FLAGS.searched
    rows[name] = {"config": spaces.parse_config(space, config).label, "runs": runs,
                  "mean": float(acc.mean()),
                  "std": float(acc.std(ddof=1)) if len(acc) > 1 else None,
                  "macs": runs[0]["macs"], "params": runs[0]["params"]}
  study = {"settings": {k: FLAGS[k].value for k in ("dataset", "default", "searched",
                                                   "epochs", "train_size", "test_size",
                                                   "seeds", "width_mult")},
           "target_macs": target, "rows": rows}
  workdir_lib.atomic_write_json(os.path.join(FLAGS.workdir, "study.json"), study)
  lines = ["| variant | configuration | MACs | params | held-out accuracy (mean ± std, "
           f"{FLAGS.seeds} seeds) | widths (output per layer) | wall time per run (min) |",
           "|---|---|---|---|---|---|---|"]
  for name, r in rows.items():
    std = "" if r["std"] is None else f" ± {r['std']:.2f}"
    minutes = np.mean([run["seconds"] or 0 for run in r["runs"]]) / 60
    lines.append(f"| {name} | {r['config']} | {r['macs'] / 1e6:.1f} M | {r['params']:,} | "
                 f"{r['mean']:.2f}{std} | {r['runs'][0]['widths']} | {minutes:.1f} |")
  workdir_lib.atomic_write_text(os.path.join(FLAGS.workdir, "study.md"),
                                "\n".join(lines) + "\n")
  print("\n".join(lines))
  fig, ax = plt.subplots(figsize=(5.5, 4.0))
  points = {name: (r["macs"] / 1e6, r["mean"]) for name, r in rows.items()}
  for name, (m, a) in points.items():
    ax.errorbar(m, a, yerr=rows[name]["std"] or 0, fmt="o", capsize=3,
                label=f"{name} {rows[name]['config']}")
  front = report_figures.pareto_front(points)
  ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "k--", lw=1,
          label="Pareto front")
  ax.set_xlabel("multiply-accumulates per image (M)")
  ax.set_ylabel("held-out accuracy (%)")
  ax.grid(alpha=0.3)
  ax.set_title(f"ResNet20, {FLAGS.epochs} epochs, {FLAGS.seeds} seeds (mean ± std)",
               fontsize=10)
  # Outside the data, to the right.
  ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
            title="variant", title_fontsize=9)
  workdir_lib.atomic_savefig(fig, os.path.join(FLAGS.workdir, "accuracy_vs_macs.png"))
  plt.close(fig)


if __name__ == "__main__":
  app.run(main)
