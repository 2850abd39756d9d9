r"""The final evaluation of K weight sets: one pass per (configuration, set) pair, against
every set of a configuration in one program and one pass over the data.

  python experiments/bench_eval.py [--configs=12 --num_models=4 --images=512]

`Trainer.evaluate` (one pair per pass, the evaluation before issue 11) against
`Trainer.evaluate_all` (all K sets per pass, what `--final_eval=all_pairs` runs now), for
the first `--configs` of every third ResNet20 configuration, on `--images` random images
in batches of 256, XLA. Programs are compiled first; the methods alternate over
`--repeats`, and medians of the wall time for all pairs are reported. Prints one JSON line.
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

flags.DEFINE_integer("configs", 12, "Configurations evaluated.")
flags.DEFINE_integer("num_models", 4, "K.")
flags.DEFINE_integer("images", 512, "Evaluation images (batches of 256).")
flags.DEFINE_integer("repeats", 3, "Alternating repeats.")
FLAGS = flags.FLAGS
BATCH = 256


def main(argv):
  del argv
  space = spaces.get_space("resnet20")
  configs = spaces.parse_configs(space, "all")[::3][:FLAGS.configs]
  k = FLAGS.num_models
  model = network.SwitchableResNet(configs=configs, num_models=k, batchnorm="batch_stats")
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=1,
                                jit_compile=True)
  rng = np.random.default_rng(0)
  batches = [(tf.constant(rng.integers(0, 256, (BATCH, 32, 32, 3)).astype(np.uint8)),
              tf.constant(rng.integers(0, 10, BATCH).astype(np.int32)), tf.ones([BATCH]))
             for _ in range(-(-FLAGS.images // BATCH))]

  def per_pair():
    return [[trainer.evaluate(c, m, batches)["accuracy"] for m in range(k)] for c in configs]

  def all_sets():
    return [[r["accuracy"] for r in trainer.evaluate_all(c, batches)] for c in configs]

  methods = {"one pass per pair": per_pair, "all sets per pass": all_sets}
  first = {name: fn() for name, fn in methods.items()}  # Compiles every program.
  np.testing.assert_allclose(first["one pass per pair"], first["all sets per pass"],
                             atol=1e-6)
  seconds = {name: [] for name in methods}
  for _ in range(FLAGS.repeats):
    for name, fn in methods.items():
      t0 = time.perf_counter()
      fn()
      seconds[name].append(time.perf_counter() - t0)
  medians = {name: statistics.median(v) for name, v in seconds.items()}
  print(json.dumps({"pairs": len(configs) * k, "images": len(batches) * BATCH,
                    "seconds_median": medians,
                    "speedup": medians["one pass per pair"] / medians["all sets per pass"],
                    "repeats": seconds}))


if __name__ == "__main__":
  app.run(main)
