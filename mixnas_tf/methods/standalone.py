"""Training one configuration from scratch: the library behind retrain, exhaustive and tune.

A stand-alone network is the same `SwitchableResNet` as the search's SuperNets with one
configuration, one weight set (K = 1) and standard BatchNorm; it is trained by the same
`Trainer.train_step` and `loop.run_epochs`. `train_standalone` writes the run's flags
first, checkpoints, resumes, and writes `metrics.json` atomically at the end.

With `downsample="diffstride"` the configuration is the DiffStride network's initial
strides; with XLA the steps receive the network's size plan instead
(`SwitchableResNet.static_config`, read from the strides before every step; without XLA
the sizes are computed in-graph), and metrics.json adds what the strides learned
(`diffstride.summarize`).
"""

from collections.abc import Callable
import dataclasses
import os
import time

from absl import logging
import keras
import tensorflow as tf

from mixnas_tf import data as data_lib
from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import diffstride as diffstride_lib
from mixnas_tf.nn import network
from mixnas_tf.nn import ops
from mixnas_tf.training import checkpoint
from mixnas_tf.training import distribute
from mixnas_tf.training import loop
from mixnas_tf.training import runtime
from mixnas_tf.training import trainer as trainer_lib

RESUMABLE_FIELDS = frozenset({"tfds_data_dir", "log_every", "progress", "jit_compile",
                              "strategy", "augment_in_step"})
EVAL_SPLITS = ("test", "holdout")
# Fields that only a "diffstride" run reads; other runs leave them out of flags.json.
DIFFSTRIDE_FIELDS = ("smoothness_factor", "stride_regularizer")


@dataclasses.dataclass(frozen=True)
class StandaloneConfig:
  """Everything a stand-alone training run decides (written to flags.json)."""
  dataset: str = "cifar10"
  tfds_data_dir: str | None = None
  image_size: int = 0
  skip_bad_images: bool = False
  space: str = "resnet20"
  config: str = "4,3,3"
  downsample: str = "maxpool"
  epochs: int = 30
  batch_size: int = 128
  eval_batch_size: int = 256
  learning_rate: float = 0.1
  min_learning_rate: float = 0.0
  schedule: str = "cosine"
  step_boundaries: tuple[float, ...] = (0.5, 0.75)
  step_decay: float = 0.1
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 5e-4
  label_smoothing: float = 0.0
  warmup_epochs: int = 0
  train_size: int = 0
  test_size: int = 0
  # Where the reported accuracy comes from: the dataset's test split ("test"; an image
  # folder without PATH/test falls back to a held-out part of train), or always a
  # held-out part of train ("holdout", for model selection without touching test).
  eval_split: str = "test"
  holdout_fraction: float = 0.1
  precision: str = "float32"
  jit_compile: bool = True
  augment_in_step: bool = False  # The same batches; the crop + flip in the compiled step.
  # downsample="diffstride" only: the ramp width R of every DiffStride layer, and the
  # weight of the stride cost penalty (SwitchableResNet.stride_cost).
  smoothness_factor: float = 4.0
  stride_regularizer: float = 0.0
  # Per-layer widths other than the space's (width search, methods/widths.py): output
  # widths and inner widths, one per layer; empty: the space's. And the weight of the l1
  # penalty on the BatchNorm scales that learns channel importance.
  widths: tuple[int, ...] = ()
  inner_widths: tuple[int, ...] = ()
  gamma_l1: float = 0.0
  # `seed` drives initialisation, data order and augmentation; `data_seed` the held-out
  # split and the subsamples, so that runs with several seeds (retrain --seeds, the
  # exhaustive table) are all scored on the same images, and each run's flags.json says
  # which ones.
  seed: int = 0
  data_seed: int = 0
  deterministic: bool = False
  strategy: str = "none"
  log_every: int = 50
  progress: bool = True

  def optim(self, steps_per_epoch: int) -> trainer_lib.OptimConfig:
    return trainer_lib.OptimConfig(
        learning_rate=self.learning_rate, min_learning_rate=self.min_learning_rate,
        schedule=self.schedule, momentum=self.momentum, nesterov=self.nesterov,
        weight_decay=self.weight_decay, label_smoothing=self.label_smoothing,
        warmup_steps=self.warmup_epochs * steps_per_epoch,
        step_boundaries=tuple(self.step_boundaries), step_decay=self.step_decay)


