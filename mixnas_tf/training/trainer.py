"""The compiled steps every command shares, over one network and its optimiser state.

`Trainer` owns a `SwitchableResNet`, its optimizer state and (for a search) the mixture
state, and exposes three compiled functions, each traced once per configuration:
  - `train_step(config, model_index, images, labels)`: one SGD step on one weight set;
  - `search_step(config, images, labels, val_images, val_labels)`: samples the weight set
    from the balanced assignment, runs the same training body, forwards one validation
    batch and updates the score matrix, all in one call (no host round trip);
  - `eval_step(config, model_index, images, labels, mask)`: sums for accuracy and loss.
The weight set is a tensor argument everywhere, so the number of compiled functions does
not grow with K.
"""

from collections.abc import Iterable
from collections.abc import Sequence
from concurrent import futures
import dataclasses
import logging as logging_std
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf.data import pipeline
from mixnas_tf.training import distribute
from mixnas_tf.training import optim
from mixnas_tf.training.programs import DEFAULT_MAX_LIVE_PROGRAMS
from mixnas_tf.training.programs import Programs


class _ExpectedRetracing(logging_std.Filter):
  """Drops TF's retracing warning: the steps trace once per configuration by design
  (the configuration fixes the shapes), and the loop logs its own trace counts."""

  def filter(self, record):
    return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_ExpectedRetracing())


class MixtureState(tf.Module):
  """The score matrix W [C, K] and the epoch's balancing, as variables of the step.

  `log_divisor` [K] holds the log of the product of the column marginals that the epoch's
  balancing divided by (mixture.balance, largest entry 1), computed in float64 on the host:
  the smallest divisors can reach 1e-200 at T = 100..300 and would underflow in float32,
  their logs do not. `temperature` is the epoch's T. Both are set on the host once per epoch; sampling
  and the score update run inside the compiled step.
  """

  def __init__(self, num_configs: int, num_models: int, seed: int, ema_decay: float = 0.9,
               shared: bool = False):
    super().__init__(name="mixture")
    self.num_models = num_models
    self.scores = tf.Variable(tf.ones([num_configs, num_models]), trainable=False,
                              name="scores")
    # While True, every step trains weight set 0 (the shared warm-up of a search whose
    # sets are split from one SuperNet, `split_shared`); a tensor, so no retrace.
    self.shared = tf.Variable(bool(shared) and num_models > 1, trainable=False,
                              name="shared")
    self.log_divisor = tf.Variable(tf.zeros([num_models]), trainable=False,
                                   name="log_divisor")
    self.temperature = tf.Variable(1.0, trainable=False, name="temperature")
    # A variable, not a constant of the compiled step: runs that differ only in their seed
    # compile the same program, so XLA's persistent cache serves the second one.
    self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="seed")
    self.ema_decay = float(ema_decay)

  def probs(self, config_index: int):
    """p(m | c) [K]: softmax(T * W[c]) with the epoch's divisions re-applied."""
    return tf.nn.softmax(self.logits(config_index))

  def logits(self, config_index: int):
    """log p(m | c) up to a constant: T * W[c] - log(divisor)."""
    return self.temperature * self.scores[config_index] - self.log_divisor

  def sample(self, config_index: int, step):
    """Draws m ~ p(m | c), statelessly from (seed, step): resumes make the same draws.

    Inverse-CDF sampling with one stateless uniform: XLA has no kernel for
    StatelessMultinomial on the CPU, and this is as cheap.
    """
    if self.num_models == 1:
      return tf.constant(0, tf.int32)
    seed = tf.stack([tf.identity(self.seed), tf.cast(step, tf.int64)])
    u = tf.random.stateless_uniform([], seed=seed)
    cdf = tf.cumsum(self.probs(config_index))
    index = tf.reduce_sum(tf.cast(cdf <= u * cdf[-1], tf.int32))
    return tf.where(self.shared, 0, tf.minimum(index, self.num_models - 1))

  def split_shared(self) -> None:
    """Ends the shared warm-up: every set's scores start from the shared set's."""
    self.scores.assign(tf.tile(self.scores[:, :1], [1, self.num_models]))
    self.shared.assign(False)

  def update(self, config_index: int, model_index, accuracy):
    """W[c, m] <- decay * W[c, m] + (1 - decay) * accuracy."""
    row = self.scores[config_index]
    old = tf.gather(row, model_index)  # (ResourceGatherNd has no XLA kernel.)
    new = self.ema_decay * old + (1.0 - self.ema_decay) * tf.cast(accuracy, tf.float32)
    distribute.write_slice(self.scores, config_index,
                    tf.tensor_scatter_nd_update(row, tf.reshape(model_index, [1, 1]), new[None]))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """Optimisation hyper-parameters shared by every command."""
  learning_rate: float = 0.1
  min_learning_rate: float = 0.001
  schedule: str = "cosine"
  momentum: float = 0.9
  nesterov: bool = False
  weight_decay: float = 0.0
  label_smoothing: float = 0.0
  warmup_steps: int = 0
  step_boundaries: tuple[float, ...] = (0.5, 0.75)
  step_decay: float = 0.1

  @staticmethod
  def parse_boundaries(raw: Iterable[Any]) -> tuple[float, ...]:
    """--step_boundaries as numbers (fractions of training), or one UsageError line."""
    raw = list(raw)
    try:
      return tuple(float(b) for b in raw)
    except (TypeError, ValueError):
      raise errors.UsageError(
          f"--step_boundaries must be comma-separated numbers, fractions of training such "
          f"as 0.5,0.75 (received {','.join(map(str, raw))})") from None


