"""Loading, splitting and index-based batching of datasets (mixnas_tf.data)."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mixnas_tf import data
from mixnas_tf import errors

REAL_CIFAR10 = (pathlib.Path(__file__).resolve().parents[1].parent /
                "shared/data/cifar10")


def _raw_split(n=50, size=8, seed=0):
  """uint8 split whose label i is the example's index (to trace examples)."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
  return data.ArraySplit(images, np.arange(n, dtype=np.int32), encoded=False)


def _jpeg_split(n=12, seed=0):
  """JPEG split of differently shaped images, label i = index i."""
  rng = np.random.default_rng(seed)
  encoded = []
  for i in range(n):
    shape = (40 + 3 * i, 60 - 2 * i, 3)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    encoded.append(tf.io.encode_jpeg(image).numpy())
  images = np.empty(n, dtype=object)
  images[:] = encoded
  return data.ArraySplit(images, np.arange(n, dtype=np.int32), encoded=True)


def _batches(ds):
  return [tuple(t.numpy() for t in batch) for batch in ds]


def _assert_same_batches(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert len(x) == len(y)
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)


def _usage_error(fn, *args, **kwargs) -> str:
  with pytest.raises(errors.UsageError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert message and "\n" not in message, repr(message)
  return message


# ---------------------------------------------------------------------------
# TFDS sources, under tfds.testing.mock_data (no network, no files).


def test_load_cifar10_mock(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    dataset = data.load("cifar10", tfds_data_dir=str(tmp_path))
  assert dataset.name == "cifar10"
  assert dataset.image_size == 32
  # Without metadata, mock_data names the classes "0" ... "9".
  assert dataset.num_classes == len(dataset.class_names) == 10
  assert dataset.test_split_name == "test"
  for part in (dataset.train, dataset.test):
    assert not part.encoded
    assert part.images.shape == (20, 32, 32, 3)
    assert part.images.dtype == np.uint8 and part.labels.dtype == np.int32
    assert part.labels.min() >= 0 and part.labels.max() < 10
  assert dataset.mean == data.CIFAR_MEAN and dataset.std == data.CIFAR_STD


def test_load_cifar100_mock_uses_fine_labels(tmp_path):
  with tfds.testing.mock_data(num_examples=30):
    dataset = data.load("CIFAR100", tfds_data_dir=str(tmp_path),
                        load_test=False)
  assert dataset.num_classes == 100
  assert dataset.test is None and dataset.test_split_name is None
  assert dataset.train.labels.max() < 100


def test_load_food101_mock_small_size_is_raw(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    dataset = data.load("food101", image_size=48, tfds_data_dir=str(tmp_path))
  assert dataset.num_classes == 101 and dataset.test_split_name == "validation"
  assert not dataset.train.encoded
  assert dataset.train.images.shape == (6, 48, 48, 3)
  assert dataset.mean == data.IMAGENET_MEAN
  images, labels = next(iter(data.train_batches(
      dataset.train, batch_size=4, image_size=48, seed=0, epoch=0)))
  assert images.shape == (4, 48, 48, 3) and labels.shape == (4,)


def test_load_food101_mock_default_size_is_jpeg(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    dataset = data.load("food101", tfds_data_dir=str(tmp_path))
  assert dataset.image_size == 224
  assert dataset.train.encoded and dataset.test.encoded
  assert len(dataset.train) == 3 and len(dataset.test) == 3
  assert isinstance(dataset.train.images[0], bytes)
  images, labels = next(iter(data.train_batches(
      dataset.train, batch_size=2, image_size=224, seed=0, epoch=0)))
  assert images.shape == (2, 224, 224, 3) and images.dtype == tf.uint8
  assert labels.dtype == tf.int32
  batches = _batches(data.eval_batches(dataset.test, batch_size=2,
                                       image_size=224))
  assert [b[0].shape for b in batches] == [(2, 224, 224, 3)] * 2
  assert [b[2].tolist() for b in batches] == [[1, 1], [1, 0]]
  assert sorted(np.concatenate([b[1] for b in batches])[:3].tolist()) == sorted(
      dataset.test.labels.tolist())


def test_tfds_download_failure_is_one_line(tmp_path, monkeypatch):
  def fail(self, *args, **kwargs):
    raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'\nmore")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
  message = _usage_error(data.load, "cifar10", tfds_data_dir=str(tmp_path))
  assert "cifar10" in message and str(tmp_path) in message
  assert "folder:PATH" in message and "--tfds_data_dir" in message


# ---------------------------------------------------------------------------
# Image folders.


def _write_image(path: pathlib.Path, value: int, shape=(8, 8)):
  image = np.full(shape + (3,), value, np.uint8)
  if path.suffix.lower() in (".jpg", ".jpeg"):
    encoded = tf.io.encode_jpeg(image, quality=100)
  else:
    encoded = tf.io.encode_png(image)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encoded.numpy())


def _make_folder(root: pathlib.Path, with_test=True) -> pathlib.Path:
  # PNG keeps pixel values exact, so labels can be checked against them:
  # the value is 100 + 10 * class + file number.
  for c, name in enumerate(["cat", "dog", "emu"]):
    for i in range(3):
      _write_image(root / "train" / name / f"{i}.png", 100 + 10 * c + i)
  (root / "train" / "cat" / "notes.txt").write_text("not an image")
  # Upper-case extension, and an image of another size (resized to 8x8).
  _write_image(root / "train" / "dog" / "3.PNG", 113, shape=(12, 10))
  if with_test:
    _write_image(root / "test" / "dog" / "a.png", 210)
    _write_image(root / "test" / "emu" / "b.png", 220)
  return root


def test_folder_classes_labels_and_test_subset(tmp_path):
  root = _make_folder(tmp_path / "ds")
  dataset = data.load(f"folder:{root}")
  assert dataset.name == f"folder:{root.resolve()}"
  assert dataset.class_names == ("cat", "dog", "emu")
  assert dataset.num_classes == 3 and dataset.image_size == 8
  train = dataset.train
  assert train.images.shape == (10, 8, 8, 3) and not train.encoded
  np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(
      train.images[:, 0, 0, 0], [100, 101, 102, 110, 111, 112, 113, 120, 121,
                                 122])
  # Test classes map to train's label numbers.
  np.testing.assert_array_equal(dataset.test.labels, [1, 2])
  np.testing.assert_array_equal(dataset.test.images[:, 0, 0, 0], [210, 220])
  assert dataset.test_split_name == "test"
  # Every pixel of a training image equals its value, in all channels.
  values = train.images[:, 0, 0, 0].astype(np.float64) / 255
  np.testing.assert_allclose(dataset.mean, [values.mean()] * 3, atol=1e-4)
  np.testing.assert_allclose(dataset.std, [values.std()] * 3, atol=1e-4)


def test_folder_max_per_class_keeps_the_first_files(tmp_path):
  root = _make_folder(tmp_path / "ds")
  dataset = data.load(f"folder:{root}", max_per_class=2)
  np.testing.assert_array_equal(dataset.train.labels, [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(dataset.train.images[:, 0, 0, 0],
                                [100, 101, 110, 111, 120, 121])
  assert len(dataset.test) == 2


def test_folder_without_test_and_load_test_false(tmp_path):
  root = _make_folder(tmp_path / "ds", with_test=False)
  assert data.load(f"folder:{root}").test is None
  root = _make_folder(tmp_path / "ds2")
  dataset = data.load(f"folder:{root}", load_test=False)
  assert dataset.test is None and dataset.test_split_name is None


def test_folder_large_image_size_stores_jpegs(tmp_path):
  root = _make_folder(tmp_path / "ds")
  dataset = data.load(f"folder:{root}", image_size=96)
  assert dataset.train.encoded and len(dataset.train) == 10
  image = tf.io.decode_jpeg(dataset.train.images[6]).numpy()
  assert image.shape == (12, 10, 3)  # Smaller than 110: kept as is.
  images, labels, mask = next(iter(data.eval_batches(
      dataset.train, batch_size=4, image_size=96)))
  assert images.shape == (4, 96, 96, 3) and mask.shape == (4,)


def test_folder_default_size_of_a_large_first_image_is_224(tmp_path):
  for c in ("a", "b"):
    _write_image(tmp_path / "train" / c / "0.jpg", 50, shape=(80, 100))
  dataset = data.load(f"folder:{tmp_path}")
  assert dataset.image_size == 224 and dataset.train.encoded
  big = tf.io.decode_jpeg(dataset.train.images[0]).numpy()
  assert big.shape == (80, 100, 3)


def test_folder_errors(tmp_path):
  assert "does not exist" in _usage_error(
      data.load, f"folder:{tmp_path / 'missing'}")
  assert "train" in _usage_error(data.load, f"folder:{tmp_path}")
  (tmp_path / "train").mkdir()
  assert "no class subfolders" in _usage_error(data.load, f"folder:{tmp_path}")
  (tmp_path / "train" / "cat").mkdir()
  (tmp_path / "train" / "cat" / "x.txt").write_text("x")
  assert "no images" in _usage_error(data.load, f"folder:{tmp_path}")
  _write_image(tmp_path / "train" / "cat" / "0.png", 1)
  message = _usage_error(data.load, f"folder:{tmp_path}")
  assert "has 1 class (cat)" in message and "at least 2" in message
  _write_image(tmp_path / "train" / "dog" / "0.png", 2)
  _write_image(tmp_path / "test" / "cow" / "0.png", 3)
  assert "cow" in _usage_error(data.load, f"folder:{tmp_path}")
  assert data.load(f"folder:{tmp_path}", load_test=False).num_classes == 2
  assert "folder" in _usage_error(data.load, "cifar10", max_per_class=5)
  _usage_error(data.load, f"folder:{tmp_path}", max_per_class=-1)
  assert "folder:PATH" in _usage_error(data.load, "folder:")


def test_folder_corrupt_image_is_named(tmp_path):
  root = _make_folder(tmp_path / "ds", with_test=False)
  bad = root / "train" / "dog" / "1.png"
  bad.write_bytes(b"\x89PNG this is not a picture")
  message = _usage_error(data.load, f"folder:{root}")
  assert str(bad) in message
  # Also when the first image, used to choose the size, is the bad one.
  bad = root / "train" / "cat" / "0.png"
  bad.write_bytes(b"")
  assert str(bad) in _usage_error(data.load, f"folder:{root}")


@pytest.mark.parametrize("spec", ["mnist", "", "folder", "imagenet2012"])
def test_unknown_spec(spec):
  assert "cifar10, cifar100, food101, folder:PATH" in _usage_error(
      data.load, spec)


def test_bad_image_size():
  assert "image size" in _usage_error(data.load, "cifar10", image_size=-1)


# ---------------------------------------------------------------------------
# Splitting.


def test_split_sizes_disjoint_and_seeded():
  full = _raw_split(n=50)
  train, val = data.split(full, 0.3, seed=4)
  assert (len(train), len(val)) == (35, 15)
  assert not set(train.labels) & set(val.labels)
  assert sorted(set(train.labels) | set(val.labels)) == list(range(50))
  # Each part keeps the original order, with its images.
  assert list(val.labels) == sorted(val.labels)
  np.testing.assert_array_equal(val.images, full.images[val.labels])
  again = data.split(full, 0.3, seed=4)[1]
  np.testing.assert_array_equal(again.labels, val.labels)
  other = data.split(full, 0.3, seed=5)[1]
  assert list(other.labels) != list(val.labels)
  assert len(data.split(_raw_split(n=5), 0.5, seed=0)[1]) == 3  # 2.5 -> 3.


def test_split_errors():
  small = _raw_split(n=5)
  assert "empty" in _usage_error(data.split, small, 0.01, 0)
  assert "empty" in _usage_error(data.split, small, 0.99, 0)
  for fraction in (0, 1, 1.5, -0.1):
    assert "between 0 and 1" in _usage_error(data.split, small, fraction, 0)


def test_subsample():
  full = _raw_split(n=50)
  assert data.subsample(full, None, 0) is full
  assert data.subsample(full, 0, 0) is full
  part = data.subsample(full, 20, seed=1)
  assert len(part) == 20 and len(set(part.labels)) == 20
  np.testing.assert_array_equal(part.images, full.images[part.labels])
  np.testing.assert_array_equal(data.subsample(full, 20, seed=1).labels,
                                part.labels)
  assert list(data.subsample(full, 20, seed=2).labels) != list(part.labels)
  assert _usage_error(data.subsample, full, 51, 0) == (
      "subsample size 51 is larger than the split (50 images)")
  _usage_error(data.subsample, full, -3, 0)


def test_steps_per_epoch():
  assert data.steps_per_epoch(_raw_split(n=50), 8) == 6
  assert _usage_error(data.steps_per_epoch, _raw_split(n=100), 256) == (
      "batch size 256 is larger than the split (100 images)")
  _usage_error(data.steps_per_epoch, _raw_split(n=100), 0)
  assert data.num_eval_batches(_raw_split(n=50), 8) == 7
  assert data.num_eval_batches(_raw_split(n=48), 8) == 6


# ---------------------------------------------------------------------------
# Batches: determinism, resumption, augmentation, evaluation coverage.


@pytest.mark.parametrize("make", [_raw_split, _jpeg_split], ids=["raw", "jpeg"])
def test_train_batches_resume_and_epochs(make):
  split = make()
  size = 8 if not split.encoded else 24
  kwargs = dict(batch_size=4, image_size=size, seed=7)
  steps = data.steps_per_epoch(split, 4)
  epoch1 = _batches(data.train_batches(split, epoch=1, **kwargs))
  assert len(epoch1) == steps
  images, labels = epoch1[0]
  assert images.shape == (4, size, size, 3) and images.dtype == np.uint8
  assert labels.shape == (4,) and labels.dtype == np.int32
  # Each epoch is a permutation (without the dropped remainder).
  seen = np.concatenate([b[1] for b in epoch1])
  assert len(set(seen)) == steps * 4
  # Resuming at step k yields exactly the batches k.. of the whole epoch.
  resumed = _batches(data.train_batches(split, epoch=1, start_step=2,
                                        **kwargs))
  _assert_same_batches(resumed, epoch1[2:])
  assert _batches(data.train_batches(split, epoch=1, start_step=steps,
                                     **kwargs)) == []
  # Reproducible, and epochs (orders and augmentations) differ.
  _assert_same_batches(_batches(data.train_batches(split, epoch=1, **kwargs)),
                       epoch1)
  epoch2 = _batches(data.train_batches(split, epoch=2, **kwargs))
  assert not np.array_equal(np.concatenate([b[1] for b in epoch2]), seen)
  _usage_error(data.train_batches, split, epoch=1, start_step=steps + 1,
               **kwargs)
  # A run's epochs from one dataset (one iterator) are the epochs one by one, resumed
  # at the same step.
  epoch3 = _batches(data.train_batches(split, epoch=3, **kwargs))
  run = _batches(data.train_batches(split, epoch=1, start_step=2, epochs=4, **kwargs))
  assert len(run) == 3 * steps - 2
  _assert_same_batches(run, epoch1[2:] + epoch2 + epoch3)
  assert (_usage_error(data.train_batches, split, epoch=2, epochs=2, **kwargs)
          == "epochs (2) must be above the first epoch (2)")


def test_augmentation_in_the_compiled_step_gives_the_pipelines_batches():
  split = _raw_split(n=48, size=8)
  host = list(data.train_batches(split, batch_size=16, image_size=8, seed=3, epoch=1))
  deferred = list(data.train_batches(split, batch_size=16, image_size=8, seed=3, epoch=1,
                                     in_step=True, start_step=0))
  assert len(host) == len(deferred) == 3
  xla = tf.function(data.materialize, jit_compile=True)
  graph = tf.function(data.materialize)
  for (images, labels), (batch, deferred_labels) in zip(host, deferred):
    assert isinstance(batch, data.Deferred)
    # The pipeline only gathered: the crop and flip are still to come...
    assert not np.array_equal(batch.images.numpy(), images.numpy())
    # ...and the step's (XLA or graph mode) are the pipeline's, bit for bit.
    np.testing.assert_array_equal(xla(batch).numpy(), images.numpy())
    np.testing.assert_array_equal(graph(batch).numpy(), images.numpy())
    np.testing.assert_array_equal(deferred_labels.numpy(), labels.numpy())
  # Anything else passes through; JPEGs are augmented in the pipeline whatever in_step says.
  assert data.materialize(host[0][0]) is host[0][0]
  jpegs = data.train_batches(_jpeg_split(), batch_size=4, image_size=16, seed=0, epoch=0,
                             in_step=True)
  assert all(isinstance(images, tf.Tensor) for images, _ in jpegs)


def test_train_batches_without_augmentation_are_the_stored_images():
  split = _raw_split(n=50)
  for images, labels in _batches(data.train_batches(
      split, batch_size=8, image_size=8, seed=0, epoch=0, augment=False)):
    np.testing.assert_array_equal(images, split.images[labels])


def test_crop_and_flip_are_crops_of_the_padded_image():
  split = _raw_split(n=64, size=8)
  pad = data.CROP_PADDING
  flips = set()
  for images, labels in _batches(data.train_batches(
      split, batch_size=16, image_size=8, seed=3, epoch=0)):
    for image, label in zip(images, labels):
      padded = np.pad(split.images[label], [(pad, pad), (pad, pad), (0, 0)])
      matches = [(dy, dx, flip)
                 for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 for flip in (False, True)
                 if np.array_equal(
                     image, (padded[:, ::-1] if flip else padded)
                     [dy:dy + 8, dx:dx + 8])]
      assert matches, label
      flips.add(matches[0][2])
  assert flips == {False, True}


def test_image_size_must_match_raw_storage():
  message = _usage_error(data.train_batches, _raw_split(), batch_size=4,
                         image_size=32, seed=0, epoch=0)
  assert "8x8" in message


@pytest.mark.parametrize("make", [_raw_split, _jpeg_split], ids=["raw", "jpeg"])
def test_stream_batches_do_not_depend_on_the_start(make):
  split = make()
  size = 8 if not split.encoded else 24
  kwargs = dict(batch_size=4, image_size=size, seed=3, augment=True)
  steps = data.steps_per_epoch(split, 4)
  total = 2 * steps + 2  # Crosses two epoch boundaries.
  stream = _batches(data.stream_batches(split, **kwargs).take(total))
  for start in (steps - 1, steps, steps + 1):
    resumed = _batches(data.stream_batches(split, start_step=start, **kwargs)
                       .take(total - start))
    _assert_same_batches(resumed, stream[start:])
  first = np.concatenate([b[1] for b in stream[:steps]])
  second = np.concatenate([b[1] for b in stream[steps:2 * steps]])
  assert len(set(first)) == len(set(second)) == steps * 4
  assert not np.array_equal(first, second)
  with pytest.raises(errors.UsageError):
    data.stream_batches(_raw_split(n=3), batch_size=4, image_size=8, seed=0)


def test_eval_batches_cover_every_example_once_with_real_padding():
  split = _raw_split(n=50)
  batches = _batches(data.eval_batches(split, batch_size=8, image_size=8))
  assert len(batches) == data.num_eval_batches(split, 8) == 7
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  mask = np.concatenate([b[2] for b in batches])
  assert mask.dtype == np.float32 and mask.sum() == 50
  order = data.eval_order(50)
  np.testing.assert_array_equal(labels[mask == 1], order)
  np.testing.assert_array_equal(np.sort(labels[mask == 1]), np.arange(50))
  # The padding wraps around to the first examples of the order: real images.
  np.testing.assert_array_equal(labels[mask == 0], order[:6])
  np.testing.assert_array_equal(images, split.images[labels])
  # A split smaller than the batch wraps around several times.
  tiny = _batches(data.eval_batches(_raw_split(n=3), batch_size=8,
                                    image_size=8))
  order = data.eval_order(3).tolist()
  assert tiny[0][1].tolist() == (order * 3)[:8]
  assert tiny[0][2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]


def test_eval_batches_of_a_class_sorted_split_mix_classes():
  # Folders are stored class by class; with batch-statistics BatchNorm a batch of
  # one class is normalised with that class's statistics, so evaluation must mix.
  labels = np.repeat(np.arange(10, dtype=np.int32), 40)
  split = data.ArraySplit(np.zeros((400, 8, 8, 3), np.uint8), labels, encoded=False)
  for _, batch_labels, _ in _batches(data.eval_batches(split, batch_size=64,
                                                       image_size=8)):
    assert len(np.unique(batch_labels)) >= 7, batch_labels
  assert data.eval_order(400).tolist() == data.eval_order(400).tolist()


def test_eval_batches_of_jpegs_are_deterministic_centre_crops():
  split = _jpeg_split(n=5)
  first = _batches(data.eval_batches(split, batch_size=4, image_size=32))
  _assert_same_batches(
      _batches(data.eval_batches(split, batch_size=4, image_size=32)), first)
  order = data.eval_order(5).tolist()
  assert first[1][1].tolist() == [order[4]] + order[:3]
  assert first[1][2].tolist() == [1, 0, 0, 0]
  # The padding is the same view of the first example as in the first batch.
  np.testing.assert_array_equal(first[1][0][1], first[0][0][0])


# ---------------------------------------------------------------------------
# The real CIFAR-10 image folder of the development machines.


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(),
                    reason=f"the CIFAR-10 image folder {REAL_CIFAR10} is "
                    "absent (it exists on development and CI machines only)")
def test_real_cifar10_folder():
  # All 50,000 images take ~6 s to load on an idle 2-core machine, several
  # times that when other tests share it: 300 per class keep this quick.
  dataset = data.load(f"folder:{REAL_CIFAR10}", max_per_class=300)
  assert dataset.num_classes == 10 and dataset.class_names[0] == "airplane"
  assert dataset.image_size == 32 and dataset.test is None
  assert dataset.train.images.shape == (3000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(dataset.train.labels), [300] * 10)
  # The JPEG copy is close to the original's statistics.
  np.testing.assert_allclose(dataset.mean, data.CIFAR_MEAN, atol=0.02)
  np.testing.assert_allclose(dataset.std, data.CIFAR_STD, atol=0.02)
  train, val = data.split(dataset.train, 0.5, seed=0)
  assert len(train) == len(val) == 1500
  images, labels = next(iter(data.train_batches(
      train, batch_size=128, image_size=32, seed=0, epoch=0)))
  assert images.shape == (128, 32, 32, 3) and labels.shape == (128,)


def test_the_search_streams_count_is_infinite_so_a_zip_has_the_training_count():
  split = _raw_split(n=10)
  stream = data.stream_batches(split, batch_size=4, image_size=8, seed=0)
  train = data.train_batches(split, batch_size=4, image_size=8, seed=0, epoch=0, epochs=3)
  assert int(stream.cardinality()) == tf.data.INFINITE_CARDINALITY
  assert int(tf.data.Dataset.zip((train, stream)).cardinality()) == 6