def validate_settings(cfg: StandaloneConfig) -> spaces.SearchSpace:
  """`validate` of everything but `cfg.config`, for commands that train many
  configurations (exhaustive, tune): `config` then keeps its default, "4,3,3", which only
  ResNet20 parses, so the space's own default configuration stands in for it."""
  space = spaces.get_space(cfg.space)
  default = ",".join(str(n) for n in space.default)
  return validate(dataclasses.replace(cfg, config=default))[0]


def validate(cfg: StandaloneConfig) -> tuple[spaces.SearchSpace, spaces.Config]:
  space = spaces.get_space(cfg.space)
  config = spaces.parse_config(space, cfg.config)
  checks = [
      (cfg.epochs >= 1, f"--epochs must be a positive integer (received {cfg.epochs})"),
      (cfg.batch_size >= 1 and cfg.eval_batch_size >= 1,
       "--batch_size and --eval_batch_size must be >= 1"),
      (cfg.learning_rate > 0, f"--learning_rate must be > 0 (received {cfg.learning_rate})"),
      (cfg.schedule in ("cosine", "step", "constant"),
       f"--schedule must be cosine, step or constant (received {cfg.schedule})"),
      (0 < cfg.step_decay <= 1,
       f"--step_decay must be in (0, 1] (received {cfg.step_decay})"),
      (all(0 < b < 1 for b in cfg.step_boundaries),
       f"--step_boundaries are fractions of training in (0, 1) "
       f"(received {list(cfg.step_boundaries)})"),
      (0 <= cfg.label_smoothing < 1,
       f"--label_smoothing must be in [0, 1) (received {cfg.label_smoothing})"),
      (cfg.eval_split in EVAL_SPLITS,
       f"--eval_split must be one of {', '.join(EVAL_SPLITS)} (received {cfg.eval_split})"),
      (0 < cfg.holdout_fraction < 1,
       f"--holdout_fraction must be in (0, 1) (received {cfg.holdout_fraction})"),
      (cfg.precision in runtime.PRECISIONS,
       f"--precision must be one of {', '.join(runtime.PRECISIONS)} (received {cfg.precision})"),
      (cfg.train_size >= 0 and cfg.test_size >= 0 and cfg.warmup_epochs >= 0,
       "--train_size, --test_size and --warmup_epochs must be >= 0"),
      (cfg.downsample in ops.ALL,
       f"--downsample must be one of {', '.join(ops.ALL)} "
       f"(received {cfg.downsample})"),
      (cfg.smoothness_factor > 0,
       f"--smoothness_factor must be > 0 (received {cfg.smoothness_factor})"),
      (cfg.stride_regularizer >= 0,
       f"--stride_regularizer must be >= 0 (received {cfg.stride_regularizer})"),
      (cfg.stride_regularizer == 0 or cfg.downsample == "diffstride",
       "--stride_regularizer applies to --downsample=diffstride only"),
      (cfg.gamma_l1 >= 0, f"--gamma_l1 must be >= 0 (received {cfg.gamma_l1})"),
      (cfg.strategy in distribute.STRATEGIES,
       f"--strategy must be one of {', '.join(distribute.STRATEGIES)} "
       f"(received {cfg.strategy})"),
      distribute.augment_in_step_check(cfg.augment_in_step, cfg.strategy),
  ]
  for ok, message in checks:
    if not ok:
      raise errors.UsageError(message)
  runtime.check_determinism(cfg.deterministic, cfg.jit_compile, cfg.downsample)
  if cfg.widths:
    try:
      network_space(cfg, space)
    except ValueError as e:
      raise errors.UsageError(f"widths {list(cfg.widths)} do not fit {space.name}: {e}") \
          from None
  return space, config


def load_data(cfg: StandaloneConfig):
  """(dataset, train split, evaluation split, name of the evaluation split)."""
  dataset = data_lib.load(cfg.dataset, image_size=cfg.image_size,
                          tfds_data_dir=cfg.tfds_data_dir,
                          skip_bad_images=cfg.skip_bad_images,
                          load_test=cfg.eval_split == "test")
  if cfg.eval_split == "test" and dataset.test is not None:
    train, test, test_name = dataset.train, dataset.test, dataset.test_split_name
  else:
    train, test = data_lib.split(dataset.train, cfg.holdout_fraction, cfg.data_seed)
    test_name = f"holdout {cfg.holdout_fraction:g} of train (data seed {cfg.data_seed})"
  train = data_lib.subsample(train, cfg.train_size or None, cfg.data_seed)
  test = data_lib.subsample(test, cfg.test_size or None, cfg.data_seed + 1)
  data_lib.steps_per_epoch(train, cfg.batch_size)  # Raises when the batch is too large.
  return dataset, train, test, test_name