def _tf_variable(var) -> tf.Variable:
  """The tf.Variable behind a Keras 3 variable (or `var` itself)."""
  return var.value if isinstance(var, keras.Variable) else var


class Trainer(tf.Module):
  """Compiled steps over one `SwitchableResNet` and its optimizer state.

  Args:
    model: the network (its `configs` are the configurations the steps accept).
    optim_config: optimisation hyper-parameters.
    total_steps: training steps in the whole run (for the learning-rate schedule).
    precision: one of PRECISIONS (the model must have been built under that policy).
    jit_compile: compile the steps with XLA.
    mixture: a MixtureState for a search; None otherwise.
    max_live_programs: compiled programs kept alive per step kind (`Programs`).
    strategy: a tf.distribute strategy whose scope built the model, or None (one
      device). The trainer creates its own variables in the scope; its steps run
      data-parallel with the semantics of distribute.py, in graph mode.
  """

  def __init__(self, model, optim_config: OptimConfig, total_steps: int,
               precision: str = "float32", jit_compile: bool = True,
               mixture: MixtureState | None = None,
               max_live_programs: int = DEFAULT_MAX_LIVE_PROGRAMS, strategy=None):
    super().__init__(name="trainer")
    with distribute.scope(strategy):
      self._init(model, optim_config, total_steps, precision, jit_compile, mixture,
                 max_live_programs, strategy)

  def _init(self, model, optim_config, total_steps, precision, jit_compile, mixture,
            max_live_programs, strategy):
    self.model = model
    self.optim_config = optim_config
    self.total_steps = int(total_steps)
    o = optim_config
    self._schedule = optim.schedule(
        schedule=o.schedule, base=o.learning_rate, total_steps=self.total_steps,
        minimum=o.min_learning_rate, warmup_steps=o.warmup_steps,
        boundaries=o.step_boundaries, decay=o.step_decay)
    self.precision = precision
    self.mixture = mixture
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    self.model_steps = tf.Variable(tf.zeros([model.num_models], tf.int64), trainable=False,
                                   name="model_steps")
    self.optimizer = optim.SlicedSGD(model.trainable_variables, momentum=optim_config.momentum,
                                     weight_decay=optim_config.weight_decay,
                                     nesterov=optim_config.nesterov)
    self.loss_scale = optim.DynamicLossScale() if precision == "mixed_float16" else None
    self._config_index = {c: i for i, c in enumerate(model.configs)}
    self.jit_compile = bool(jit_compile) and strategy is None
    self.strategy = strategy
    self.train_step, self.search_step, self.eval_step, self.eval_all_step = (
        Programs(fn, self.jit_compile, max_live_programs, strategy)
        for fn in (self._train_step, self._search_step, self._eval_step, self._eval_all_step))

  def copy_weight_set(self, source: int = 0) -> None:
    """Sets every weight set (weights, BatchNorm statistics, momentum) to set `source`.

    Splits K SuperNets from one: after a shared warm-up on set 0, the K sets continue
    from the same point (few-shot NAS, Zhao et al. 2021).
    """
    stacked = (list(self.model.trainable_variables) + list(self.model.non_trainable_variables)
               + list(self.optimizer.slots))
    k = self.model.num_models
    for var in stacked:
      if var.shape[0] != k:
        raise ValueError(f"{var.name} is not stacked over the {k} weight sets "
                         f"(shape {var.shape})")
      value = _tf_variable(var)
      value.assign(tf.repeat(value[source:source + 1], k, axis=0))

  def state_variables(self) -> list[tf.Variable]:
    """Every variable a step can change: weights, BatchNorm statistics, momentum, the
    step counters, the mixture's state and the loss scale."""
    out = [_tf_variable(v) for v in self.model.variables]
    out += list(self.optimizer.slots) + [self.step, self.model_steps]
    for module in (self.mixture, self.loss_scale):
      if module is not None:
        out += list(module.variables)
    return out

  def compile_ahead(self, jobs: Sequence[tuple["Programs", Any, Sequence[tf.TensorSpec]]],
                    threads: int) -> None:
    """Compiles programs before they are first needed, `threads` at a time.

    Each job is (step kind, configuration, argument specs, possibly nested); its program,
    traced already, runs once on zeros of those specs. XLA compiles a program on its first call, and TF
    releases the variables' locks while it compiles (tensorflow/compiler/jit/kernels/
    xla_ops.cc), so programs called from several threads compile concurrently, up to the
    host's cores. Every variable those calls changed is then put back, so the run that
    follows is the run that would have compiled each program on first use.
    """
    variables = self.state_variables()
    saved = [tf.identity(v) for v in variables]

    def run(job):
      programs, config, specs = job
      args = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), specs)
      tf.nest.map_structure(lambda t: t.numpy(), programs(config, *args))

    try:
      if threads <= 1:
        for job in jobs:
          run(job)
      else:
        with futures.ThreadPoolExecutor(threads, thread_name_prefix="compile") as pool:
          list(pool.map(run, jobs))
    finally:
      for var, value in zip(variables, saved):
        var.assign(value)

  def trace_counts(self) -> dict[str, int]:
    """Programs traced (and, with XLA, compiled) by each step kind so far."""
    return {name: getattr(self, name).traces
            for name in ("train_step", "search_step", "eval_step", "eval_all_step")}

  def program_counts(self) -> dict[str, dict[str, int]]:
    """Per step kind: programs traced, alive now, and dropped by the LRU bound."""
    return {name: {"traced": p.traces, "live": p.live, "evicted": p.evictions}
            for name, p in (("train_step", self.train_step), ("search_step", self.search_step),
                            ("eval_step", self.eval_step),
                            ("eval_all_step", self.eval_all_step))}

  def learning_rate(self, step=None):
    return self._schedule(self.step if step is None else step)

  def _loss(self, labels, logits):
    smoothing = self.optim_config.label_smoothing
    onehot = tf.one_hot(labels, self.model.num_classes, dtype=tf.float32)
    if smoothing:
      onehot = onehot * (1.0 - smoothing) + smoothing / self.model.num_classes
    return tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits)

  def _train_body(self, config, model_index, images, labels) -> dict[str, tf.Tensor]:
    """One SGD step of weight set `model_index` in configuration `config` (traced inline).

    On R replicas (distribute.py) each replica's loss is its sub-batch mean / R and the
    sliced gradients are SUM-all-reduced before the one update every replica applies.
    """
    variables = self.model.trainable_variables
    images = pipeline.materialize(images)  # A `Deferred` batch is augmented here.
    replicas = distribute.num_replicas_here()
    with tf.GradientTape() as tape:
      logits = self.model(images, config=config, model_index=model_index, training=True)
      loss = tf.reduce_mean(self._loss(labels, logits))
      # Terms the model adds with `add_loss` (e.g. the DiffStride cost penalty).
      extra = [tf.cast(term, tf.float32) for term in self.model.losses]
      regularization = tf.add_n(extra) if extra else None
      total = loss + regularization if extra else loss
      if replicas > 1:
        total = total / replicas
      scaled = total * self.loss_scale.scale if self.loss_scale else total
    grads = distribute.all_reduce_sum(
        self.optimizer.slice(tape.gradient(scaled, variables), model_index))
    finite = None
    if self.loss_scale:
      inv = 1.0 / self.loss_scale.scale
      grads = [None if g is None else g * inv for g in grads]
      finite = optim.all_finite(grads)
      self.loss_scale.update(finite)
    lr = self.learning_rate()
    self.optimizer.apply_sliced(grads, model_index, lr, apply_mask=finite)
    self.step.assign_add(1)
    self.model_steps.assign_add(tf.one_hot(model_index, self.model.num_models,
                                           dtype=tf.int64))
    accuracy = distribute.mean(tf.cast(
        tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32))
    metrics = {"loss": distribute.mean(loss), "accuracy": accuracy, "learning_rate": lr}
    if extra:
      metrics["regularization_loss"] = regularization
    return metrics

  def _train_step(self, config, model_index, images, labels):
    return self._train_body(tuple(config), tf.convert_to_tensor(model_index, tf.int32),
                            images, labels)

  def _search_step(self, config, images, labels, val_images, val_labels):
    config = tuple(config)
    c = self._config_index[config]
    model_index = self.mixture.sample(c, self.step)
    metrics = self._train_body(config, model_index, images, labels)
    val_logits = self.model(val_images, config=config, model_index=model_index,
                            training=False)
    val_accuracy = distribute.mean(tf.cast(
        tf.equal(tf.argmax(val_logits, -1, output_type=tf.int32), val_labels), tf.float32))
    self.mixture.update(c, model_index, val_accuracy)
    return {**metrics, "val_batch_accuracy": val_accuracy, "model": model_index}

  def _eval_step(self, config, model_index, images, labels, mask):
    logits = self.model(images, config=tuple(config),
                        model_index=tf.convert_to_tensor(model_index, tf.int32),
                        training=False)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                      tf.float32) * mask
    n = self.model.num_classes
    return distribute.all_reduce_sum({
        "correct": tf.reduce_sum(correct),
        "loss": tf.reduce_sum(self._loss(labels, logits) * mask),
        "count": tf.reduce_sum(mask),
        "class_correct": tf.math.unsorted_segment_sum(correct, labels, n),
        "class_count": tf.math.unsorted_segment_sum(mask, labels, n),
    })

  def _eval_all_step(self, config, images, labels, mask):
    """Correct predictions and loss sums of every weight set [K] on one batch: one
    program and one pass over the data per configuration, however many sets."""
    correct, loss = [], []
    for k in range(self.model.num_models):
      out = self._eval_step(config, tf.constant(k, tf.int32), images, labels, mask)
      correct.append(out["correct"])
      loss.append(out["loss"])
    return {"correct": tf.stack(correct), "loss": tf.stack(loss), "count": out["count"]}

  def evaluate_all(self, config, batches: Iterable) -> list[dict[str, float]]:
    """Accuracy and mean loss of every weight set in `config` over `batches`."""
    sums = None
    for images, labels, mask in batches:
      out = self.eval_all_step(tuple(config), images, labels, mask)
      sums = out if sums is None else {name: sums[name] + out[name] for name in out}
    if sums is None:
      raise ValueError("evaluate_all() received no batches")
    count = float(sums["count"].numpy())
    return [{"accuracy": float(c) / count, "loss": float(l) / count, "count": int(count)}
            for c, l in zip(sums["correct"].numpy(), sums["loss"].numpy())]

  def evaluate(self, config, model_index: int, batches: Iterable) -> dict[str, Any]:
    """Accuracy, mean loss and per-class accuracy of (config, weight set) over `batches`.

    `batches` yields (images, labels, mask) with full, static-shape batches.
    """
    sums = None
    k = tf.constant(model_index, tf.int32)
    for images, labels, mask in batches:
      out = self.eval_step(tuple(config), k, images, labels, mask)
      sums = out if sums is None else {name: sums[name] + out[name] for name in out}
    if sums is None:
      raise ValueError("evaluate() received no batches")
    sums = {name: value.numpy() for name, value in sums.items()}
    count = float(sums["count"])
    with np.errstate(invalid="ignore", divide="ignore"):
      per_class = np.where(sums["class_count"] > 0,
                           sums["class_correct"] / np.maximum(sums["class_count"], 1), np.nan)
    return {"accuracy": float(sums["correct"]) / count, "loss": float(sums["loss"]) / count,
            "count": int(count), "per_class_accuracy": [None if math.isnan(a) else float(a)
                                                        for a in per_class]}
