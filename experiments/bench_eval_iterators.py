r"""Evaluation passes over the search-validation split: a new tf.data iterator per pass
against every pass from one iterator (`evaluate.passes`, what the final evaluation uses).

  PYTHONPATH=. python experiments/bench_eval_iterators.py [--images=25000 --repeats=2]

Why: in the long searches of issue 9 the training loop stood idle at 0 % CPU for up to a
minute per epoch while it dropped the epoch's tf.data iterators (BUILD_NOTES); one iterator
per run removed it (142 s -> 85 s epochs). This measures whether the final evaluation's
one-iterator-per-pass had the same cost. The split, model and programs are the study's
(CIFAR-10 folder, 25,000 search-validation images of seed 0, ResNet20, K=4, graph mode,
evaluation batches of 256); the weights are untrained, which changes no timing. The two
ways take turns going first, repeat by repeat; the medians of each configuration's pass are
reported, and their ratio. Prints one JSON line.
"""

import json
import os
import statistics
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mixnas_tf import data as data_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.methods import evaluate  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

_DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "data", "cifar10")
flags.DEFINE_string("data", _DEFAULT_DATA, "Image folder with train/<class>/*.")
flags.DEFINE_integer("images", 25000, "Search-validation images (the study: 25,000).")
flags.DEFINE_string("configs", "1,1,8 4,3,3 8,1,1", "Configurations (blocks per stage), by spaces.")
flags.DEFINE_integer("repeats", 2, "Alternating repeats.")
FLAGS = flags.FLAGS
BATCH = 256  # The search's --eval_batch_size default.


def main(argv):
  del argv
  dataset = data_lib.load(f"folder:{FLAGS.data}", load_test=False)
  _, val = data_lib.split(dataset.train, 0.5, 0)
  val = data_lib.subsample(val, FLAGS.images, 1)
  space = spaces.get_space("resnet20")
  codes = spaces.parse_configs(space, "all")
  by_label = {c.label: c for c in codes}
  configs = [f"[{c}]" for c in FLAGS.configs.split()]
  unknown = [c for c in configs if c not in by_label]
  if unknown:
    raise app.UsageError(f"not ResNet20 configurations: {unknown}")
  model = network.SwitchableResNet(space="resnet20", configs=codes, num_models=4,
                                   num_classes=dataset.num_classes, batchnorm="batch_stats",
                                   image_size=dataset.image_size, mean=dataset.mean,
                                   std=dataset.std)
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=1,
                                jit_compile=False)
  batches = data_lib.eval_batches(val, batch_size=BATCH, image_size=dataset.image_size)
  next_pass = evaluate.passes(
      data_lib.eval_batches(val, batch_size=BATCH, image_size=dataset.image_size, passes=None),
      data_lib.num_eval_batches(val, BATCH))
  ways = {"iterator per pass": lambda: batches, "one iterator (passes)": next_pass}
  for config in configs:  # Traces every program before timing.
    trainer.evaluate_all(by_label[config], batches.take(1))
  seconds = {way: {c: [] for c in configs} for way in ways}
  accuracy = {way: {} for way in ways}
  for repeat in range(FLAGS.repeats):
    for config in configs:
      order = list(ways.items())  # Each way goes first in every other repeat.
      for way, one_pass in order[::-1] if repeat % 2 else order:
        t0 = time.perf_counter()
        result = trainer.evaluate_all(by_label[config], one_pass())
        seconds[way][config].append(time.perf_counter() - t0)
        accuracy[way][config] = [r["accuracy"] for r in result]
        print(f"{way} {config}: {seconds[way][config][-1]:.1f} s", flush=True)
  assert accuracy["iterator per pass"] == accuracy["one iterator (passes)"], accuracy
  medians = {way: {c: statistics.median(v) for c, v in per.items()}
             for way, per in seconds.items()}
  totals = {way: sum(per.values()) for way, per in medians.items()}
  print(json.dumps({"images": len(val), "configs": FLAGS.configs, "repeats": FLAGS.repeats,
                    "median_seconds": medians, "total_of_medians": totals,
                    "ratio": totals["iterator per pass"] / totals["one iterator (passes)"],
                    "seconds": seconds}))


if __name__ == "__main__":
  app.run(main)