def network_space(cfg: StandaloneConfig, space: spaces.SearchSpace) -> spaces.SearchSpace:
  """The space with the run's own widths, if it has any."""
  if not cfg.widths:
    return space
  return spaces.with_widths(space, cfg.widths, cfg.inner_widths)


def build(cfg: StandaloneConfig, space, config, dataset) -> network.SwitchableResNet:
  """The stand-alone network of `config` (K = 1, standard BatchNorm)."""
  learned = {}
  if cfg.downsample == "diffstride":
    learned = dict(diffstride={"smoothness_factor": cfg.smoothness_factor},
                   stride_regularizer=cfg.stride_regularizer)
  return network.SwitchableResNet(
      space=network_space(cfg, space), configs=[config], num_models=1,
      num_classes=dataset.num_classes, downsample=cfg.downsample, batchnorm="standard",
      mean=dataset.mean, std=dataset.std, image_size=dataset.image_size,
      gamma_l1=cfg.gamma_l1, **learned)


def train_standalone(cfg: StandaloneConfig, workdir: str,
                     after_step: Callable[[int], None] | None = None,
                     loaded=None, initialize: Callable | None = None) -> dict | None:
  """Trains (or resumes) `cfg.config` from scratch in `workdir`; returns metrics.json.

  Args:
    cfg: the run's settings.
    workdir: the run's directory.
    after_step: test hook called with the global step after each step.
    loaded: optional result of `load_data(cfg)` to share data across runs in a process.
    initialize: optional `initialize(model)` applied to a fresh network before training
      (e.g. inherited weights); a resumed run restores its checkpoint instead.

  Returns:
    The metrics (also in `workdir/metrics.json`), or None if interrupted. A multi-worker
    run's workers other than the chief write to a directory of their own
    (distribute.run_workdir).
  """
  cfg = dataclasses.replace(cfg, dataset=data_lib.canonical_spec(cfg.dataset))
  validate(cfg)
  strategy = distribute.make(cfg.strategy)
  distribute.check_batch(strategy, batch_size=cfg.batch_size,
                         eval_batch_size=cfg.eval_batch_size)
  return _held_standalone(cfg, distribute.run_workdir(strategy, workdir), strategy,
                          after_step, loaded, initialize)


@workdir_lib.holding
def _held_standalone(cfg: StandaloneConfig, workdir: str, strategy, after_step, loaded,
                     initialize) -> dict | None:
  with runtime.op_determinism(cfg.deterministic):
    return _train_standalone(cfg, workdir, strategy, after_step, loaded, initialize)


