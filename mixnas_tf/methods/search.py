"""The balanced-mixture search: data, network, mixture state, loop hooks, final ranking.

`run_search(config, workdir)` is what `python -m mixnas_tf.train` calls. Per epoch the host
sets the temperature and balances the assignment (mixture.py); per step it picks the
configuration (uniformly, from a sequence derived from (seed, epoch)) and the compiled
`Trainer.search_step` samples the weight set, trains it, scores one validation batch and
updates W. Everything random is derived from (seed, epoch, step), so a resumed run makes
the same decisions as an uninterrupted one.
"""

from collections.abc import Callable
import dataclasses
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf

from mixnas_tf import data as data_lib
from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import estimators
from mixnas_tf.methods import evaluate
from mixnas_tf.methods import mixture
from mixnas_tf.nn import network
from mixnas_tf.nn import ops
from mixnas_tf.training import distribute
from mixnas_tf.training import loop
from mixnas_tf.training import runtime
from mixnas_tf.training import trainer as trainer_lib

# Flags that may change when a run is resumed: they do not change its results.
RESUMABLE_FIELDS = frozenset({"tfds_data_dir", "log_every", "progress", "jit_compile",
                              "max_live_programs", "strategy", "compile_threads",
                              "augment_in_step"})


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Everything a search decides (written to flags.json). Defaults: ALGORITHM.md, CIFAR10."""
  dataset: str = "cifar10"
  tfds_data_dir: str | None = None
  image_size: int = 0
  skip_bad_images: bool = False
  space: str = "resnet20"
  configs: str = "all"
  num_models: int = 4
  shared_epochs: int = 0
  max_temperature: float = 100.0
  ema_decay: float = 0.9
  epochs: int = 100
  # What --epochs counts when K > 1: the whole run's epochs (the K sets share them, so each
  # gets about 1/K of the steps), or each weight set's (the run is K times as long; the
  # paper's protocol, README "How far to trust a ranking").
  budget: str = "total"
  batch_size: int = 128
  eval_batch_size: int = 256
  val_fraction: float = 0.5
  train_size: int = 0
  val_size: int = 0
  downsample: str = "maxpool"
  batchnorm: str = "batch_stats"
  learning_rate: float = 0.1
  min_learning_rate: float = 0.001
  momentum: float = 0.9
  weight_decay: float = 0.0
  # One epoch of linear warm-up: chosen by the fidelity study's rule, fixed before its numbers
  # (experiments/fidelity/README.md); the paper has none (its flagfiles say 0).
  warmup_epochs: int = 1
  precision: str = "float32"
  jit_compile: bool = True
  max_live_programs: int = trainer_lib.DEFAULT_MAX_LIVE_PROGRAMS
  compile_threads: int = 0  # 0: the host's cores.
  augment_in_step: bool = False
  seed: int = 0
  final_eval: str = "all_pairs"
  estimate: str = estimators.AUTO
  deterministic: bool = False
  strategy: str = "none"
  log_every: int = 50
  progress: bool = True

  def run_epochs(self, epochs: int | None = None) -> int:
    """Epochs over search-train that `epochs` (default --epochs) mean in this run: times K
    with --budget=per_set, where they count each weight set's epochs."""
    epochs = self.epochs if epochs is None else epochs
    return epochs * self.num_models if self.budget == "per_set" else epochs

  def optim(self, steps_per_epoch: int) -> trainer_lib.OptimConfig:
    return trainer_lib.OptimConfig(learning_rate=self.learning_rate,
                            min_learning_rate=self.min_learning_rate, schedule="cosine",
                            momentum=self.momentum, weight_decay=self.weight_decay,
                            # Counted like --epochs: with per_set each set gets the warm-up
                            # a K=1 run has, spread over K times the steps.
                            warmup_steps=self.run_epochs(self.warmup_epochs) * steps_per_epoch)


ESTIMATES = (estimators.AUTO, *estimators.ESTIMATORS)
BUDGETS = ("total", "per_set")

