"""Datasets from TFDS or image folders, materialised once into host memory (storage.py).

Small images (image size <= 64, e.g. CIFAR) become a uint8 array `[N, S, S, 3]`, large
images (e.g. Food101 at 224) JPEG bytes; batches are then built from index lists
(pipeline.py), so shuffling, resuming in the middle of an epoch and evaluation are exact
and O(1) to position. Images stay uint8 up to the model, which normalises them with the
dataset's `mean`/`std`: that keeps the host-to-device traffic at one byte per value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import time

from absl import logging
import numpy as np
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf.data import storage

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
    fingerprint: folders only: the file count and a hash of the files' relative paths and
      sizes, which a resumed run checks (None for TFDS datasets).
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_size: int
  train: storage.ArraySplit
  test: storage.ArraySplit | None
  test_split_name: str | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  fingerprint: str | None = None
  skipped: tuple[str, ...] = ()


def canonical_spec(spec: str) -> str:
  """The dataset spec a work directory records: folders by their absolute, resolved path
  (a run resumed from another directory must read the same folder)."""
  if spec.startswith("folder:") and spec[len("folder:"):].strip():
    return "folder:" + str(pathlib.Path(spec[len("folder:"):].strip()).expanduser().resolve())
  return spec


def folder_fingerprint(files_by_split: dict[str, dict[str, list[pathlib.Path]]],
                       root: pathlib.Path) -> str:
  """'<count> files, sha256 <hex>' over the sorted relative paths and sizes."""
  digest, count = hashlib.sha256(), 0
  for split in sorted(files_by_split):
    for name in sorted(files_by_split[split]):
      for path in files_by_split[split][name]:
        digest.update(f"{path.relative_to(root)}\t{path.stat().st_size}\n".encode())
        count += 1
  return f"{count} files, sha256 {digest.hexdigest()[:16]}"


# ----------------------------------------------------------------------------
# Loading.


def load(spec: str, *, image_size: int = 0, tfds_data_dir: str | None = None,
         load_test: bool = True, max_per_class: int | None = None,
         skip_bad_images: bool = False) -> Dataset:
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
    skip_bad_images: folders only: leave out files that cannot be decoded (listed in the
      dataset's `skipped`) instead of stopping at the first one.
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
  if not is_int(image_size) or image_size < 0:
    raise errors.UsageError(
        "image size must be 0 (the dataset's default) or a positive number of "
        f"pixels; received: {image_size!r}")
  if max_per_class is not None and (not is_int(max_per_class) or
                                    max_per_class < 0):
    raise errors.UsageError(
        "images per class must be a positive integer (0 or None: all); "
        f"received: {max_per_class!r}")
  spec, image_size = spec.strip(), int(image_size)
  start = time.perf_counter()
  if spec.startswith("folder:"):
    dataset = _load_folder(spec[len("folder:"):], image_size, load_test,
                           max_per_class or None, skip_bad_images)
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


def is_int(value: object) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)



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
        f"downloaded ({type(e).__name__}: {errors.one_line(e, 120)}); {hint}"
    ) from None
  class_names = tuple(builder.info.features["label"].names)
  size = image_size or source.default_image_size

  def read(split: str) -> storage.ArraySplit:
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex["image"], ex["label"]),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    try:
      return storage.materialise(ds, size)[0]
    except tf.errors.OpError as e:
      raise errors.UsageError(
          f"dataset {name} in {where} cannot be read ({type(e).__name__}: "
          f"{errors.one_line(e.message, 120)}); re-prepare it (tfds build {name} "
          "--data_dir=DIR --overwrite)") from None

  train = read("train")
  test = read(source.test_split) if load_test else None
  return Dataset(
      name=name, num_classes=len(class_names), class_names=class_names,
      image_size=size, train=train, test=test,
      test_split_name=source.test_split if load_test else None,
      mean=source.mean, std=source.std)


def _load_folder(path: str, image_size: int, load_test: bool,
                 max_per_class: int | None, skip_bad_images: bool = False) -> Dataset:
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
    height, width, _ = storage.decode_file_or_raise(first).shape
    image_size = (height if height == width and height <= storage.MAX_RAW_IMAGE_SIZE
                  else DEFAULT_LARGE_IMAGE_SIZE)

  def read(files_by_class: dict[str, list[pathlib.Path]]):
    files, labels = [], []
    for label, name in enumerate(class_names):
      for file in files_by_class.get(name, [])[:max_per_class]:
        files.append(str(file))
        labels.append(label)
    return storage.materialise_files(files, np.asarray(labels, np.int32), image_size,
                              skipped if skip_bad_images else None)

  skipped: list[str] = []
  train, (mean, std) = read(train_files)
  test = read(test_files)[0] if test_files is not None else None
  # A folder can hold anything, so it is normalised with its own training
  # pixels' statistics (for the CIFAR-10 JPEG folder they are within 0.005
  # of the CIFAR constants). A constant channel would divide by 0.
  std = np.maximum(std, 1e-3)
  splits = {"train": train_files}
  if test_files is not None:
    splits["test"] = test_files
  return Dataset(
      name=f"folder:{root}", num_classes=len(class_names),
      class_names=class_names, image_size=image_size, train=train, test=test,
      test_split_name="test" if test is not None else None,
      mean=tuple(round(float(m), 4) for m in mean),
      std=tuple(round(float(s), 4) for s in std),
      fingerprint=folder_fingerprint(splits, root), skipped=tuple(skipped))


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
