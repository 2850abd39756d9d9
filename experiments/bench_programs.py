r"""Does dropping a compiled program free its memory? XLA vs graph mode, with an LRU bound.

  python experiments/bench_programs.py --mode=xla --max_live=4 --configs=24
  python experiments/bench_programs.py --mode=graph --max_live=100 --configs=24

Compiles the ResNet20 evaluation step of `--configs` configurations one after the other
through `Trainer.eval_step` (a `Programs` LRU of `--max_live` live programs) and prints the
process's resident memory after each, relative to before the first. Run each setting in
a process of its own. The measurement behind `runtime.compile_policy` (BUILD_NOTES.md).
"""

import gc
import os

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

flags.DEFINE_enum("mode", "xla", ["xla", "graph"], "Compile with XLA or run in graph mode.")
flags.DEFINE_integer("max_live", 4, "Programs kept alive (LRU).")
flags.DEFINE_integer("configs", 24, "Configurations compiled one after the other.")
FLAGS = flags.FLAGS


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS"):
        return int(line.split()[1]) / 1024
  return float("nan")


def main(argv):
  del argv
  configs = spaces.get_space("resnet20").configs[:FLAGS.configs]
  model = network.SwitchableResNet(configs=configs, num_models=1, batchnorm="batch_stats")
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), 10,
                                jit_compile=FLAGS.mode == "xla",
                                max_live_programs=FLAGS.max_live)
  images = tf.zeros((32, 32, 32, 3), tf.uint8)
  labels, mask = tf.zeros(32, tf.int32), tf.ones(32)
  start, growth = _rss_mb(), []
  for config in configs:
    trainer.eval_step(config, tf.constant(0), images, labels, mask)["correct"].numpy()
    gc.collect()
    growth.append(round(_rss_mb() - start))
  print(f"mode={FLAGS.mode} max_live={FLAGS.max_live}: resident memory growth (MB) after "
        f"each program: {growth}; {trainer.program_counts()['eval_step']}")
  print(f"per program after the first: {np.median(np.diff(growth)):.1f} MB")


if __name__ == "__main__":
  app.run(main)