# A flag an older version did not have, whose default now differs from what that version did:
# its work directories resume only with this value (--warmup_epochs came with no warm-up).
BEFORE_THE_FLAG = {"warmup_epochs": 0}


def resume_defaults() -> dict:
  """What a saved flags.json that lacks a flag is taken to have meant (workdir.prepare)."""
  return {**dataclasses.asdict(SearchConfig()), **BEFORE_THE_FLAG}


def evaluates_all_pairs(cfg: SearchConfig) -> bool:
  """Whether the final evaluation covers every weight set of each configuration."""
  return evaluate.parse_final_eval(cfg.final_eval).pairs == "all_pairs"


def resolve_estimate(cfg: SearchConfig, workdir: str) -> str:
  """`cfg.estimate` with "auto" resolved (estimators.resolve). A run in `workdir` that
  started under "auto" keeps the estimator its flags.json recorded, so that a later
  version's choice for "auto" does not refuse its resume."""
  resolved = estimators.resolve(cfg.estimate, evaluates_all_pairs(cfg), cfg.num_models,
                                cfg.budget)
  path = os.path.join(workdir, "flags.json")
  if cfg.estimate != estimators.AUTO or not os.path.exists(path):
    return resolved
  try:
    saved = workdir_lib.read_json(path).get("estimate")
  except (OSError, ValueError, AttributeError):
    return resolved  # workdir.prepare names what is wrong with it.
  if saved in estimators.ESTIMATORS and saved != resolved:
    logging.info("--estimate=auto: keeping %s, the estimator this run started with "
                 "(auto is %s in this version)", saved, resolved)
    return saved
  return resolved


def validate(cfg: SearchConfig) -> tuple[spaces.SearchSpace, tuple[spaces.Config, ...]]:
  """Checks what can be checked without data; returns the space and the configurations."""
  space = spaces.get_space(cfg.space)
  configs = spaces.parse_configs(space, cfg.configs)
  checks = [
      (cfg.num_models >= 1, f"--num_models must be >= 1 (received {cfg.num_models})"),
      (cfg.num_models <= len(configs),
       f"--num_models={cfg.num_models} is more than the {len(configs)} configurations "
       "searched; use at most one weight set per configuration"),
      (cfg.epochs >= 1, f"--epochs must be a positive integer (received {cfg.epochs})"),
      (cfg.budget in BUDGETS,
       f"--budget must be one of {', '.join(BUDGETS)} (received {cfg.budget})"),
      (0 <= cfg.shared_epochs < cfg.run_epochs(),
       f"--shared_epochs must be in 0..{cfg.run_epochs() - 1}, below the run's "
       f"{cfg.run_epochs()} epochs (received {cfg.shared_epochs})"),
      (cfg.batch_size >= 1, f"--batch_size must be >= 1 (received {cfg.batch_size})"),
      (cfg.eval_batch_size >= 1,
       f"--eval_batch_size must be >= 1 (received {cfg.eval_batch_size})"),
      (0.0 < cfg.val_fraction < 1.0,
       f"--val_fraction must be in (0, 1) (received {cfg.val_fraction})"),
      (0.0 <= cfg.ema_decay < 1.0,
       f"--ema_decay must be in [0, 1) (received {cfg.ema_decay})"),
      # Scores are accuracies in [0, 1]; above T = 500 a weight set that trails on every
      # configuration could get p(m | c) = 0.0 in float64 and balancing could not go on.
      (1.0 <= cfg.max_temperature <= 500.0,
       f"--max_temperature must be in [1, 500] (received {cfg.max_temperature}); the "
       "paper's searches use 100 (CIFAR) to 300 (Food101)"),
      (cfg.train_size >= 0 and cfg.val_size >= 0,
       "--train_size and --val_size must be >= 0 (0 = the whole split)"),
      (cfg.learning_rate > 0 and cfg.min_learning_rate >= 0,
       "--learning_rate must be > 0 and --min_learning_rate >= 0"),
      (0 <= cfg.warmup_epochs <= cfg.epochs,
       f"--warmup_epochs must be in 0..{cfg.epochs}, --epochs (received "
       f"{cfg.warmup_epochs}); a warm-up as long as the run is a linear ramp alone"),

      (cfg.estimate in ESTIMATES,
       f"--estimate must be one of {', '.join(ESTIMATES)} (received {cfg.estimate})"),
      (evaluates_all_pairs(cfg) or cfg.estimate not in estimators.NEEDS_ALL_PAIRS,
       f"--estimate={cfg.estimate} needs every (configuration, weight set) pair evaluated: "
       "use --final_eval=all_pairs, or --estimate=assigned"),
      (cfg.precision in runtime.PRECISIONS,
       f"--precision must be one of {', '.join(runtime.PRECISIONS)} (received {cfg.precision})"),
      (cfg.downsample in ops.FIXED,
       f"--downsample must be one of {', '.join(ops.FIXED)} (received {cfg.downsample})"),
      (cfg.batchnorm in ("batch_stats", "standard"),
       f"--batchnorm must be batch_stats or standard (received {cfg.batchnorm})"),
      (cfg.log_every >= 1, f"--log_every must be >= 1 (received {cfg.log_every})"),
      (cfg.strategy in distribute.STRATEGIES,
       f"--strategy must be one of {', '.join(distribute.STRATEGIES)} "
       f"(received {cfg.strategy})"),
      (cfg.max_live_programs >= 1,
       f"--max_live_programs must be >= 1 (received {cfg.max_live_programs})"),
      distribute.augment_in_step_check(cfg.augment_in_step, cfg.strategy),
      (cfg.compile_threads >= 0,
       f"--compile_threads must be >= 0, 0 for the host's cores "
       f"(received {cfg.compile_threads})"),
  ]
  for ok, message in checks:
    if not ok:
      raise errors.UsageError(message)
  runtime.check_determinism(cfg.deterministic, cfg.jit_compile, cfg.downsample)
  return space, configs


