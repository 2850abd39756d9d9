r"""Measures how to run DiffStride networks, whose layer sizes depend on the strides' values.

  python experiments/bench_diffstride.py                      # prints the tables
  python experiments/bench_diffstride.py --out=experiments/bench_diffstride.md

Part 1, the whole ResNet20 training step (`trainer_lib.Trainer.train_step`, batch --batch_size,
32x32, random data), initial configuration [4,3,3]:
  - fixed: the max-pool network (reference), with and without XLA;
  - (a) dynamic: DiffStride sizes computed in-graph from the strides; runs without XLA only;
  - static plan: the sizes as Python ints from the strides (`SwitchableResNet.size_plan`,
    read on the host before every step), one trace per distinct plan; with and without XLA
    (option (c) is "with XLA");
  - (b) bounded: `cropping=False`, the spectrum is masked but not cropped, so every shape is
    static whatever the strides (one compilation), but the network runs at full resolution:
    the cost of any bounded design (crop to ceil(N / lower_limit_stride) = N, and zero or
    mask beyond) is at least this; zero-masking also changes what BN, the convs' borders and
    the global pooling see.
  For each: the first call (trace + compile), the median steady step, and for the plans the
  cost of a call with a new plan (new trace + compilation) and of computing the plan.
Part 2, a short real run (lr 0.1, random labels on random images is enough to move the
strides): how many plans (traces) --run_steps steps need, and the total wall time.
Part 3, the DiffStride op alone (forward + backward w.r.t. input and stride): the
matrix form used by diffstride.py against tf.signal.rfft2d/irfft2d (channels-first, so
the channels-last input is transposed twice), with and without XLA.

The machine is shared (2 cores): times are medians, and the load average is printed.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from mixnas_tf import diffstride
from mixnas_tf import spaces
from mixnas_tf.nn import network
from mixnas_tf.training import trainer as trainer_lib

flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_integer("steps", 8, "Timed steady-state steps per variant.")
flags.DEFINE_integer("run_steps", 60, "Steps of the part-2 run.")
flags.DEFINE_string("out", None, "Also write the tables (markdown) to this file.")
FLAGS = flags.FLAGS

SPACE = spaces.get_space("resnet20")
DEFAULT = spaces.parse_config(SPACE, "4,3,3")


def _batch(batch_size, seed=0):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.integers(0, 256, (batch_size, 32, 32, 3)).astype(np.uint8)),
          tf.constant(rng.integers(0, 10, batch_size).astype(np.int32)))


def _trainer(downsample, jit, learning_rate=0.0, **model_kwargs):
  keras.utils.set_random_seed(0)
  model = network.SwitchableResNet(configs=[DEFAULT], downsample=downsample, **model_kwargs)
  # learning_rate 0 keeps the strides (hence the plan) still while timing; same compute.
  optim = trainer_lib.OptimConfig(learning_rate=learning_rate, schedule="constant", weight_decay=5e-4)
  return model, trainer_lib.Trainer(model, optim, total_steps=1000, jit_compile=jit)


def _time(fn):
  start = time.perf_counter()
  out = fn()
  float(out["loss"])  # Waits for the step.
  return time.perf_counter() - start


def _time_plain(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


class Variant:
  """One way to run the network: its model, trainer and how it picks the static config."""

  def __init__(self, name, downsample, jit, use_plan, learning_rate=0.0, **model_kwargs):
    self.name, self.jit, self.use_plan = name, jit, use_plan
    self.model, self.trainer = _trainer(downsample, jit, learning_rate, **model_kwargs)
    self.k = tf.constant(0, tf.int32)
    self.times = []

  def config(self):
    return self.model.size_plan(32) if self.use_plan else DEFAULT

  def step(self, images, labels):
    return _time(lambda: self.trainer.train_step(self.config(), self.k, images, labels))

  def traces(self):
    return self.trainer.trace_counts()["train_step"]


def bench_steps(variants, images, labels):
  """First calls, then --steps rounds in which every variant takes one step (interleaved,
  so that the load of the shared machine affects them alike), then a new plan."""
  rows = []
  for v in variants:
    v.first = v.step(images, labels)
  for _ in range(FLAGS.steps):
    for v in variants:
      v.times.append(v.step(images, labels))
  for v in variants:
    steady = statistics.median(v.times)
    row = {"variant": v.name, "xla": v.jit, "first_call_s": v.first, "step_s": steady,
           "images_per_s": images.shape[0] / steady, "new_plan_s": None, "plan_ms": None}
    if v.use_plan:
      row["plan_ms"] = 1e3 * statistics.median(
          _time_plain(lambda: v.model.size_plan(32)) for _ in range(20))
      # A stride crossing a size boundary: layer 4 from 2.0 to 1.9 (20x20 -> 22x22).
      v.model.blocks[3].pool.strides.assign([[1.9, 1.9]])
      row["new_plan_s"] = v.step(images, labels)
    row["traces"] = v.traces()
    rows.append(row)
  return rows


def bench_runs(variants, batches):
  """A short real run per variant (lr 0.1: the strides move, plans change), interleaved."""
  for v in variants:
    v.times = []
  for images, labels in batches:
    for v in variants:
      v.times.append(v.step(images, labels))
  return [{"variant": v.name, "xla": v.jit, "steps": len(batches), "total_s": sum(v.times),
           "traces": v.traces(),
           "final_plan": "x".join(str(h) for h, _ in v.model.size_plan(32)[1:])}
          for v in variants]


def _fft_op(x, strides, sizes, smoothness):
  """rfft2d -> mask -> crop -> irfft2d on channels-first data, for comparison."""
  xt = tf.transpose(x, (0, 3, 1, 2))
  spectrum = tf.signal.rfft2d(xt)
  n_h, n_w = x.shape[1], x.shape[2]
  (h, w) = sizes
  f_h = tf.cast(tf.minimum(tf.range(n_h), n_h - tf.range(n_h)), tf.float32)
  m_h = tf.clip_by_value((n_h / (2 * strides[0]) + smoothness / 2 - f_h) / smoothness, 0, 1)
  f_w = tf.cast(tf.range(n_w // 2 + 1), tf.float32)
  m_w = tf.clip_by_value((n_w / (2 * strides[1]) + smoothness / 2 - f_w) / smoothness, 0, 1)
  spectrum *= tf.cast(m_h[:, None] * m_w[None, :], tf.complex64)
  c = h // 2
  spectrum = tf.concat([spectrum[:, :, :c, :w // 2 + 1],
                        spectrum[:, :, n_h - c:, :w // 2 + 1]], axis=2)
  y = tf.signal.irfft2d(spectrum, fft_length=[h, w]) * (h * w / (n_h * n_w))
  return tf.transpose(y, (0, 2, 3, 1))


def bench_op(shape, impl, jit):
  x = tf.random.normal(shape)
  layer = diffstride.DiffStride(strides=2.0)
  layer.build(None)
  sizes = layer.output_size_for(shape[1:3])

  @tf.function(jit_compile=jit)
  def step(x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      if impl == "matrix":
        y = layer(x, output_size=sizes)
      else:
        y = _fft_op(x, layer.stride_values(), sizes, layer.smoothness_factor)
      loss = tf.reduce_sum(y * y)
    return tape.gradient(loss, [x, layer.strides])

  step(x)
  times = []
  for _ in range(10):
    start = time.perf_counter()
    step(x)[0].numpy()
    times.append(time.perf_counter() - start)
  return {"input": "x".join(map(str, shape)), "output": f"{sizes[0]}x{sizes[1]}",
          "impl": impl, "xla": jit, "ms": 1e3 * statistics.median(times)}


def _table(rows, columns):
  def fmt(v):
    if v is None:
      return "-"
    if isinstance(v, float):
      return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  images, labels = _batch(FLAGS.batch_size)
  out = [f"Load average at start: {os.getloadavg()[0]:.1f} (2 cores); tensorflow "
         f"{tf.__version__}; batch {FLAGS.batch_size}, 32x32, ResNet20 from [4,3,3]; "
         f"medians of {FLAGS.steps} interleaved steps.", ""]
  steps = bench_steps([
      Variant("fixed max-pool", "maxpool", True, False),
      Variant("fixed max-pool", "maxpool", False, False),
      Variant("(a) DiffStride, dynamic sizes", "diffstride", False, False),
      Variant("DiffStride, static plan", "diffstride", False, True),
      Variant("(c) DiffStride, static plan", "diffstride", True, True),
      Variant("(b) DiffStride, no crop (bounded)", "diffstride", True, False,
              diffstride={"cropping": False}),
  ], images, labels)
  out += ["Part 1: one training step", "",
          _table(steps, ["variant", "xla", "first_call_s", "step_s", "images_per_s",
                         "new_plan_s", "plan_ms", "traces"]), ""]
  print("\n".join(out), flush=True)
  batches = [_batch(FLAGS.batch_size, seed=s) for s in range(FLAGS.run_steps)]
  runs = bench_runs([Variant("(a) dynamic sizes", "diffstride", False, False, 0.1),
                     Variant("static plan", "diffstride", False, True, 0.1),
                     Variant("(c) static plan", "diffstride", True, True, 0.1)], batches)
  part2 = [f"Part 2: a short real run from [4,3,3] (lr 0.1, the strides move), "
           f"{FLAGS.run_steps} interleaved steps", "",
           _table(runs, ["variant", "xla", "steps", "total_s", "traces", "final_plan"]), ""]
  print("\n".join(part2), flush=True)
  ops = [bench_op(shape, impl, jit)
         for shape in ((FLAGS.batch_size, 32, 32, 16), (FLAGS.batch_size, 16, 16, 32))
         for impl in ("matrix", "fft") for jit in (False, True)]
  part3 = ["Part 3: the op alone, forward + backward (ms)", "",
           _table(ops, ["input", "output", "impl", "xla", "ms"]), ""]
  print("\n".join(part3), flush=True)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write("# DiffStride execution benchmark\n\n`python experiments/bench_diffstride.py "
              f"--out={FLAGS.out}`\n\n" + "\n".join(out + part2 + part3))


if __name__ == "__main__":
  app.run(main)
  sys.exit(0)
