"""How a split is held in host memory (`ArraySplit`), and how images get there.

Images up to MAX_RAW_IMAGE_SIZE are decoded, resized (antialiased) to a square and kept as a
uint8 array; larger ones are shrunk to a bounded longer side and kept as JPEG bytes. Their
per-channel pixel statistics are taken on the way (the dataset's normalisation).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from absl import logging
import numpy as np
import tensorflow as tf

from mixnas_tf import errors

# Image sizes up to this are stored as raw uint8 arrays; larger ones as JPEG
# bytes (Food101's 75k training images would need 11 GB raw at 224, ~2 GB as
# JPEG).
MAX_RAW_IMAGE_SIZE = 64
# Large images are stored with their longer side at most
# round(image_size * 256 / 224): the reference stores Food101 at max side 256
# for 224 inputs.
STORAGE_RATIO = 256 / 224
JPEG_QUALITY = 90
# Materialisation batch: large enough to amortise per-batch overhead, small
# enough that a failing batch is cheap to re-scan file by file.
MATERIALISE_BATCH = 1024


# eq=False: splits compare and hash by identity, which is what the variable
# cache of pipeline.py needs (and comparing 150 MB arrays element-wise is never meant).
@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
  """One split of a dataset, in host memory.

  Attributes:
    images: uint8 `[N, H, W, 3]` when not `encoded`; otherwise an object array
      `[N]` of JPEG-encoded `bytes`.
    labels: int32 `[N]`, class indices.
    encoded: whether `images` holds JPEG bytes.
  """

  images: np.ndarray
  labels: np.ndarray
  encoded: bool

  def __post_init__(self):
    if self.labels.ndim != 1 or self.labels.dtype != np.int32:
      raise ValueError(
          f"labels must be int32 [N]; received: dtype={self.labels.dtype}, "
          f"shape={self.labels.shape}")
    if self.encoded:
      ok = self.images.ndim == 1 and self.images.dtype == object
    else:
      ok = (self.images.ndim == 4 and self.images.shape[-1] == 3 and
            self.images.dtype == np.uint8)
    if not ok:
      raise ValueError(
          "images must be "
          f"{'object [N]' if self.encoded else 'uint8 [N, H, W, 3]'} for "
          f"encoded={self.encoded}; received: dtype={self.images.dtype}, "
          f"shape={self.images.shape}")
    if len(self.images) != len(self.labels):
      raise ValueError(
          f"{len(self.images)} images but {len(self.labels)} labels")

  def __len__(self) -> int:
    return len(self.labels)

  def take(self, indices: np.ndarray) -> ArraySplit:
    """Returns the examples at `indices` (int `[M]`), in that order."""
    return ArraySplit(self.images[indices], self.labels[indices], self.encoded)



def decode_file(path: tf.Tensor) -> tf.Tensor:
  """Decodes an image file to uint8 `[H, W, 3]` (first frame of a GIF)."""
  return tf.io.decode_image(tf.io.read_file(path), channels=3,
                            expand_animations=False)


def decode_file_or_raise(path: str | pathlib.Path) -> np.ndarray:
  try:
    return decode_file(tf.constant(str(path))).numpy()
  except tf.errors.OpError as e:
    raise errors.UsageError(
        f"image file {path} cannot be read ({errors.one_line(e.message, 120)}); "
        "accepted: JPEG, PNG, BMP or GIF images") from None


def materialise_files(files: list[str], labels: np.ndarray, image_size: int,
                       skipped: list[str] | None = None):
  """Decodes image files in parallel; names the first unreadable one, or, given a
  `skipped` list, appends every unreadable file to it and leaves it out."""
  ds = tf.data.Dataset.from_tensor_slices((files, labels)).map(
      lambda f, y: (decode_file(f), y),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  done = []
  try:
    return materialise(ds, image_size, progress=done, with_stats=True)
  except tf.errors.OpError as e:
    # The error names no file; the pipeline is deterministic, so the culprit
    # is at or after the last complete batch: re-decode from there one by one.
    if skipped is not None:
      bad = set()
      for path in files[sum(done):]:
        try:
          decode_file_or_raise(path)
        except errors.UsageError:
          bad.add(path)
      if bad:
        skipped.extend(sorted(bad))
        logging.warning("Left out %d unreadable image files (--skip_bad_images).", len(bad))
        keep = [i for i, f in enumerate(files) if f not in bad]
        return materialise_files([files[i] for i in keep], labels[keep], image_size,
                                  skipped)
    for path in files[sum(done):]:
      decode_file_or_raise(path)
    folder = os.path.dirname(os.path.dirname(files[0]))
    raise errors.UsageError(
        f"reading the images of {folder} failed ({type(e).__name__}: "
        f"{errors.one_line(e.message, 120)})") from None


def materialise(ds: tf.data.Dataset, image_size: int, *,
                 progress: list[int] | None = None, with_stats: bool = False):
  """Collects a dataset of (uint8 [H, W, 3], int label) into an ArraySplit.

  Args:
    ds: yields (image uint8 `[H, W, 3]`, label int scalar) of any sizes.
    image_size: S. S <= 64: images resized (antialiased) to S x S unless
      already; S > 64: images shrunk so their longer side is at most
      round(S * 256 / 224), then JPEG-encoded.
    progress: if given, receives the number of examples of every collected
      batch (to locate a failure).
    with_stats: also return the per-channel pixel statistics.

  Returns:
    (split, stats): stats is None or (mean, std), per channel in [0, 1] units,
    float64 numpy arrays `[3]`, over all stored pixels.
  """
  encoded = image_size > MAX_RAW_IMAGE_SIZE
  storage = round(image_size * STORAGE_RATIO)

  def prepare(image, label):
    image = tf.ensure_shape(image, [None, None, 3])
    label = tf.cast(label, tf.int32)
    if not encoded:
      return resize_to_square(image, image_size), label
    image = shrink_to_max_side(image, storage)
    jpeg = tf.io.encode_jpeg(image, quality=JPEG_QUALITY)
    # The pixels are gone once encoded, so their statistics are taken here.
    # Integer sums are exact (2**63 allows ~10**14 pixels).
    pixels = tf.reshape(tf.cast(image, tf.int64), [-1, 3])
    stats = tf.stack([tf.reduce_sum(pixels, 0),
                      tf.reduce_sum(pixels * pixels, 0),
                      tf.fill([3], tf.shape(pixels, out_type=tf.int64)[0])])
    return jpeg, label, stats

  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(MATERIALISE_BATCH).prefetch(2)
  images, labels = [], []
  stats = np.zeros([3, 3], np.int64)  # (sum, sum of squares, count) x RGB.
  for batch in ds.as_numpy_iterator():
    images.append(batch[0])
    labels.append(batch[1])
    if encoded:
      stats += batch[2].sum(0)
    elif with_stats:
      stats += uint8_stats(batch[0])
    if progress is not None:
      progress.append(len(batch[1]))
  if images:
    # For JPEGs, as_numpy_iterator gives object arrays of bytes already.
    all_images = np.concatenate(images)
    all_labels = np.concatenate(labels)
  else:
    all_images = (np.zeros([0], object) if encoded else
                  np.zeros([0, image_size, image_size, 3], np.uint8))
    all_labels = np.zeros([0], np.int32)
  split = ArraySplit(all_images, all_labels, encoded)
  if not with_stats:
    return split, None
  count = np.maximum(stats[2], 1).astype(np.float64)
  mean = stats[0] / count / 255
  std = np.sqrt(np.maximum(stats[1] / count / 255**2 - mean**2, 0.0))
  return split, (mean, std)


def uint8_stats(images: np.ndarray) -> np.ndarray:
  """(sum, sum of squares, count) x RGB, int64 `[3, 3]`, of uint8 `[..., 3]`.

  Through per-channel histograms: 4x faster than widening every pixel to
  int64 for the products, and exact.
  """
  values = np.arange(256, dtype=np.int64)
  histograms = np.stack([
      np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)])
  return np.stack([histograms @ values, histograms @ (values * values),
                   histograms.sum(1)])


def resize_to_square(image: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 `[H, W, 3]` -> uint8 `[size, size, 3]`, resampled only if needed."""
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  image = tf.cond(
      same, lambda: image,
      lambda: to_uint8(tf.image.resize(image, [size, size], antialias=True)))
  return tf.ensure_shape(image, [size, size, 3])


def shrink_to_max_side(image: tf.Tensor, max_side: int) -> tf.Tensor:
  """uint8 `[H, W, 3]` -> uint8 `[h, w, 3]` with max(h, w) <= max_side."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  longer = tf.maximum(height, width)

  def shrink():
    scale = max_side / tf.cast(longer, tf.float64)
    new_size = tf.maximum(
        tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float64) *
                         scale), tf.int32), 1)
    return to_uint8(tf.image.resize(image, new_size, antialias=True))

  return tf.cond(longer > max_side, shrink, lambda: image)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