def compile_jobs(trainer: trainer_lib.Trainer, cfg: SearchConfig, configs, image_size: int,
                 encoded: bool = False):
  """(step kind, configuration, argument specs) of every program a search runs: each
  configuration's search step and the final evaluation's step, in the searched order.
  `encoded`: the training images are JPEGs (augmented in the pipeline in any case)."""
  val_images = tf.TensorSpec([cfg.batch_size, image_size, image_size, 3], tf.uint8)
  images = val_images
  if cfg.augment_in_step and not encoded:
    images = data_lib.Deferred(images, tf.TensorSpec([2], tf.int64))
  labels = tf.TensorSpec([cfg.batch_size], tf.int32)
  eval_images = tf.TensorSpec([cfg.eval_batch_size, image_size, image_size, 3], tf.uint8)
  eval_labels = tf.TensorSpec([cfg.eval_batch_size], tf.int32)
  mask = tf.TensorSpec([cfg.eval_batch_size], tf.float32)
  all_sets = evaluates_all_pairs(cfg) and cfg.num_models > 1
  jobs = []
  for config in configs:
    jobs.append((trainer.search_step, config, (images, labels, val_images, labels)))
    if all_sets:
      jobs.append((trainer.eval_all_step, config, (eval_images, eval_labels, mask)))
    else:
      jobs.append((trainer.eval_step, config,
                   (tf.TensorSpec([], tf.int32), eval_images, eval_labels, mask)))
  return jobs


def compile_threads(requested: int, num_jobs: int) -> int:
  """Programs compiled at a time: `requested`, or the host's cores when 0."""
  return max(1, min(requested or os.cpu_count() or 1, num_jobs))


def config_sequence(seed: int, epoch: int, num_configs: int, steps: int) -> np.ndarray:
  """The configurations (indices into the searched list) of an epoch's steps: uniform."""
  return np.random.default_rng([seed, epoch, 7]).integers(0, num_configs, size=steps)


