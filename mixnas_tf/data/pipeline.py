"""Batches by index: training epochs, the search's validation stream, evaluation.

* `train_batches(epoch=e, start_step=k)` yields exactly batches k, k+1, ... of
  `train_batches(epoch=e)`: the order is a permutation derived from (seed, epoch) and the
  augmentation randomness from (seed, epoch, step), with stateless random ops and no
  hidden state.
* `stream_batches` is the endless per-step validation stream of the search: its batch k
  does not depend on where the stream was started.
* `eval_batches` covers a split once, in a fixed shuffled order, with full batches only
  (static shapes for XLA) and a mask for the wrapped-around padding.
"""

from typing import NamedTuple
import weakref

import numpy as np
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf.data import storage
from mixnas_tf.data.splits import check_batch_size
from mixnas_tf.data.splits import check_count
from mixnas_tf.data.splits import check_seed
from mixnas_tf.data.splits import is_int
from mixnas_tf.data.storage import ArraySplit

# Zero padding of the CIFAR-style random crop (ALGORITHM.md).
CROP_PADDING = 4
# RandomResizedCrop (Inception crop) ranges of the reference / torchvision.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# Evaluation of large images: resize the shorter side to round(S / 0.875), then
# centre-crop S (256 -> 224, the usual ImageNet protocol).
EVAL_CROP_FRACTION = 0.875
# Seed of the fixed order in which evaluation visits a split (see eval_order).
EVAL_ORDER_SEED = 20230611
# The random algorithm of the crop + flip, named rather than "auto_select": TF's CPU
# kernels and XLA then draw the same numbers, so a batch augmented inside the compiled
# step (`Deferred`) equals the one the pipeline makes (auto_select gave XLA other draws).
_IN_STEP_RNG = "philox"
# Tags that separate the random streams derived from one user seed.
_TRAIN_ORDER = 1
_TRAIN_AUGMENT = 2
_STREAM_ORDER = 3
_STREAM_AUGMENT = 4

# ----------------------------------------------------------------------------
# Batching.


class Deferred(NamedTuple):
  """A training batch whose augmentation is left to the compiled step.

  `images` are the gathered, not yet augmented uint8 images and `key` the stateless seed
  the pipeline would have augmented them with: `materialize` inside the step gives the
  very batch `train_batches(..., in_step=False)` yields, computed on the device.
  """
  images: tf.Tensor
  key: tf.Tensor


def materialize(images):
  """The augmented images of a `Deferred` batch; any other batch as it is."""
  if isinstance(images, Deferred):
    return pad_crop_flip(images.images, images.key)
  return images


def steps_per_epoch(data: ArraySplit, batch_size: int) -> int:
  """Number of full batches in one pass over `data` (the remainder is dropped).

  Raises:
    errors.UsageError: the batch size is not positive or exceeds the split.
  """
  check_batch_size(batch_size)
  if batch_size > len(data):
    raise errors.UsageError(
        f"batch size {batch_size} is larger than the split ({len(data)} "
        "images)")
  return len(data) // batch_size