def _train_standalone(cfg: StandaloneConfig, workdir: str, strategy, after_step, loaded,
                      initialize=None) -> dict | None:
  space, config = validate(cfg)
  metrics_path = os.path.join(workdir, "metrics.json")
  flags = dataclasses.asdict(cfg)
  if cfg.downsample != "diffstride":
    flags = {k: v for k, v in flags.items() if k not in DIFFSTRIDE_FIELDS}
  if os.path.exists(metrics_path):
    # A finished run: check that it is the same run, without loading any data.
    workdir_lib.prepare(workdir, flags, ignore=RESUMABLE_FIELDS,
                        defaults=dataclasses.asdict(StandaloneConfig()))
    logging.info("%s is complete: %s", workdir, metrics_path)
    return workdir_lib.read_json(metrics_path)
  workdir_lib.acquire_existing(workdir)
  dataset, train, test, test_name = loaded or load_data(cfg)
  steps = data_lib.steps_per_epoch(train, cfg.batch_size)
  runtime.set_precision(cfg.precision)
  runtime.set_seeds(cfg.seed)
  with distribute.scope(strategy):  # Mirrored variables under a strategy.
    model = build(cfg, space, config, dataset)
    if initialize is not None:
      initialize(model)
  resumed = workdir_lib.prepare(workdir, flags, ignore=RESUMABLE_FIELDS,
                                defaults=dataclasses.asdict(StandaloneConfig()), extra={
      "run.json": {"config": config.record(),
                   "dataset_fingerprint": dataset.fingerprint,
                   "skipped_images": list(dataset.skipped),
                   "model": model.get_config(), "image_size": dataset.image_size,
                   "train_images": len(train), "eval_images": len(test),
                   "eval_split": test_name, "steps_per_epoch": steps,
                   "classes": list(dataset.class_names)}})
  workdir_lib.check_dataset(workdir, "run.json", dataset.name, dataset.fingerprint, resumed)
  trainer = trainer_lib.Trainer(model, cfg.optim(steps), total_steps=cfg.epochs * steps,
                                precision=cfg.precision, jit_compile=cfg.jit_compile,
                                strategy=strategy)
  k = tf.constant(0, tf.int32)

  def step_config():
    return model.static_config(config, dataset.image_size, static_shapes=cfg.jit_compile)

  def batches(epoch, start, epochs):
    return data_lib.train_batches(train, batch_size=cfg.batch_size,
                                  image_size=dataset.image_size, seed=cfg.seed, epoch=epoch,
                                  start_step=start, epochs=epochs,
                                  in_step=cfg.augment_in_step)

  def step(epoch, step_in_epoch, batch):
    images, labels = batch
    return trainer.train_step(step_config(), k, images, labels)

  def eval_batches():
    return data_lib.eval_batches(test, batch_size=cfg.eval_batch_size,
                                 image_size=dataset.image_size)

  hooks = loop.LoopHooks(batches=batches, step=step, after_step=after_step)
  if cfg.downsample == "diffstride":
    hooks.epoch_end = lambda epoch, means: diffstride_lib.epoch_scalars(model)
  status = loop.run_epochs(workdir=workdir, trainer=trainer, hooks=hooks, epochs=cfg.epochs,
                           steps_per_epoch=steps, log_every=cfg.log_every,
                           progress=cfg.progress, hparams=loop.hparams_of(cfg))
  if status == "interrupted":
    return None
  t0 = time.time()
  result = trainer.evaluate(step_config(), 0, eval_batches())
  state = workdir_lib.read_json(os.path.join(workdir, "state.json"))
  metrics = {
      "config": config.record(),
      "dataset": cfg.dataset,
      "eval_split": test_name,
      "test_accuracy": result["accuracy"],
      "test_loss": result["loss"],
      "test_images": result["count"],
      "per_class_accuracy": dict(zip(dataset.class_names, result["per_class_accuracy"])),
      "train_accuracy_last_epoch": state["history"][-1].get("train/accuracy"),
      "params": model.count_params_per_model(config),
      # A DiffStride network's cost is that of its learned sizes (summarize, below).
      "macs": None if cfg.downsample == "diffstride" else model.costs(
          config, dataset.image_size)["macs"],
      "epochs": cfg.epochs,
      "train_seconds": state.get("elapsed"),
      "eval_seconds": time.time() - t0,
      "trace_counts": trainer.trace_counts(),
      "seed": cfg.seed,
  }
  if cfg.downsample == "diffstride":
    # "config" is the initial configuration; "macs" the cost at the learned strides.
    metrics.update(diffstride_lib.summarize(model, dataset.image_size))
  workdir_lib.atomic_write_json(metrics_path, metrics)
  logging.info("%s: test accuracy %.4f on %d images", spaces.format_stages(
      spaces.to_stages(space, config)), metrics["test_accuracy"], metrics["test_images"])
  return metrics


def restore_model(workdir: str) -> tuple[network.SwitchableResNet, dict]:
  """Rebuilds a finished run's network (float32) and restores its trained weights.

  Returns:
    (model, run) where run is the run's `run.json` (configuration, classes, image size).
  """
  run_path = os.path.join(workdir, "run.json")
  if not os.path.exists(run_path):
    raise errors.UsageError(f"{workdir} holds no stand-alone training run (no run.json)")
  run = workdir_lib.read_json(run_path)
  cfg = workdir_lib.read_json(os.path.join(workdir, "flags.json"))
  previous_policy = keras.mixed_precision.global_policy()
  runtime.set_precision("float32")
  try:
    # Float32 whatever the run trained in: the weights are float32, and the export (a
    # float32 Keras model) is checked against this network.
    model = network.SwitchableResNet.from_config({**run["model"], "dtype": "float32"})
    # The run's precision gives the trainer its state (float16's loss scale) to restore.
    trainer = trainer_lib.Trainer(model, trainer_lib.OptimConfig(), total_steps=1,
                                  precision=cfg.get("precision", "float32"), jit_compile=False)
    state = checkpoint.Checkpointer(workdir, trainer).restore()
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  if state is None or state["epoch"] < cfg["epochs"]:
    raise errors.UsageError(f"the run in {workdir} has not finished training; "
                            "run the same command again to complete it first")
  return model, run