def load_search_data(cfg: SearchConfig):
  """The dataset and its search-train / search-validation parts (seeded split)."""
  dataset = data_lib.load(cfg.dataset, image_size=cfg.image_size,
                          tfds_data_dir=cfg.tfds_data_dir,
                          skip_bad_images=cfg.skip_bad_images,
                          load_test=False)
  train, val = data_lib.split(dataset.train, cfg.val_fraction, cfg.seed)
  train = data_lib.subsample(train, cfg.train_size or None, cfg.seed)
  val = data_lib.subsample(val, cfg.val_size or None, cfg.seed + 1)
  data_lib.steps_per_epoch(train, cfg.batch_size)  # Raises when the batch is too large.
  if len(val) < cfg.batch_size:
    raise errors.UsageError(
        f"batch size {cfg.batch_size} is larger than the search-validation split "
        f"({len(val)} images); lower --batch_size or raise --val_size/--val_fraction")
  return dataset, train, val


def run_search(cfg: SearchConfig, workdir: str,
               after_step: Callable[[int], None] | None = None) -> dict | None:
  """Runs or resumes a search in `workdir`; returns the results, or None if interrupted.

  A multi-worker run's workers other than the chief write to a directory of their own
  (distribute.run_workdir)."""
  cfg = dataclasses.replace(cfg, dataset=data_lib.canonical_spec(cfg.dataset))
  space, configs = validate(cfg)
  strategy = distribute.make(cfg.strategy)
  distribute.check_batch(strategy, batch_size=cfg.batch_size,
                         eval_batch_size=cfg.eval_batch_size)
  # Every worker resolves "auto" against the chief's (the user's) directory.
  cfg = dataclasses.replace(cfg, estimate=resolve_estimate(cfg, workdir))
  return _held_search(cfg, distribute.run_workdir(strategy, workdir), space, configs,
                      strategy, after_step)


@workdir_lib.holding
def _held_search(cfg: SearchConfig, workdir: str, space, configs, strategy,
                 after_step) -> dict | None:
  with runtime.op_determinism(cfg.deterministic):
    return _run_search(cfg, space, configs, workdir, strategy, after_step)


