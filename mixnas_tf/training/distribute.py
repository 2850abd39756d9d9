"""Data-parallel training past one device with tf.distribute (`--strategy`).

"none" runs everything on one device, as before. "mirrored" (`MirroredStrategy`, every
GPU of the machine, or every logical CPU device where there is none) and "multi_worker"
(`MultiWorkerMirroredStrategy`, the machines of `TF_CONFIG`) run the same compiled steps
data-parallel, with these semantics:

- Batches: the global batch (the `--batch_size` value) comes from the same pipeline as on
  one device and is split into equal contiguous parts, part r to replica r (`split`); so
  the batch size must be divisible by the number of replicas. Every worker builds the same
  global batches (same seeds) and keeps its own replicas' parts.
- Gradients: each replica's loss is its sub-batch mean divided by the number of replicas
  (its sum divided by the global batch), and the gradients are SUM-all-reduced
  (`all_reduce_sum`): the gradient of the global batch's mean loss.
- Updates: every replica applies the same one optimizer update (the all-reduced gradient,
  the same step, learning rate and sampled weight set) to its own copy of each variable
  (`VariableAggregation.NONE`: no merge call), so the copies stay identical.
- BatchNorm: statistics are synchronized: the mean and variance are those of the global
  batch (`moments` all-reduces the sums), in training and in the batch-statistics
  evaluation of a search; moving statistics, updated from them, stay identical.
- Metrics (loss, accuracy, the search's validation accuracy, evaluation sums) are
  all-reduced inside the step, so every replica returns the global value.
So a run with R replicas computes the one-device run's numbers, up to floating-point
reduction order (tests/test_distribute.py). The steps run in graph mode, not XLA: the
cross-replica all-reduces go through tf.distribute's merge calls, which an XLA-compiled
replica function cannot contain.
"""

import contextlib
import functools
import hashlib
import json
import os
import tempfile

import tensorflow as tf

from mixnas_tf import errors

STRATEGIES = ("none", "mirrored", "multi_worker")


def augment_in_step_check(augment_in_step: bool, strategy: str) -> tuple[bool, str]:
  """(ok, message) of --augment_in_step under `strategy`: its `Deferred` batches carry one
  augmentation key, which `split` cannot divide among replicas."""
  return (not augment_in_step or strategy == "none",
          "--augment_in_step needs --strategy=none (a deferred batch cannot be split "
          "across replicas)")


@functools.lru_cache(maxsize=None)
def make(name: str) -> tf.distribute.Strategy | None:
  """The process's strategy of that name (one per process: a MultiWorkerMirroredStrategy
  can be created only once), or None for "none"."""
  if name not in STRATEGIES:
    raise errors.UsageError(f"--strategy must be one of {', '.join(STRATEGIES)} "
                            f"(received {name})")
  if name == "none":
    return None
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if not os.environ.get("TF_CONFIG"):
    raise errors.UsageError("--strategy=multi_worker needs TF_CONFIG (the cluster's workers "
                            "and this process's task; README, 'Past one GPU')")
  try:
    json.loads(os.environ["TF_CONFIG"])
  except ValueError:
    raise errors.UsageError("TF_CONFIG is not valid JSON") from None
  return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy: tf.distribute.Strategy | None) -> int:
  return strategy.num_replicas_in_sync if strategy is not None else 1


def check_batch(strategy, **batch_sizes: int) -> None:
  """A one-line UsageError unless every batch size divides into the replicas."""
  n = replicas(strategy)
  for name, size in batch_sizes.items():
    if size % n:
      raise errors.UsageError(f"--{name}={size} does not split across the {n} replicas of "
                              f"the strategy: use a multiple of {n}")


def scope(strategy):
  """The strategy's scope (variables created in it are mirrored), or nothing."""
  return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_chief(strategy) -> bool:
  """Whether this process writes the run's files: always, except a multi-worker run's
  workers other than worker 0."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  return resolver.task_type in (None, "chief") or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def run_workdir(strategy, workdir: str) -> str:
  """Where this process writes: `workdir` for the chief, a directory of its own under the
  system's temporary directory for the other workers of a multi-worker run (their
  checkpoints and results duplicate the chief's; TF's recommendation)."""
  if is_chief(strategy):
    return workdir
  resolver = strategy.cluster_resolver
  digest = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:8]
  name = f"{os.path.basename(workdir)}-{digest}.{resolver.task_type}{resolver.task_id}"
  return os.path.join(tempfile.gettempdir(), "mixnas_tf_workers", name)


def _replica_context():
  ctx = tf.distribute.get_replica_context()
  return ctx if ctx is not None and ctx.num_replicas_in_sync > 1 else None


def num_replicas_here() -> int:
  """Replicas of the step being traced (1 outside a strategy)."""
  ctx = _replica_context()
  return ctx.num_replicas_in_sync if ctx is not None else 1


def all_reduce_sum(values):
  """Sums a structure of tensors over the replicas (identity on one device)."""
  ctx = _replica_context()
  return values if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def mean(values: tf.Tensor) -> tf.Tensor:
  """The mean of `values` [B_local, ...] over the global batch (equal sub-batches)."""
  local = tf.reduce_mean(values)
  n = num_replicas_here()
  return local if n == 1 else all_reduce_sum(local) / n


def moments(x: tf.Tensor, axes):
  """`tf.nn.moments` over the global batch: synchronized BatchNorm statistics."""
  n = num_replicas_here()
  if n == 1:
    return tf.nn.moments(x, axes=axes)
  mean_ = all_reduce_sum(tf.reduce_mean(x, axis=axes)) / n
  variance = all_reduce_sum(tf.reduce_mean(
      tf.math.squared_difference(x, tf.stop_gradient(mean_)), axis=axes)) / n
  return mean_, variance


def write_slice(variable, index, value) -> None:
  """variable[index] = value: one slice of a stacked variable (a tf.Variable).

  `scatter_update`, not `scatter_nd_update`: a tf.distribute MirroredVariable implements
  the former only.
  """
  variable.scatter_update(tf.IndexedSlices(value[None], tf.reshape(index, [1])))


def split(strategy, args):
  """Distributes a step's arguments: tensors with a batch axis are split into equal
  contiguous parts, one per replica (global replica order); scalars go to every replica."""

  def part(ctx):
    r, n = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
    return tuple(a if a.shape.rank == 0 else a[r * (a.shape[0] // n):(r + 1) * (a.shape[0] // n)]
                 for a in tensors)

  tensors = tuple(tf.convert_to_tensor(a) for a in args)
  return strategy.experimental_distribute_values_from_function(part)


def first_replica(strategy, values):
  """One replica's copy of values every replica holds equally (the all-reduced outputs)."""
  return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)
