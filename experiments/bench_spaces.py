r"""Benchmark of the search step in a large space: compilation, step time, program memory.

  python experiments/bench_spaces.py --space=resnet50 --image_size=128 --batch_size=16 \
      --out=experiments/results/bench_spaces_resnet50_128.json

For XLA and graph mode, side by side in one process (synthetic images, K weight sets,
batch-statistics BatchNorm, the search's own `Trainer.search_step`):
  - time to first step: building the network and trainer, then the first step of the
    first configuration (trace, and with XLA compilation, included);
  - per further configuration: the first call's time (trace/compile) and the resident
    memory it adds (what a live program costs; `--max_live` bounds them);
  - steady-state step time: median over repeats of `--steps` steps on one configuration,
    XLA and graph interleaved so machine load hits both alike;
  - the compile share a search of `--epochs` x `--steps_per_epoch` steps over the space
    would have with each policy (every configuration traced once, then steady steps).
Writes JSON and prints a markdown table.
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

flags.DEFINE_string("space", "resnet50", "Search space.")
flags.DEFINE_integer("image_size", 128, "Input side (ResNet50: ImageNet stem from 128).")
flags.DEFINE_integer("batch_size", 16, "Batch size (training and validation batch).")
flags.DEFINE_integer("num_models", 2, "K weight sets.")
flags.DEFINE_string("downsample", "conv", "Downsampling op.")
flags.DEFINE_integer("configs", 4, "Configurations whose first call is timed, per mode.")
flags.DEFINE_integer("steps", 3, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 3, "Interleaved repeats of the steady-state timing.")
flags.DEFINE_integer("steps_per_epoch", 148, "For the projected compile share (Food101's "
                     "37,875 search-train images at batch 256).")
flags.DEFINE_integer("epochs", 75, "For the projected compile share.")
flags.DEFINE_list("modes", ["xla", "graph"], "Which modes to measure.")
flags.DEFINE_string("out", None, "JSON output.")
flags.DEFINE_string("programs_of", None, "Internal: measure only the first calls and memory "
                    "of this mode, in a process of its own, and print them as JSON.")
FLAGS = flags.FLAGS


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _sync(out):
  return tf.nest.map_structure(lambda t: t.numpy(), out)


def _inputs():
  rng = np.random.default_rng(0)
  b, s = FLAGS.batch_size, FLAGS.image_size
  return (tf.constant(rng.integers(0, 256, (b, s, s, 3)).astype(np.uint8)),
          tf.constant(rng.integers(0, 10, b).astype(np.int32)))


def _picks(space):
  rng = np.random.default_rng(0)
  picks = [spaces.from_stages(space, space.default)] + [
      space.configs[i] for i in rng.choice(space.num_configs, FLAGS.configs, replace=False)]
  return list(dict.fromkeys(picks))[:FLAGS.configs]


def _trainer(space, picks, mode):
  t0 = time.perf_counter()
  model = network.SwitchableResNet(space=space.name, configs=picks,
                                   num_models=FLAGS.num_models, batchnorm="batch_stats",
                                   downsample=FLAGS.downsample, image_size=FLAGS.image_size)
  state = trainer_lib.MixtureState(len(picks), FLAGS.num_models, seed=0)
  trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10**6,
                                jit_compile=mode == "xla", mixture=state)
  return trainer, time.perf_counter() - t0


def programs_of(mode: str) -> dict:
  """First call (trace, compilation) and resident memory of each configuration's step."""
  space = spaces.get_space(FLAGS.space)
  picks = _picks(space)
  images, labels = _inputs()
  rss0 = _rss_mb()
  trainer, built = _trainer(space, picks, mode)
  first_calls, rss = [], []
  for config in picks:
    t1 = time.perf_counter()
    _sync(trainer.search_step(config, images, labels, images, labels))
    first_calls.append(time.perf_counter() - t1)
    gc.collect()
    rss.append(_rss_mb() - rss0)
  increments = np.diff(rss)
  return {"build_seconds": built, "time_to_first_step_seconds": built + first_calls[0],
          "first_call_seconds": first_calls, "rss_mb_after_each_program": rss,
          "rss_mb_per_further_program": float(np.median(increments)) if len(increments)
          else float("nan")}


