"""Seeded splits and subsamples of an `ArraySplit`, and the checks of counts and seeds."""

import math

import numpy as np

from mixnas_tf import errors
from mixnas_tf.data.sources import is_int
from mixnas_tf.data.storage import ArraySplit

# ----------------------------------------------------------------------------
# Splitting.


def split(data: ArraySplit, val_fraction: float,
          seed: int) -> tuple[ArraySplit, ArraySplit]:
  """Splits at random into (train part, validation part).

  Args:
    data: the split to divide.
    val_fraction: share of the examples for the validation part, in (0, 1);
      it gets round(N * val_fraction) examples (halves rounded up).
    seed: seed of the permutation; the same seed gives the same parts.

  Returns:
    (train_part, val_part), disjoint, together all of `data`, each in the
    original order of `data`.

  Raises:
    errors.UsageError: the fraction is outside (0, 1) or a part would be empty.
  """
  if (isinstance(val_fraction, bool) or
      not isinstance(val_fraction, (int, float)) or
      not 0.0 < val_fraction < 1.0):
    raise errors.UsageError(
        f"validation fraction must be between 0 and 1 (exclusive); received: "
        f"{val_fraction!r}")
  n = len(data)
  num_val = math.floor(n * val_fraction + 0.5)
  if not 0 < num_val < n:
    raise errors.UsageError(
        f"splitting {n} images with validation fraction {val_fraction} leaves "
        f"{'the validation' if num_val == 0 else 'the training'} part empty; "
        "use a fraction that gives both parts at least one image")
  order = np.random.default_rng(check_seed(seed)).permutation(n)
  return (data.take(np.sort(order[num_val:])),
          data.take(np.sort(order[:num_val])))


def subsample(data: ArraySplit, size: int | None, seed: int) -> ArraySplit:
  """Keeps `size` examples chosen at random (seeded), in their original order.

  Args:
    data: the split.
    size: how many examples to keep; None or 0 keeps `data` as it is.
    seed: seed of the choice.

  Returns:
    The subsample (`data` itself when nothing is dropped).

  Raises:
    errors.UsageError: `size` is negative or larger than the split.
  """
  if not size:
    return data
  if not is_int(size) or size < 0:
    raise errors.UsageError(
        f"subsample size must be a positive number of images (0: all); "
        f"received: {size!r}")
  if size > len(data):
    raise errors.UsageError(
        f"subsample size {size} is larger than the split ({len(data)} images)")
  if size == len(data):
    return data
  order = np.random.default_rng(check_seed(seed)).permutation(len(data))
  return data.take(np.sort(order[:size]))


def check_seed(seed: int) -> int:
  check_count("seed", seed)
  return int(seed)


def check_count(what: str, value: int) -> None:
  if not is_int(value) or value < 0:
    raise errors.UsageError(
        f"{what} must be a non-negative integer; received: {value!r}")


def check_batch_size(batch_size: int) -> None:
  if not is_int(batch_size) or batch_size < 1:
    raise errors.UsageError(
        f"batch size must be a positive integer; received: {batch_size!r}")