def num_eval_batches(data: ArraySplit, batch_size: int) -> int:
  """Number of batches of `eval_batches`: ceil(N / batch_size)."""
  check_batch_size(batch_size)
  if not len(data):
    raise errors.UsageError("cannot evaluate on an empty split")
  return -(-len(data) // batch_size)


def train_batches(data: ArraySplit, *, batch_size: int, image_size: int,
                  seed: int, epoch: int, start_step: int = 0, epochs: int | None = None,
                  augment: bool = True, in_step: bool = False) -> tf.data.Dataset:
  """Training epochs of shuffled, augmented batches: `epoch` (from `start_step`) to
  `epochs - 1`, or `epoch` alone.

  The order is a permutation of `data` derived from (seed, epoch); the last
  N mod batch_size examples of the permutation are dropped. Augmentation
  (random crop from 4-pixel zero padding + flip for small images;
  RandomResizedCrop + flip for JPEGs) is random per (seed, epoch, step,
  position in batch), so a resumed epoch equals an uninterrupted one.

  Args:
    data: the split.
    batch_size: B.
    image_size: S; must equal the stored size of uint8 splits.
    seed: the run's seed.
    epoch: epoch number (0-based), selects the permutation.
    start_step: first batch of `epoch` to yield; earlier ones are skipped without
      being built.
    epochs: go on through epoch `epochs - 1` (default `epoch + 1`: one epoch). A run
      reads all its epochs from one iterator: each tf.data iterator dropped at an epoch's
      end cost the search up to a minute of idle time (BUILD_NOTES).
    augment: whether to augment; without it JPEGs are centre-cropped like in
      evaluation.
    in_step: leave the crop + flip of stored uint8 images to the compiled step: the
      images come as a `Deferred` batch (the step calls `materialize`), which takes
      the augmentation off the host's cores. JPEGs (decoded on the host) ignore it.

  Returns:
    A finite dataset of `(epochs - epoch) * steps_per_epoch - start_step` elements
    (images uint8 `[B, S, S, 3]`, labels int32 `[B]`).
  """
  steps = steps_per_epoch(data, batch_size)
  seed = check_seed(seed)
  check_count("epoch", epoch)
  check_count("start step", start_step)
  epochs = epoch + 1 if epochs is None else epochs
  if epochs <= epoch:
    raise errors.UsageError(f"epochs ({epochs}) must be above the first epoch ({epoch})")
  if start_step > steps:
    raise errors.UsageError(
        f"start step {start_step} is beyond the epoch's {steps} steps")
  order_key, augment_key = _seed(seed, _TRAIN_ORDER), _seed(seed, _TRAIN_AUGMENT)
  index = _epoch_index_batches(len(data), batch_size, steps, order_key, augment_key,
                               tf.constant(epoch, tf.int64), start_step)
  if epochs > epoch + 1:
    index = index.concatenate(tf.data.Dataset.range(epoch + 1, epochs).flat_map(
        lambda e: _epoch_index_batches(len(data), batch_size, steps, order_key,
                                       augment_key, e, 0)))
  ds = _make_batches(index, data, batch_size, image_size, augment,
                     defer=augment and in_step)
  return ds.apply(tf.data.experimental.assert_cardinality(
      (epochs - epoch) * steps - start_step))


def stream_batches(data: ArraySplit, *, batch_size: int, image_size: int,
                   seed: int, start_step: int = 0,
                   augment: bool = False) -> tf.data.Dataset:
  """An endless stream of batches: consecutive seeded epochs of `data`.

  Batch k is batch k mod steps of the permutation of epoch k // steps
  (steps = N // B), whatever `start_step` the stream was started at: resuming
  a search at step k is `start_step=k`.

  Args:
    data: the split (N >= batch_size).
    batch_size: B.
    image_size: S; must equal the stored size of uint8 splits.
    seed: the run's seed.
    start_step: index of the first batch to yield.
    augment: whether to augment like `train_batches`.

  Returns:
    An infinite dataset of (images uint8 `[B, S, S, 3]`, labels int32 `[B]`).
  """
  steps = steps_per_epoch(data, batch_size)
  seed = check_seed(seed)
  check_count("start step", start_step)
  first_epoch, first_step = divmod(start_step, steps)
  order_key = _seed(seed, _STREAM_ORDER)
  augment_key = _seed(seed, _STREAM_AUGMENT)
  # The first (partial) epoch is sliced like a resumed training epoch; the
  # rest are generated inside the graph, one epoch per counter value.
  head = _epoch_index_batches(len(data), batch_size, steps, order_key,
                              augment_key, tf.constant(first_epoch, tf.int64),
                              first_step)
  tail = tf.data.Dataset.counter(first_epoch + 1, dtype=tf.int64).flat_map(
      lambda epoch: _epoch_index_batches(len(data), batch_size, steps,
                                         order_key, augment_key, epoch, 0))
  # Endless by construction; said so, so that a zip with it has the other side's count.
  return _make_batches(head.concatenate(tail), data, batch_size, image_size,
                       augment).apply(
                           tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def eval_order(n: int) -> np.ndarray:
  """The fixed order in which `eval_batches` visits a split of n examples.

  A seeded permutation, not the stored order: an image folder is stored class by
  class, and the SuperNet's BatchNorm normalises with the statistics of the
  batch even at evaluation, so batches of one class would be normalised with
  that class's statistics (measured on a CIFAR-10 search: 0.13-0.21 accuracy
  on class-sorted batches against 0.37 on shuffled ones, same weights). The
  order is the same for every run, so evaluations stay comparable.
  """
  return np.random.default_rng(EVAL_ORDER_SEED).permutation(n).astype(np.int32)


def eval_batches(data: ArraySplit, *, batch_size: int, image_size: int,
                 passes: int | None = 1) -> tf.data.Dataset:
  """Every example once, in the fixed shuffled `eval_order`, in full batches.

  The last batch is completed by wrapping around to the start of that order,
  with mask 0 on the repeated examples: every batch has the static shape XLA
  wants, and the padding is made of real images, because the SuperNet's
  BatchNorm uses the statistics of the batch even at evaluation.

  Args:
    data: the split (N >= 1).
    batch_size: B.
    image_size: S; must equal the stored size of uint8 splits.
    passes: how many times to go through the split, the same batches each time;
      None: endlessly. The passes are repeated before the batches are made, so
      one iterator (and its parallel map and prefetch) serves them all.

  Returns:
    A dataset of `passes * num_eval_batches(data, B)` elements (images uint8
    `[B, S, S, 3]`, labels int32 `[B]`, mask float32 `[B]`); sum of a pass's
    masks = N.
  """
  if passes is not None and (not is_int(passes) or passes < 1):
    raise errors.UsageError(f"passes must be a positive integer or None; received: {passes!r}")
  num_batches = num_eval_batches(data, batch_size)
  positions = np.arange(num_batches * batch_size).reshape(num_batches,
                                                          batch_size)
  indices = eval_order(len(data))[positions % len(data)]
  masks = (positions < len(data)).astype(np.float32)
  repeat = -1 if passes is None else passes
  index = tf.data.Dataset.from_tensor_slices(
      (indices, np.zeros([num_batches, 2], np.int64))).repeat(repeat)
  ds = _make_batches(index, data, batch_size, image_size, augment=False)
  ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(masks).repeat(repeat)))
  ds = ds.map(lambda batch, mask: (batch[0], batch[1], mask))
  return ds.apply(tf.data.experimental.assert_cardinality(
      tf.data.INFINITE_CARDINALITY if passes is None else passes * num_batches))