def _run_search(cfg: SearchConfig, space: spaces.SearchSpace, configs, workdir: str,
                strategy, after_step) -> dict | None:
  started = time.perf_counter()
  workdir_lib.acquire_existing(workdir)
  dataset, train, val = load_search_data(cfg)
  steps = data_lib.steps_per_epoch(train, cfg.batch_size)
  resumed = workdir_lib.prepare(
      workdir, dataclasses.asdict(cfg), ignore=RESUMABLE_FIELDS,
      defaults=resume_defaults(),
      extra={"search_space.json": {
          **spaces.describe(space),
          "searched": [spaces.to_index(space, c) for c in configs],
          "split": {"search_train": len(train), "search_val": len(val),
                    "steps_per_epoch": steps},
          "classes": list(dataset.class_names),
          "dataset_fingerprint": dataset.fingerprint,
          "skipped_images": list(dataset.skipped)}})
  workdir_lib.check_dataset(workdir, "search_space.json", dataset.name, dataset.fingerprint,
                            resumed)
  results_path = os.path.join(workdir, "results.json")
  if resumed and os.path.exists(results_path):
    # Finished: keep its results (and their timings and trace counts) as they are.
    logging.info("%s is complete: %s", workdir, results_path)
    return workdir_lib.read_json(results_path)
  logging.info("%s search in %s: %d configurations, K=%d, %d epochs x %d steps (--budget=%s), "
               "search-train %d / search-val %d images.", "Resuming" if resumed else "Starting",
               workdir, len(configs), cfg.num_models, cfg.run_epochs(), steps, cfg.budget,
               len(train), len(val))
  runtime.set_seeds(cfg.seed)
  runtime.set_precision(cfg.precision)
  with distribute.scope(strategy):  # Mirrored variables under a strategy.
    model = network.SwitchableResNet(
        space=space.name, configs=configs, num_models=cfg.num_models,
        num_classes=dataset.num_classes, downsample=cfg.downsample, batchnorm=cfg.batchnorm,
        image_size=dataset.image_size,
        mean=dataset.mean, std=dataset.std)
    mixture_state = trainer_lib.MixtureState(len(configs), cfg.num_models, cfg.seed,
                                             ema_decay=cfg.ema_decay,
                                             shared=cfg.shared_epochs > 0)
  # Epochs of one shared SuperNet before the K sets split from it (none when K = 1).
  shared_epochs = cfg.shared_epochs if cfg.num_models > 1 else 0
  xla, policy = runtime.compile_policy(cfg.jit_compile, len(configs), cfg.max_live_programs,
                                       cfg.strategy)
  logging.info("Compile policy: %s.", policy)
  trainer = trainer_lib.Trainer(model, cfg.optim(steps), total_steps=cfg.run_epochs() * steps,
                                precision=cfg.precision, jit_compile=xla,
                                mixture=mixture_state, max_live_programs=cfg.max_live_programs,
                                strategy=strategy)
  image_size = dataset.image_size
  if xla:
    # Every program traced now, in the searched order: the same names in every run of these
    # settings, so XLA's persistent cache serves another seed or a resume (Programs.trace).
    # Then all of them compiled before the first step, several at a time.
    t0 = time.perf_counter()
    jobs = compile_jobs(trainer, cfg, configs, dataset.image_size, train.encoded)
    for programs, config, specs in jobs:
      programs.trace(config, *specs)
    traced = time.perf_counter() - t0
    threads = compile_threads(cfg.compile_threads, len(jobs))
    trainer.compile_ahead(jobs, threads)
    compiled = time.perf_counter() - t0 - traced
    logging.info("Traced the search and evaluation steps of %d configurations in %.1f s and "
                 "compiled them in %.1f s (%d at a time).", len(configs), traced, compiled,
                 threads)
    traced += compiled
  else:
    traced = 0.0
  samples: list = []  # [config index, model index tensor] per step, in order.
  sequences: dict[int, np.ndarray] = {}
  # Compilation (steps that traced) and the time from this process's start of the run to
  # its first finished step (data loading, building, the first compilation).
  timing = {"compile_seconds": traced, "first_step_seconds": None, "policy": policy}
  # Configurations whose program ran in this process (compiled ahead: all of them).
  first_called: set[int] = set(range(len(configs))) if xla else set()

  def epoch_begin(epoch, start_step):
    if epoch >= shared_epochs and bool(mixture_state.shared.numpy()):
      # The shared warm-up is over: the K sets continue from set 0 (weights, momentum,
      # scores). Checkpointed with the flag, so a resume never splits twice.
      trainer.copy_weight_set(0)
      mixture_state.split_shared()
      logging.info("Epoch %d: the %d weight sets split from the shared SuperNet.",
                   epoch + 1, cfg.num_models)
    # The temperature rises from 1 to its maximum over the mixture's own epochs.
    temperature = mixture.temperature(max(epoch - shared_epochs, 0),
                                      cfg.run_epochs() - shared_epochs, cfg.max_temperature)
    if start_step == 0:
      divisor = mixture.epoch_balance(mixture_state.scores.numpy().astype(np.float64),
                                      temperature)
      mixture_state.temperature.assign(temperature)
      mixture_state.log_divisor.assign(np.log(divisor).astype(np.float32))
    # else: resuming mid-epoch, the epoch's balancing (computed from the scores at its
    # start) was restored from the checkpoint; the current scores must not replace it.
    sequences.clear()
    sequences[epoch] = config_sequence(cfg.seed, epoch, len(configs), steps)
    return {"search/temperature": float(temperature)}

  def batches(epoch, start, epochs):
    train_batches = data_lib.train_batches(train, batch_size=cfg.batch_size,
                                           image_size=image_size, seed=cfg.seed, epoch=epoch,
                                           start_step=start, epochs=epochs,
                                           in_step=cfg.augment_in_step)
    val_batches = data_lib.stream_batches(val, batch_size=cfg.batch_size,
                                          image_size=image_size, seed=cfg.seed + 1,
                                          start_step=epoch * steps + start)
    # The stream is endless, so the zip holds the training batches' count (the loop checks it).
    return tf.data.Dataset.zip((train_batches, val_batches))

  def step(epoch, step_in_epoch, batch):
    (images, labels), (val_images, val_labels) = batch
    c = int(sequences[epoch][step_in_epoch])
    before = trainer.trace_counts()["search_step"]
    t0 = time.perf_counter()
    out = trainer.search_step(configs[c], images, labels, val_images, val_labels)
    if c not in first_called or trainer.trace_counts()["search_step"] != before:
      # A program's first call compiles it (XLA; or reads it from the persistent cache),
      # and a retrace traces it again: wait for it before timing.
      out["model"].numpy()
      timing["compile_seconds"] += time.perf_counter() - t0
      first_called.add(c)
    if timing["first_step_seconds"] is None:
      out["model"].numpy()
      timing["first_step_seconds"] = time.perf_counter() - started
    samples.append((c, out["model"]))
    return out

  def epoch_end(epoch, means):
    scores = mixture_state.scores.numpy().astype(np.float64)
    temperature = float(mixture_state.temperature.numpy())
    divisor = np.exp(mixture_state.log_divisor.numpy().astype(np.float64))
    probs = mixture.assignment_probs(scores, temperature, divisor)
    if bool(mixture_state.shared.numpy()):
      probs = np.eye(cfg.num_models)[np.zeros(len(configs), int)]  # All on the shared set.
    record = {"search/assignment_entropy": mixture.assignment_entropy(probs),
              "compile/search_step_traces": trainer.trace_counts()["search_step"],
              "compile/seconds": timing["compile_seconds"],
              "compile/live_programs": trainer.search_step.live}
    # The epoch's weight-set indices were left on the device during the epoch; fetch
    # them once, so checkpoints only ever serialise ints.
    samples[-steps:] = [(c, int(m)) for c, m in samples[-steps:]]
    epoch_models = np.array([m for _, m in samples[-steps:]])
    for m, share in enumerate(mixture.model_shares(probs)):
      record[f"search/share_model_{m}"] = float(share)
      record[f"search/steps_model_{m}"] = int(np.sum(epoch_models == m))
    record["search/scores"] = scores.tolist()
    return record

  def state():
    return {"samples": [[c, int(m)] for c, m in samples],
            "compile_seconds": timing["compile_seconds"],
            "first_step_seconds": timing["first_step_seconds"]}

  def restore(extra):
    samples[:] = [tuple(s) for s in extra.get("samples", [])]
    timing["compile_seconds"] = extra.get("compile_seconds", 0.0)
    timing["first_step_seconds"] = extra.get("first_step_seconds")

  hooks = loop.LoopHooks(batches=batches, step=step, epoch_begin=epoch_begin,
                         epoch_end=epoch_end, state=state, restore=restore,
                         after_step=after_step)
  status = loop.run_epochs(workdir=workdir, trainer=trainer, hooks=hooks, epochs=cfg.run_epochs(),
                           steps_per_epoch=steps, log_every=cfg.log_every,
                           progress=cfg.progress, hparams=loop.hparams_of(cfg))
  if status == "interrupted":
    return None
  history = workdir_lib.read_json(os.path.join(workdir, "state.json"))["history"]
  return evaluate.finish_search(
      cfg=cfg, space=space, configs=configs, dataset=dataset, val=val, trainer=trainer,
      workdir=workdir, history=history, samples=[[c, int(m)] for c, m in samples],
      compile_policy=policy)
