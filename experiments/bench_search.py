r"""Benchmark of the search's compiled step against plain `keras.Model.fit`, side by side.

  python experiments/bench_search.py --out=experiments/results/bench_search.json

Measures, in one process on this machine, with medians over interleaved repeats:
  1. the search's steady-state training throughput (training images/s; each step also
     pays for the validation-batch forward and the score update), K=1 and K=4, with the
     configuration fixed to [4,3,3] and sampled uniformly over the 36;
  2. `keras.Model.fit(jit_compile=True)` on the stand-alone ResNet20 [4,3,3] built from
     standard Keras layers (export.to_functional), same widths, batch and input size,
     same tf.data input;
  1b. the K=1 step with the crop + flip inside the compiled step (`--augment_in_step`),
     which takes the augmentation out of the input pipeline (part 4 without it);
  3. compiled functions and trace+compile time over all 36 configurations, K=1 vs K=8
     (and K=4), interleaved per configuration so that machine load hits all K alike;
  4. the input pipeline's images/s on the real CIFAR-10 folder, with and without its
     augmentation (`--only_pipeline` measures this part alone).
Prints a table and writes JSON. Repeats are interleaved (fit, K=1, K=4, fit, ...) so that
load from other processes affects every variant alike; ratios are of medians.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from mixnas_tf import data as data_lib  # pylint: disable=wrong-import-position
from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf import workdir as workdir_lib  # pylint: disable=wrong-import-position
from mixnas_tf.exporting import keras_export as export  # pylint: disable=wrong-import-position
from mixnas_tf.methods import search  # pylint: disable=wrong-import-position
from mixnas_tf.nn import network  # pylint: disable=wrong-import-position
from mixnas_tf.training import trainer as trainer_lib  # pylint: disable=wrong-import-position

_DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "data", "cifar10")
flags.DEFINE_string("data", _DEFAULT_DATA, "Image folder with train/<class>/*.")
flags.DEFINE_string("out", "experiments/results/bench_search.json", "JSON output.")
flags.DEFINE_integer("batch_size", 128, "Batch size of every variant.")
flags.DEFINE_integer("steps", 20, "Timed steps per repeat.")
flags.DEFINE_integer("repeats", 5, "Interleaved repeats; medians are reported.")
flags.DEFINE_string("compile_configs", "all", "Configurations whose compilation is timed "
                    "(part 3) and that uniform sampling draws from.")
flags.DEFINE_list("compile_ks", ["1", "4", "8"], "K values whose compilation is timed.")
flags.DEFINE_bool("only_pipeline", False, "Measure the input pipeline only (part 4).")
FLAGS = flags.FLAGS


def _sync(value):
  return tf.nest.map_structure(lambda t: t.numpy(), value)


def pipeline_throughput(split, batch_size, repeats=3, batches=50, augment=True):
  rates = []
  for epoch in range(repeats):
    ds = data_lib.train_batches(split, batch_size=batch_size, image_size=32, seed=0,
                                epoch=epoch, augment=augment)
    it = iter(ds)
    next(it)  # Pipeline start-up is not throughput.
    t0 = time.perf_counter()
    for _ in range(batches):
      images, _ = next(it)
    images.numpy()
    rates.append(batches * batch_size / (time.perf_counter() - t0))
  return statistics.median(rates), rates


def main(argv):
  del argv
  space = spaces.get_space("resnet20")
  default = spaces.from_stages(space, space.default)
  configs = spaces.parse_configs(space, FLAGS.compile_configs)
  if default not in configs:
    configs = (default,) + configs
  b = FLAGS.batch_size
  keras.utils.set_random_seed(0)
  dataset = data_lib.load(f"folder:{FLAGS.data}")
  train, val = data_lib.split(dataset.train, 0.5, 0)
  results = {"batch_size": b, "steps_per_repeat": FLAGS.steps, "repeats": FLAGS.repeats,
             "environment": workdir_lib.environment(), "configs": len(configs)}

  # 4. Input pipeline, and what its augmentation (crop + flip) costs: interleaved.
  with_aug, without_aug = [], []
  for _ in range(3):
    with_aug.append(pipeline_throughput(train, b, repeats=1)[0])
    without_aug.append(pipeline_throughput(train, b, repeats=1, augment=False)[0])
  median = statistics.median(with_aug)
  results["pipeline_images_per_s"] = {"median": median, "repeats": with_aug}
  results["pipeline_without_augmentation_images_per_s"] = {
      "median": statistics.median(without_aug), "repeats": without_aug}
  print(f"input pipeline: {median:,.0f} images/s; without augmentation "
        f"{statistics.median(without_aug):,.0f} images/s", flush=True)
  if FLAGS.only_pipeline:
    workdir_lib.atomic_write_json(FLAGS.out, results)
    print(f"wrote {FLAGS.out}")
    return

  def batches(epoch, in_step=False):
    return iter(zip(
        data_lib.train_batches(train, batch_size=b, image_size=32, seed=0, epoch=epoch,
                               in_step=in_step),
        data_lib.stream_batches(val, batch_size=b, image_size=32, seed=1,
                                start_step=epoch * 1000)))

  # The search trainers (every configuration) and the plain Keras model.
  ks = sorted({1, 4} | {int(k) for k in FLAGS.compile_ks})
  trainers = {}
  for k in ks:
    model = network.SwitchableResNet(configs=configs, num_models=k, batchnorm="batch_stats",
                                    mean=dataset.mean, std=dataset.std)
    trainers[k] = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=10**6,
                               jit_compile=True,
                               mixture=trainer_lib.MixtureState(len(configs), k, seed=0))
  # The same K=1 search step without XLA (graph mode), for the XLA-or-not question.
  graph_model = network.SwitchableResNet(configs=[default], num_models=1,
                                        batchnorm="batch_stats", mean=dataset.mean,
                                        std=dataset.std)
  graph_trainer = trainer_lib.Trainer(graph_model, trainer_lib.OptimConfig(), total_steps=10**6,
                               jit_compile=False, mixture=trainer_lib.MixtureState(1, 1, seed=0))
  standalone_net = network.SwitchableResNet(configs=[default], num_models=1,
                                           batchnorm="standard", mean=dataset.mean,
                                           std=dataset.std)
  plain = export.to_functional(standalone_net, default)
  plain.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"],
                jit_compile=True)
  fit_data = data_lib.train_batches(train, batch_size=b, image_size=32, seed=0, epoch=0)

  # 3. Compilation over all configurations, interleaved across K.
  compile_s = {k: [] for k in ks}
  eval_compile_s = {k: [] for k in ks}
  probe = next(batches(0))
  (images, labels), (val_images, val_labels) = probe
  mask = tf.ones([b])
  for i, config in enumerate(configs):
    for k in ks:
      t0 = time.perf_counter()
      _sync(trainers[k].search_step(config, images, labels, val_images, val_labels))
      first = time.perf_counter() - t0
      t0 = time.perf_counter()
      _sync(trainers[k].search_step(config, images, labels, val_images, val_labels))
      compile_s[k].append(first - (time.perf_counter() - t0))
      if k in (1, 8) or len(ks) == 1:
        t0 = time.perf_counter()
        _sync(trainers[k].eval_step(config, tf.constant(0), images, labels, mask))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        _sync(trainers[k].eval_step(config, tf.constant(0), images, labels, mask))
        eval_compile_s[k].append(first - (time.perf_counter() - t0))
    print(f"  compiled {i + 1}/{len(configs)} {spaces.format_stages(spaces.to_stages(space, config))}: "
          + ", ".join(f"K={k} {compile_s[k][-1]:.1f}s" for k in ks), flush=True)
  results["compile"] = {
      f"K={k}": {"traces": trainers[k].trace_counts(),
                 "search_step_seconds_total": sum(compile_s[k]),
                 "eval_step_seconds_total": sum(eval_compile_s[k]) or None,
                 "search_step_seconds_per_config_median": statistics.median(compile_s[k])}
      for k in ks}
  big = max(ks)
  results["compile"]["ratio_search_step_K%d_over_K1" % big] = (
      sum(compile_s[big]) / sum(compile_s[1]))

  # 1 and 2. Steady-state throughput, interleaved repeats.
  sequence = search.config_sequence(0, 0, len(configs), 10**5)
  fit(plain, fit_data, FLAGS.steps)  # Compile fit's step.
  timings = {name: [] for name in ("fit", "K=1 fixed", "K=4 fixed", "K=1 uniform",
                                   "K=4 uniform", "K=1 fixed, no XLA",
                                   "K=1 fixed, augmentation in step")}
  variants = [(1, "fixed", trainers[1]), (4, "fixed", trainers[4]),
              (1, "uniform", trainers[1]), (4, "uniform", trainers[4]),
              (1, "fixed, no XLA", graph_trainer),
              (1, "fixed, augmentation in step", trainers[1])]
  position = 0
  for r in range(FLAGS.repeats):
    timings["fit"].append(fit(plain, fit_data, FLAGS.steps))
    for k, mode, trainer in variants:
      it = batches(r + 1, in_step=mode.endswith("in step"))
      next_batch = next(it)
      if mode in ("fixed, no XLA", "fixed, augmentation in step") and r == 0:
        # Its first call traces (and compiles).
        (images, labels), (val_images, val_labels) = next_batch
        _sync(trainer.search_step(default, images, labels, val_images, val_labels))
      t0 = time.perf_counter()
      out = None
      for s in range(FLAGS.steps):
        (images, labels), (val_images, val_labels) = next_batch
        config = configs[sequence[position + s]] if mode == "uniform" else default
        out = trainer.search_step(config, images, labels, val_images, val_labels)
        next_batch = next(it)
      _sync(out)
      timings[f"K={k} {mode}"].append(FLAGS.steps * b / (time.perf_counter() - t0))
    position += FLAGS.steps
    print(f"  repeat {r + 1}: " + ", ".join(f"{n} {v[-1]:.0f}" for n, v in timings.items()),
          flush=True)
  medians = {name: statistics.median(v) for name, v in timings.items()}
  results["throughput_images_per_s"] = {name: {"median": medians[name], "repeats": v}
                                        for name, v in timings.items()}
  results["ratios"] = {f"{name} / fit": medians[name] / medians["fit"]
                       for name in medians if name != "fit"}
  results["ratios"]["pipeline / K=1 fixed"] = median / medians["K=1 fixed"]
  results["traces_after_throughput"] = {f"K={k}": t.trace_counts()
                                        for k, t in trainers.items()}

  print()
  print(f"{'variant':<28}{'images/s (median)':>20}{'x fit':>8}")
  for name, value in medians.items():
    ratio = value / medians["fit"]
    print(f"{name:<28}{value:>20.1f}{ratio:>8.2f}")
  print(f"{'input pipeline':<28}{median:>20.0f}{median / medians['fit']:>8.1f}")
  print()
  for k in ks:
    c = results["compile"][f"K={k}"]
    print(f"K={k}: compiled search steps {c['traces']['search_step']}, eval steps "
          f"{c['traces']['eval_step']}; search-step compile total "
          f"{c['search_step_seconds_total']:.0f} s"
          + (f", eval-step {c['eval_step_seconds_total']:.0f} s"
             if c["eval_step_seconds_total"] else ""))
  print(f"compile time K={big} / K=1: "
        f"{results['compile']['ratio_search_step_K%d_over_K1' % big]:.2f}")
  workdir_lib.atomic_write_json(FLAGS.out, results)
  print(f"wrote {FLAGS.out}")


def fit(model, dataset, steps):
  """Images/s of `steps` steps of Model.fit on `dataset` (one call, no callbacks)."""
  t0 = time.perf_counter()
  model.fit(dataset.take(steps), epochs=1, verbose=0)
  return steps * FLAGS.batch_size / (time.perf_counter() - t0)


if __name__ == "__main__":
  app.run(main)
  sys.exit(0)