def _seed(seed: int, tag: int) -> tf.Tensor:
  """Stateless-RNG seed int64 `[2]` for one purpose (`tag`) of a run's seed."""
  return tf.constant([seed, tag], tf.int64)


def _epoch_index_batches(n: int, batch_size: int, steps: int,
                         order_key: tf.Tensor, augment_key: tf.Tensor,
                         epoch: tf.Tensor, start_step: int) -> tf.data.Dataset:
  """Index batches of one epoch, from `start_step` on.

  Works eagerly and inside `flat_map` (where `epoch` is a graph tensor).

  Returns:
    A dataset of (indices int32 `[B]`, augmentation seed int64 `[2]`).
  """
  order = tf.random.experimental.stateless_shuffle(
      tf.range(n, dtype=tf.int32),
      seed=tf.random.experimental.stateless_fold_in(order_key, epoch))
  indices = tf.reshape(order[:steps * batch_size], [steps, batch_size])
  epoch_key = tf.random.experimental.stateless_fold_in(augment_key, epoch)
  # stateless_split(key, steps)[k] depends only on (key, k): slicing it keeps
  # each step's augmentation whatever the start step.
  step_keys = tf.random.experimental.stateless_split(epoch_key, steps)
  return tf.data.Dataset.from_tensor_slices(
      (indices[start_step:], step_keys[start_step:]))


