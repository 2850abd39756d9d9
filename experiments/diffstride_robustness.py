r"""DiffStride's robustness experiment (Riad et al. 2022, Table 1) in our setting.

The paper starts a ResNet-18 from good and from poor strides and finds that DiffStride
reaches the same accuracy from both, while fixed strides suffer from the poor start. Here:
ResNet20 on CIFAR-10, the default configuration [4,3,3] and a poor one ([1,1,8], the worst
stand-alone configuration of the reference table), each trained
  - with fixed strides (the reference max-pool network, --fixed_downsample), and
  - as a DiffStride network initialised from it (`mixnas_tf.diffstride_train`),
plus, optionally, the mixture search's chosen configuration retrained with fixed strides
(--mixture_config, e.g. from the search's results.json). Every run is one
`standalone.train_standalone` call with the same budget, data, seed and optimiser, in
WORKDIR/<run>/ (resumable: finished runs are skipped). The table (final accuracy, learned
strides, nearest configuration, cost) goes to WORKDIR/robustness.json and .md.

  # Full budget (hours per run on 2 CPU cores):
  python experiments/diffstride_robustness.py --workdir=runs/robustness \
      --dataset=folder:../shared/data/cifar10 --epochs=30 --mixture_config=5,3,2
  # Smoke budget (minutes):
  python experiments/diffstride_robustness.py --workdir=/tmp/robustness \
      --dataset=folder:../shared/data/cifar10 --epochs=2 --train_size=2000 --test_size=500
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging

from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import standalone

flags.DEFINE_string("workdir", None, "Root directory: one sub-directory per run, the tables.")
flags.DEFINE_string("dataset", "cifar10", "Dataset spec (cifar10, or folder:PATH).")
flags.DEFINE_string("default", "4,3,3", "The good starting configuration.")
flags.DEFINE_string("poor", "1,1,8", "The poor starting configuration.")
flags.DEFINE_string("mixture_config", None, "Also retrain this configuration (the mixture "
                    "search's choice) with fixed strides.")
flags.DEFINE_enum("fixed_downsample", "maxpool", ["maxpool", "conv", "avgpool"],
                  "Downsampling op of the fixed-stride networks.")
flags.DEFINE_integer("epochs", 30, "Training epochs of every run.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("train_size", 0, "Subsample the training split (0: all).", lower_bound=0)
flags.DEFINE_integer("test_size", 0, "Subsample the evaluation split (0: all).", lower_bound=0)
flags.DEFINE_float("smoothness_factor", 4.0, "DiffStride ramp width R.")
flags.DEFINE_float("stride_regularizer", 0.0, "DiffStride cost penalty weight.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_bool("jit_compile", False, "Compile the steps with XLA (slower on the "
                  "project's CPU, and DiffStride recompiles when its sizes change: "
                  "experiments/bench_diffstride.md).")
FLAGS = flags.FLAGS


def runs() -> list[tuple[str, dict]]:
  """(name, StandaloneConfig overrides) of every run, in order."""
  out = []
  for label, config in (("default", FLAGS.default), ("poor", FLAGS.poor)):
    out.append((f"fixed_{label}", dict(config=config, downsample=FLAGS.fixed_downsample)))
    out.append((f"diffstride_{label}", dict(
        config=config, downsample="diffstride", smoothness_factor=FLAGS.smoothness_factor,
        stride_regularizer=FLAGS.stride_regularizer)))
  if FLAGS.mixture_config:
    out.append(("fixed_mixture", dict(config=FLAGS.mixture_config,
                                      downsample=FLAGS.fixed_downsample)))
  return out


def row(name: str, metrics: dict) -> dict:
  space = spaces.get_space("resnet20")
  learned = metrics.get("learned_strides")
  nearest = metrics.get("nearest_config")
  return {
      "run": name,
      "start": spaces.format_stages(metrics["config"]["stages"]),
      "test_accuracy": metrics["test_accuracy"],
      "learned_strides": (" ".join(f"{layer}:{(s[0] * s[1]) ** 0.5:.2f}"
                                   for layer, s in learned.items()) if learned else "-"),
      "nearest_config": spaces.format_stages(nearest["stages"]) if nearest else
                        spaces.format_stages(spaces.to_stages(space, spaces.parse_config(
                            space, metrics["config"]["code"]))),
      "mmacs": metrics["macs"] / 1e6,
      "train_seconds": metrics["train_seconds"],
      "traces": metrics["trace_counts"]["train_step"],
  }


def markdown(rows: list[dict]) -> str:
  columns = ["run", "start", "test_accuracy", "learned_strides", "nearest_config", "mmacs",
             "train_seconds", "traces"]
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    lines.append("| " + " | ".join(
        f"{r[c]:.4f}" if c == "test_accuracy" else f"{r[c]:.1f}" if isinstance(r[c], float)
        else str(r[c]) for c in columns) + " |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  root = os.path.abspath(FLAGS.workdir)
  base = standalone.StandaloneConfig(
      dataset=FLAGS.dataset, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
      train_size=FLAGS.train_size, test_size=FLAGS.test_size, seed=FLAGS.seed,
      jit_compile=FLAGS.jit_compile, progress=False)
  loaded = standalone.load_data(base)  # Same images for every run.
  rows = []
  for name, overrides in runs():
    cfg = dataclasses.replace(base, **overrides)
    logging.info("Run %s: %s", name, overrides)
    metrics = standalone.train_standalone(cfg, os.path.join(root, name), loaded=loaded)
    if metrics is None:
      print("interrupted: run the same command again to resume", file=sys.stderr)
      sys.exit(130)
    rows.append(row(name, metrics))
    workdir_lib.atomic_write_json(os.path.join(root, "robustness.json"), rows)
    workdir_lib.atomic_write_text(os.path.join(root, "robustness.md"), markdown(rows))
  print(markdown(rows))


if __name__ == "__main__":
  app.run(main)
