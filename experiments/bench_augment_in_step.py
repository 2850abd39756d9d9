r"""The search step with its crop + flip inside the compiled step, against the same step
fed the pipeline's augmented batch: same trainer, same batch, no input pipeline running.

  python experiments/bench_augment_in_step.py [--repeats=5 --steps=10]

`--augment_in_step` moves the pipeline's main cost (part 4 of bench_search.py) into the
step; this measures what the step pays for it. Interleaved repeats, medians, K=1,
ResNet20 [4,3,3], batch 128, XLA. Prints one JSON line.
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

from mixnas_tf import data as data_lib  # pylint: disable=wrong-import-position
from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

flags.DEFINE_integer("repeats", 5, "Interleaved repeats.")
flags.DEFINE_integer("steps", 10, "Steps per repeat.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  space = spaces.get_space("resnet20")
  config = spaces.from_stages(space, space.default)
  model = network.SwitchableResNet(configs=[config], num_models=1, batchnorm="batch_stats")
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10**6,
                                jit_compile=True, mixture=trainer_lib.MixtureState(1, 1, 0))
  rng = np.random.default_rng(0)
  b = FLAGS.batch_size
  raw = tf.constant(rng.integers(0, 256, (b, 32, 32, 3)).astype(np.uint8))
  labels = tf.constant(rng.integers(0, 10, b).astype(np.int32))
  deferred = data_lib.Deferred(raw, tf.constant([1, 2], tf.int64))
  variants = {"augmented by the pipeline": data_lib.materialize(deferred),
              "augmented in the step": deferred}
  for images in variants.values():  # Compile both programs.
    trainer.search_step(config, images, labels, raw, labels)["loss"].numpy()
  rates = {name: [] for name in variants}
  for _ in range(FLAGS.repeats):
    for name, images in variants.items():
      t0 = time.perf_counter()
      for _ in range(FLAGS.steps):
        out = trainer.search_step(config, images, labels, raw, labels)
      out["loss"].numpy()
      rates[name].append(FLAGS.steps * b / (time.perf_counter() - t0))
  medians = {name: statistics.median(v) for name, v in rates.items()}
  print(json.dumps({"images_per_s_median": medians,
                    "in_step_over_pipeline": medians["augmented in the step"]
                    / medians["augmented by the pipeline"], "repeats": rates}))


if __name__ == "__main__":
  app.run(main)
