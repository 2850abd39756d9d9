"""Datasets: TFDS or image folders, held in memory, batched by index.

Every split is materialised once into host memory (`ArraySplit`): small images
(image size <= 64, e.g. CIFAR) as a uint8 array `[N, S, S, 3]`, large images
(e.g. Food101 at 224) as JPEG bytes. Batches are then built from index lists,
so shuffling, resuming in the middle of an epoch and evaluation are exact and
O(1) to position:

* `train_batches(epoch=e, start_step=k)` yields exactly batches k, k+1, ... of
  `train_batches(epoch=e)`: the order is a permutation derived from
  (seed, epoch) and the augmentation randomness from (seed, epoch, step), with
  stateless random ops and no hidden state.
* `stream_batches` is the endless per-step validation stream of the search:
  its batch k does not depend on where the stream was started.
* `eval_batches` covers a split once, in order, with full batches only (static
  shapes for XLA) and a mask for the wrapped-around padding.

Images stay uint8 up to the model, which normalises them with the dataset's
`mean`/`std`: that keeps the host-to-device traffic at one byte per value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import time
import weakref

from absl import logging
import numpy as np
import tensorflow as tf

from mixnas_tf import errors

# Image sizes up to this are stored as raw uint8 arrays; larger ones as JPEG
# bytes (Food101's 75k training images would need 11 GB raw at 224, ~2 GB as
# JPEG).
MAX_RAW_IMAGE_SIZE = 64
# Zero padding of the CIFAR-style random crop (ALGORITHM.md).
CROP_PADDING = 4
# Large images are stored with their longer side at most
# round(image_size * 256 / 224): the reference stores Food101 at max side 256
# for 224 inputs.
STORAGE_RATIO = 256 / 224
JPEG_QUALITY = 90
# Evaluation of large images: resize the shorter side to round(S / 0.875), then
# centre-crop S (256 -> 224, the usual ImageNet protocol).
EVAL_CROP_FRACTION = 0.875
# RandomResizedCrop (Inception crop) ranges of the reference / torchvision.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# Default input size of TFDS datasets whose images are not all one size, and of
# folders whose first image is not a small square.
DEFAULT_LARGE_IMAGE_SIZE = 224
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ACCEPTED_SPECS = "cifar10, cifar100, food101, folder:PATH"
_FOLDER_LAYOUT = (
    "expected PATH/train/<class>/<image> (" + ", ".join(
        e[1:] for e in IMAGE_EXTENSIONS) + "), optionally PATH/test/<class>/..."
)

# Materialisation batch: large enough to amortise per-batch overhead, small
# enough that a failing batch is cheap to re-scan file by file.
_MATERIALISE_BATCH = 1024

# Seed of the fixed order in which evaluation visits a split (see eval_order).
EVAL_ORDER_SEED = 20230611
# Tags that separate the random streams derived from one user seed.
_TRAIN_ORDER = 1
_TRAIN_AUGMENT = 2
_STREAM_ORDER = 3
_STREAM_AUGMENT = 4


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  test_split: str
  default_image_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


_TFDS_SOURCES = {
    "cifar10": _TfdsSource("test", 32, CIFAR_MEAN, CIFAR_STD),
    # `label` is CIFAR-100's fine label (100 classes); `coarse_label` is unused.
    "cifar100": _TfdsSource("test", 32, CIFAR_MEAN, CIFAR_STD),
    # Food101 has no test split: its 25,250 validation images play that role.
    "food101": _TfdsSource("validation", DEFAULT_LARGE_IMAGE_SIZE,
                           IMAGENET_MEAN, IMAGENET_STD),
}


# eq=False: splits compare and hash by identity, which is what the variable
# cache below needs (and comparing 150 MB arrays element-wise is never meant).
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


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification dataset in memory.

  Attributes:
    name: "cifar10", "cifar100", "food101" or "folder:<absolute path>".
    num_classes: number of classes.
    class_names: the classes' names, indexed by label.
    image_size: the training/evaluation input size S (inputs are S x S).
    train: the training split.
    test: the held-out split ("test" for CIFAR, "validation" for Food101,
      PATH/test for folders), or None (not loaded, or a folder without test/).
    test_split_name: the name of `test`'s source split, None when `test` is.
    mean: per-channel mean of the pixels in [0, 1] units, for the model's
      input normalisation.
    std: per-channel standard deviation, same units.
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_size: int
  train: ArraySplit
  test: ArraySplit | None
  test_split_name: str | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


# ----------------------------------------------------------------------------
# Loading.


def load(spec: str, *, image_size: int = 0, tfds_data_dir: str | None = None,
         load_test: bool = True, max_per_class: int | None = None) -> Dataset:
  """Loads a dataset into memory.

  Args:
    spec: "cifar10", "cifar100", "food101" (TFDS), or "folder:PATH" with images
      in PATH/train/<class>/ and optionally PATH/test/<class>/.
    image_size: input size S; 0 picks the dataset's own (32 for CIFAR, 224 for
      Food101; for folders the first image's size if it is a square of at
      most 64 pixels, else 224). Sizes up to 64 store uint8 arrays resized to
      S x S; larger sizes store JPEGs with longer side <= round(S * 256 / 224).
    tfds_data_dir: where TFDS datasets are prepared (None: TFDS's default).
    load_test: whether to load the held-out split too.
    max_per_class: folders only: keep the first (in sorted order) this many
      images of each class in each split, for quick runs and tests; None or
      0 keeps all.

  Returns:
    The dataset, with `test` None when not loaded or absent.

  Raises:
    errors.UsageError: unknown spec, a dataset that cannot be read or
      downloaded, a malformed folder, or an unreadable image (named).
  """
  if not isinstance(spec, str) or not spec.strip():
    raise errors.UsageError(
        f"dataset must be one of {ACCEPTED_SPECS}; received: {spec!r}")
  if not _is_int(image_size) or image_size < 0:
    raise errors.UsageError(
        "image size must be 0 (the dataset's default) or a positive number of "
        f"pixels; received: {image_size!r}")
  if max_per_class is not None and (not _is_int(max_per_class) or
                                    max_per_class < 0):
    raise errors.UsageError(
        "images per class must be a positive integer (0 or None: all); "
        f"received: {max_per_class!r}")
  spec, image_size = spec.strip(), int(image_size)
  start = time.perf_counter()
  if spec.startswith("folder:"):
    dataset = _load_folder(spec[len("folder:"):], image_size, load_test,
                           max_per_class or None)
  elif max_per_class and spec.lower() in _TFDS_SOURCES:
    raise errors.UsageError(
        "a limit of images per class applies to folder datasets only "
        f"(folder:PATH); received it with {spec}")
  elif spec.lower() in _TFDS_SOURCES:
    dataset = _load_tfds(spec.lower(), image_size, tfds_data_dir, load_test)
  else:
    raise errors.UsageError(
        f"unknown dataset {spec!r}; accepted: {ACCEPTED_SPECS} (PATH holding "
        "train/<class>/<image>)")
  logging.info(
      "Loaded %s in %.1f s: %d train / %s %s images at %dx%d (%s), %d classes.",
      dataset.name, time.perf_counter() - start, len(dataset.train),
      len(dataset.test) if dataset.test is not None else 0,
      dataset.test_split_name or "no held-out", dataset.image_size,
      dataset.image_size, "JPEG" if dataset.train.encoded else "uint8",
      dataset.num_classes)
  return dataset


def _one_line(text: object, limit: int = 200) -> str:
  """First line of `text`, shortened: UsageError messages are one line."""
  # TF wraps op errors in "{{function_node ...}}" and "[Op:...] name:": noise
  # to a user.
  text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(text))
  text = re.sub(r"\s*\[Op:[^\]]*\]( name:[^\n]*)?", "", text)
  lines = text.strip().splitlines()
  line = lines[0].strip() if lines else ""
  return line if len(line) <= limit else line[:limit - 3] + "..."


def _load_tfds(name: str, image_size: int, data_dir: str | None,
               load_test: bool) -> Dataset:
  # Imported here: tensorflow_datasets takes seconds to import, and folder
  # datasets do not need it.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = _TFDS_SOURCES[name]
  where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  hint = (f"prepare it where you have network (tfds build {name} "
          "--data_dir=DIR) and pass --tfds_data_dir=DIR, or use "
          "--dataset=folder:PATH with PATH/train/<class>/*.jpg")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      # Offline, TFDS retries the download for ~3.5 minutes before failing.
      logging.warning(
          "%s is not prepared in %s: downloading it (without network this "
          "fails after ~3 minutes of retries).", name, where)
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    # Any failure here (no network, missing importlib_resources, a corrupt
    # archive) means the same thing to the user: the data is not available.
    raise errors.UsageError(
        f"dataset {name} is not prepared in {where} and could not be "
        f"downloaded ({type(e).__name__}: {_one_line(e, 120)}); {hint}"
    ) from None
  class_names = tuple(builder.info.features["label"].names)
  size = image_size or source.default_image_size

  def read(split: str) -> ArraySplit:
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex["image"], ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
      return _materialise(ds, size)[0]
    except tf.errors.OpError as e:
      raise errors.UsageError(
          f"dataset {name} in {where} cannot be read ({type(e).__name__}: "
          f"{_one_line(e.message, 120)}); re-prepare it (tfds build {name} "
          "--data_dir=DIR --overwrite)") from None

  train = read("train")
  test = read(source.test_split) if load_test else None
  return Dataset(
      name=name, num_classes=len(class_names), class_names=class_names,
      image_size=size, train=train, test=test,
      test_split_name=source.test_split if load_test else None,
      mean=source.mean, std=source.std)


def _load_folder(path: str, image_size: int, load_test: bool,
                 max_per_class: int | None) -> Dataset:
  if not path.strip():
    raise errors.UsageError(
        f"dataset folder: needs a path (folder:PATH); {_FOLDER_LAYOUT}")
  root = pathlib.Path(path.strip()).expanduser().resolve()
  if not root.is_dir():
    raise errors.UsageError(
        f"dataset folder {root} does not exist or is not a folder; "
        f"{_FOLDER_LAYOUT}")
  if not (root / "train").is_dir():
    raise errors.UsageError(
        f"dataset folder {root} has no train folder; {_FOLDER_LAYOUT}")
  train_files = _scan_classes(root / "train")
  class_names = tuple(sorted(train_files))
  if len(class_names) < 2:
    raise errors.UsageError(
        f"folder {root / 'train'} has {len(class_names)} class "
        f"({', '.join(class_names)}); a classification dataset needs at "
        "least 2")
  test_files = None
  if load_test and (root / "test").is_dir():
    test_files = _scan_classes(root / "test")
    unknown = sorted(set(test_files) - set(class_names))
    if unknown:
      raise errors.UsageError(
          f"folder {root / 'test'} has classes that {root / 'train'} lacks: "
          f"{', '.join(unknown)}; test classes must be a subset of train's "
          f"({', '.join(class_names)})")

  if not image_size:
    first = train_files[class_names[0]][0]
    height, width, _ = _decode_file_or_raise(first).shape
    image_size = (height if height == width and height <= MAX_RAW_IMAGE_SIZE
                  else DEFAULT_LARGE_IMAGE_SIZE)

  def read(files_by_class: dict[str, list[pathlib.Path]]):
    files, labels = [], []
    for label, name in enumerate(class_names):
      for file in files_by_class.get(name, [])[:max_per_class]:
        files.append(str(file))
        labels.append(label)
    return _materialise_files(files, np.asarray(labels, np.int32), image_size)

  train, (mean, std) = read(train_files)
  test = read(test_files)[0] if test_files is not None else None
  # A folder can hold anything, so it is normalised with its own training
  # pixels' statistics (for the CIFAR-10 JPEG folder they are within 0.005
  # of the CIFAR constants). A constant channel would divide by 0.
  std = np.maximum(std, 1e-3)
  return Dataset(
      name=f"folder:{root}", num_classes=len(class_names),
      class_names=class_names, image_size=image_size, train=train, test=test,
      test_split_name="test" if test is not None else None,
      mean=tuple(round(float(m), 4) for m in mean),
      std=tuple(round(float(s), 4) for s in std))


def _scan_classes(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """Image files per class subfolder of `folder`, in sorted order."""
  classes = sorted(p for p in folder.iterdir()
                   if p.is_dir() and not p.name.startswith("."))
  if not classes:
    raise errors.UsageError(
        f"folder {folder} has no class subfolders; {_FOLDER_LAYOUT}")
  files = {}
  for class_dir in classes:
    images = sorted(
        p for p in class_dir.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and
        not p.name.startswith("."))
    if not images:
      raise errors.UsageError(
          f"class folder {class_dir} has no images; accepted: "
          f"{', '.join(e[1:] for e in IMAGE_EXTENSIONS)} files (any case)")
    files[class_dir.name] = images
  return files


def _decode_file(path: tf.Tensor) -> tf.Tensor:
  """Decodes an image file to uint8 `[H, W, 3]` (first frame of a GIF)."""
  return tf.io.decode_image(tf.io.read_file(path), channels=3,
                            expand_animations=False)


def _decode_file_or_raise(path: str | pathlib.Path) -> np.ndarray:
  try:
    return _decode_file(tf.constant(str(path))).numpy()
  except tf.errors.OpError as e:
    raise errors.UsageError(
        f"image file {path} cannot be read ({_one_line(e.message, 120)}); "
        "accepted: JPEG, PNG, BMP or GIF images") from None


def _materialise_files(files: list[str], labels: np.ndarray, image_size: int):
  """Decodes image files in parallel; names the first unreadable one."""
  ds = tf.data.Dataset.from_tensor_slices((files, labels)).map(
      lambda f, y: (_decode_file(f), y),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  done = []
  try:
    return _materialise(ds, image_size, progress=done, with_stats=True)
  except tf.errors.OpError as e:
    # The error names no file; the pipeline is deterministic, so the culprit
    # is at or after the last complete batch: re-decode from there one by one.
    for path in files[sum(done):]:
      _decode_file_or_raise(path)
    folder = os.path.dirname(os.path.dirname(files[0]))
    raise errors.UsageError(
        f"reading the images of {folder} failed ({type(e).__name__}: "
        f"{_one_line(e.message, 120)})") from None


def _materialise(ds: tf.data.Dataset, image_size: int, *,
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
      return _resize_to_square(image, image_size), label
    image = _shrink_to_max_side(image, storage)
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
  ds = ds.batch(_MATERIALISE_BATCH).prefetch(2)
  images, labels = [], []
  stats = np.zeros([3, 3], np.int64)  # (sum, sum of squares, count) x RGB.
  for batch in ds.as_numpy_iterator():
    images.append(batch[0])
    labels.append(batch[1])
    if encoded:
      stats += batch[2].sum(0)
    elif with_stats:
      stats += _uint8_stats(batch[0])
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


def _uint8_stats(images: np.ndarray) -> np.ndarray:
  """(sum, sum of squares, count) x RGB, int64 `[3, 3]`, of uint8 `[..., 3]`.

  Through per-channel histograms: 4x faster than widening every pixel to
  int64 for the products, and exact.
  """
  values = np.arange(256, dtype=np.int64)
  histograms = np.stack([
      np.bincount(images[..., c].ravel(), minlength=256) for c in range(3)])
  return np.stack([histograms @ values, histograms @ (values * values),
                   histograms.sum(1)])


def _resize_to_square(image: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 `[H, W, 3]` -> uint8 `[size, size, 3]`, resampled only if needed."""
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  image = tf.cond(
      same, lambda: image,
      lambda: _to_uint8(tf.image.resize(image, [size, size], antialias=True)))
  return tf.ensure_shape(image, [size, size, 3])


def _shrink_to_max_side(image: tf.Tensor, max_side: int) -> tf.Tensor:
  """uint8 `[H, W, 3]` -> uint8 `[h, w, 3]` with max(h, w) <= max_side."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  longer = tf.maximum(height, width)

  def shrink():
    scale = max_side / tf.cast(longer, tf.float64)
    new_size = tf.maximum(
        tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float64) *
                         scale), tf.int32), 1)
    return _to_uint8(tf.image.resize(image, new_size, antialias=True))

  return tf.cond(longer > max_side, shrink, lambda: image)


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


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
  order = np.random.default_rng(_check_seed(seed)).permutation(n)
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
  if not _is_int(size) or size < 0:
    raise errors.UsageError(
        f"subsample size must be a positive number of images (0: all); "
        f"received: {size!r}")
  if size > len(data):
    raise errors.UsageError(
        f"subsample size {size} is larger than the split ({len(data)} images)")
  if size == len(data):
    return data
  order = np.random.default_rng(_check_seed(seed)).permutation(len(data))
  return data.take(np.sort(order[:size]))


def _is_int(value: object) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed: int) -> int:
  _check_count("seed", seed)
  return int(seed)


def _check_count(what: str, value: int) -> None:
  if not _is_int(value) or value < 0:
    raise errors.UsageError(
        f"{what} must be a non-negative integer; received: {value!r}")


def _check_batch_size(batch_size: int) -> None:
  if not _is_int(batch_size) or batch_size < 1:
    raise errors.UsageError(
        f"batch size must be a positive integer; received: {batch_size!r}")


# ----------------------------------------------------------------------------
# Batching.


def steps_per_epoch(data: ArraySplit, batch_size: int) -> int:
  """Number of full batches in one pass over `data` (the remainder is dropped).

  Raises:
    errors.UsageError: the batch size is not positive or exceeds the split.
  """
  _check_batch_size(batch_size)
  if batch_size > len(data):
    raise errors.UsageError(
        f"batch size {batch_size} is larger than the split ({len(data)} "
        "images)")
  return len(data) // batch_size


def num_eval_batches(data: ArraySplit, batch_size: int) -> int:
  """Number of batches of `eval_batches`: ceil(N / batch_size)."""
  _check_batch_size(batch_size)
  if not len(data):
    raise errors.UsageError("cannot evaluate on an empty split")
  return -(-len(data) // batch_size)


def train_batches(data: ArraySplit, *, batch_size: int, image_size: int,
                  seed: int, epoch: int, start_step: int = 0,
                  augment: bool = True) -> tf.data.Dataset:
  """One training epoch of shuffled, augmented batches.

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
    start_step: first batch to yield; earlier ones are skipped without being
      built.
    augment: whether to augment; without it JPEGs are centre-cropped like in
      evaluation.

  Returns:
    A finite dataset of `steps_per_epoch - start_step` elements
    (images uint8 `[B, S, S, 3]`, labels int32 `[B]`).
  """
  steps = steps_per_epoch(data, batch_size)
  seed = _check_seed(seed)
  _check_count("epoch", epoch)
  _check_count("start step", start_step)
  if start_step > steps:
    raise errors.UsageError(
        f"start step {start_step} is beyond the epoch's {steps} steps")
  index = _epoch_index_batches(
      len(data), batch_size, steps, _seed(seed, _TRAIN_ORDER),
      _seed(seed, _TRAIN_AUGMENT), tf.constant(epoch, tf.int64), start_step)
  ds = _make_batches(index, data, batch_size, image_size, augment)
  return ds.apply(tf.data.experimental.assert_cardinality(steps - start_step))


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
  seed = _check_seed(seed)
  _check_count("start step", start_step)
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
  return _make_batches(head.concatenate(tail), data, batch_size, image_size,
                       augment)


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


def eval_batches(data: ArraySplit, *, batch_size: int,
                 image_size: int) -> tf.data.Dataset:
  """Every example once, in the fixed shuffled `eval_order`, in full batches.

  The last batch is completed by wrapping around to the start of that order,
  with mask 0 on the repeated examples: every batch has the static shape XLA
  wants, and the padding is made of real images, because the SuperNet's
  BatchNorm uses the statistics of the batch even at evaluation.

  Args:
    data: the split (N >= 1).
    batch_size: B.
    image_size: S; must equal the stored size of uint8 splits.

  Returns:
    A dataset of `num_eval_batches(data, B)` elements (images uint8
    `[B, S, S, 3]`, labels int32 `[B]`, mask float32 `[B]`); sum of masks = N.
  """
  num_batches = num_eval_batches(data, batch_size)
  positions = np.arange(num_batches * batch_size).reshape(num_batches,
                                                          batch_size)
  indices = eval_order(len(data))[positions % len(data)]
  masks = (positions < len(data)).astype(np.float32)
  index = tf.data.Dataset.from_tensor_slices(
      (indices, np.zeros([num_batches, 2], np.int64)))
  ds = _make_batches(index, data, batch_size, image_size, augment=False)
  ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(masks)))
  ds = ds.map(lambda batch, mask: (batch[0], batch[1], mask))
  return ds.apply(tf.data.experimental.assert_cardinality(num_batches))


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
                  image_size: int, augment: bool) -> tf.data.Dataset:
  """Turns (indices [B], seed [2]) elements into (images, labels) batches."""
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
      if augment:
        images = _pad_crop_flip(images, key)
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


def _pad_crop_flip(images: tf.Tensor, key: tf.Tensor) -> tf.Tensor:
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
      tf.random.experimental.stateless_split(key, 2))
  offsets = tf.random.stateless_uniform(
      [2, batch], offset_key, minval=0, maxval=2 * CROP_PADDING + 1,
      dtype=tf.int32)
  flip = tf.random.stateless_uniform([batch], flip_key, minval=0, maxval=2,
                                     dtype=tf.int32) > 0
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
  return tf.ensure_shape(_to_uint8(image), [size, size, 3])


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
  return tf.ensure_shape(_to_uint8(image), [size, size, 3])