def _make_batches(index: tf.data.Dataset, data: ArraySplit, batch_size: int,
                  image_size: int, augment: bool, defer: bool = False) -> tf.data.Dataset:
  """Turns (indices [B], seed [2]) elements into (images, labels) batches; with `defer`,
  stored images come as `Deferred` batches (their crop + flip done by the step)."""
  stored = data.images.shape[1:3]
  if not data.encoded and tuple(stored) != (image_size, image_size):
    raise errors.UsageError(
        f"image size {image_size} does not match the dataset's stored "
        f"{stored[0]}x{stored[1]} images; load it with image_size="
        f"{image_size}")
  images_var, labels_var = _variables(data)
  if not data.encoded:
    def build(indices, key):
      images = tf.gather(images_var, indices)
      if defer:
        images = Deferred(images, key)
      elif augment:
        images = pad_crop_flip(images, key)
      return images, tf.gather(labels_var, indices)

    ds = index.map(build, num_parallel_calls=tf.data.AUTOTUNE,
                   deterministic=True)
  else:
    # JPEGs are decoded one by one; each example gets its own random stream
    # derived from its batch's key and its position in the batch.
    def spread(indices, key):
      return indices, tf.random.experimental.stateless_split(key, batch_size)

    def build_one(i, key):
      jpeg = tf.gather(images_var, i)
      if augment:
        image = _decode_random_resized_crop(jpeg, image_size, key)
      else:
        image = _decode_centre_crop(jpeg, image_size)
      return image, tf.gather(labels_var, i)

    ds = index.map(spread).unbatch()
    ds = ds.map(build_one, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


# Per-split tf.Variables holding the images and labels. Variables, not
# constants: a tf.constant would copy 150 MB+ into every dataset graph.
# Weak keys: the variables go when the split does.
_VARIABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _variables(data: ArraySplit) -> tuple[tf.Variable, tf.Variable]:
  """The (images, labels) variables of `data` on the host, made once."""
  cached = _VARIABLES.get(data)
  if cached is None:
    with tf.init_scope(), tf.device("/CPU:0"):
      cached = (tf.Variable(data.images, trainable=False, name="images"),
                tf.Variable(data.labels, trainable=False, name="labels"))
    _VARIABLES[data] = cached
  return cached


# ----------------------------------------------------------------------------
# Augmentation and decoding.


def pad_crop_flip(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
  """Random crop from zero padding plus random horizontal flip, per image.

  Done with two batched gathers (rows, then columns, with the flip folded into
  the column order) instead of a per-image map: this is the hot loop of CIFAR
  training.

  Args:
    images: uint8 `[B, S, S, 3]`.
    key: stateless seed int64 `[2]`.

  Returns:
    uint8 `[B, S, S, 3]`.
  """
  batch, size = images.shape[0], images.shape[1]
  offset_key, flip_key = tf.unstack(
      tf.random.experimental.stateless_split(key, 2, alg=_IN_STEP_RNG))
  offsets = tf.random.stateless_uniform(
      [2, batch], offset_key, minval=0, maxval=2 * CROP_PADDING + 1,
      dtype=tf.int32, alg=_IN_STEP_RNG)
  flip = tf.random.stateless_uniform([batch], flip_key, minval=0, maxval=2,
                                     dtype=tf.int32, alg=_IN_STEP_RNG) > 0
  padded = tf.pad(images, [[0, 0], [CROP_PADDING, CROP_PADDING],
                           [CROP_PADDING, CROP_PADDING], [0, 0]])
  ramp = tf.range(size)
  rows = offsets[0][:, None] + ramp[None, :]
  cols = offsets[1][:, None] + tf.where(flip[:, None], size - 1 - ramp, ramp)
  out = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, S, S + 2P, 3]
  return tf.gather(out, cols, axis=2, batch_dims=1)  # [B, S, S, 3]


def _decode_random_resized_crop(jpeg: tf.Tensor, size: int,
                                key: tf.Tensor) -> tf.Tensor:
  """RandomResizedCrop to S x S plus a random horizontal flip.

  The crop covers 8-100 % of the image's area with aspect ratio in
  [3/4, 4/3]; only that window is decoded. When no window fits in 10 tries,
  TF's sampler falls back to the whole image.

  Args:
    jpeg: string scalar, JPEG bytes.
    size: S.
    key: stateless seed int64 `[2]`.

  Returns:
    uint8 `[S, S, 3]`.
  """
  box_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.image.extract_jpeg_shape(jpeg), tf.zeros([1, 0, 4], tf.float32),
      seed=box_key, min_object_covered=0.0,
      aspect_ratio_range=CROP_ASPECT_RATIO_RANGE, area_range=CROP_AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop[0], crop[1]])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  image = tf.image.resize(image, [size, size], antialias=True)
  image = tf.image.stateless_random_flip_left_right(image, flip_key)
  return tf.ensure_shape(storage.to_uint8(image), [size, size, 3])


def _decode_centre_crop(jpeg: tf.Tensor, size: int) -> tf.Tensor:
  """Decodes the evaluation view: shorter side to round(S / 0.875), centre S.

  The centre S x S crop of the image resized to shorter side R covers a centred
  square of side shorter * S / R of the original, so only that square is
  decoded and resized straight to S (one resampling instead of two).

  Args:
    jpeg: string scalar, JPEG bytes.
    size: S.

  Returns:
    uint8 `[S, S, 3]`.
  """
  shape = tf.image.extract_jpeg_shape(jpeg)
  height, width = shape[0], shape[1]
  resized_shorter = round(size / EVAL_CROP_FRACTION)
  side = tf.cast(tf.round(tf.cast(tf.minimum(height, width), tf.float64) *
                          (size / resized_shorter)), tf.int32)
  side = tf.maximum(side, 1)
  window = tf.stack([(height - side) // 2, (width - side) // 2, side, side])
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  image = tf.image.resize(image, [size, size], antialias=True)
  return tf.ensure_shape(storage.to_uint8(image), [size, size, 3])