def main(argv):
  del argv
  if FLAGS.programs_of:
    print(json.dumps(programs_of(FLAGS.programs_of)))
    return
  space = spaces.get_space(FLAGS.space)
  picks = _picks(space)
  b, s = FLAGS.batch_size, FLAGS.image_size
  images, labels = _inputs()
  results = {"space": space.name, "image_size": s, "batch_size": b,
             "num_models": FLAGS.num_models, "downsample": FLAGS.downsample,
             "configs": [c.label for c in picks], "environment": workdir_lib.environment(),
             "modes": {}}
  # Compilation and memory of each mode in a process of its own (memory freed by one mode
  # would otherwise show up as the other's).
  for mode in FLAGS.modes:
    argv = [sys.executable, os.path.abspath(__file__), f"--programs_of={mode}"] + [
        f"--{name}={FLAGS[name].value}" for name in
        ("space", "image_size", "batch_size", "num_models", "downsample", "configs")]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    results["modes"][mode] = r
    print(f"{mode}: built in {r['build_seconds']:.1f}s, first calls "
          f"{[round(t, 1) for t in r['first_call_seconds']]} s, resident memory "
          f"{[round(m) for m in r['rss_mb_after_each_program']]} MB", flush=True)
  trainers = {mode: _trainer(space, picks, mode)[0] for mode in FLAGS.modes}
  steady = {mode: [] for mode in trainers}
  for _ in range(FLAGS.repeats):
    for mode, trainer in trainers.items():
      _sync(trainer.search_step(picks[0], images, labels, images, labels))
      t0 = time.perf_counter()
      for _ in range(FLAGS.steps):
        out = trainer.search_step(picks[0], images, labels, images, labels)
      _sync(out)
      steady[mode].append((time.perf_counter() - t0) / FLAGS.steps)
  total_steps = FLAGS.epochs * FLAGS.steps_per_epoch
  for mode, times in steady.items():
    r = results["modes"][mode]
    r["step_seconds"] = statistics.median(times)
    r["step_seconds_repeats"] = times
    r["training_images_per_s"] = b / r["step_seconds"]
    compile_each = statistics.median(r["first_call_seconds"]) - r["step_seconds"]
    projected_compile = space.num_configs * compile_each
    r["projected"] = {
        "compile_seconds_all_configs": projected_compile,
        "compile_share": projected_compile / (projected_compile + total_steps
                                              * r["step_seconds"]),
        "programs_memory_mb": space.num_configs * r["rss_mb_per_further_program"]}
  lines = [f"{space.name}, {s} px, batch {b}, K={FLAGS.num_models}, {FLAGS.downsample}: "
           f"{len(picks)} configurations per mode",
           "", "| mode | time to first step (s) | first call per configuration (s, median) "
           "| step (s, median) | train img/s | memory per program (MB) | projected: "
           f"compile of all {space.num_configs} (min) | compile share of "
           f"{FLAGS.epochs}x{FLAGS.steps_per_epoch} steps | memory of all programs (GB) |",
           "|---|---|---|---|---|---|---|---|---|"]
  for mode, r in results["modes"].items():
    p = r["projected"]
    lines.append(f"| {mode} | {r['time_to_first_step_seconds']:.1f} | "
                 f"{statistics.median(r['first_call_seconds']):.1f} | {r['step_seconds']:.2f} | "
                 f"{r['training_images_per_s']:.1f} | {r['rss_mb_per_further_program']:.0f} | "
                 f"{p['compile_seconds_all_configs'] / 60:.0f} | {p['compile_share']:.2f} | "
                 f"{p['programs_memory_mb'] / 1024:.1f} |")
  results["table"] = "\n".join(lines)
  print(results["table"])
  if FLAGS.out:
    workdir_lib.atomic_write_json(FLAGS.out, results)


if __name__ == "__main__":
  app.run(main)
