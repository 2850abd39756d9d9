"""Shared fixtures: a tiny synthetic image folder and the real CIFAR-10 folder."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
CIFAR10_FOLDER = SHARED / "data" / "cifar10"


def make_image_folder(root: pathlib.Path, classes=("a", "b", "c"), per_class=24, size=32,
                      seed=0, test_per_class=0) -> pathlib.Path:
  """Writes PNGs whose class is visible (a per-class colour tint), so models can learn it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for split, count in (("train", per_class), ("test", test_per_class)):
    for c, name in enumerate(classes):
      folder = root / split / name
      if count:
        folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        image = rng.integers(0, 120, (size, size, 3))
        image[..., c % 3] += 120
        tf.io.write_file(str(folder / f"{i:04d}.png"),
                         tf.io.encode_png(image.astype(np.uint8)))
  return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> pathlib.Path:
  return make_image_folder(tmp_path_factory.mktemp("tiny"), per_class=40, test_per_class=8)


@pytest.fixture(scope="session")
def cifar10_folder() -> pathlib.Path:
  if not (CIFAR10_FOLDER / "train").is_dir():
    pytest.skip(f"the real CIFAR-10 folder is absent ({CIFAR10_FOLDER})")
  return CIFAR10_FOLDER
