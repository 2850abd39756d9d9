"""DiffStride: sizes, the FFT definition, gradients, the regulariser, save/load, training."""

import math
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import data as data_lib
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import diffstride as diffstride_method
from mixnas_tf.methods import standalone
from mixnas_tf.nn import diffstride
from mixnas_tf.nn import interpret
from mixnas_tf.nn import network
from mixnas_tf.training import optim

SPACE = spaces.get_space("resnet20")
DEFAULT = spaces.parse_config(SPACE, "4,3,3")
CIFAR10 = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/cifar10"


def _x(shape, seed=0):
  return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def _images(batch=4, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (batch, 32, 32, 3)).astype(np.uint8))


@pytest.mark.parametrize("length, stride, smoothness, expected", [
    (32, 2.0, 4.0, 20),   # 2 ceil(8 + 2)
    (32, 1.0, 4.0, 32),   # capped at N
    (32, 4.0, 4.0, 12),   # 2 ceil(4 + 2)
    (32, 2.5, 4.0, 18),   # 2 ceil(6.4 + 2)
    (32, 1.3, 4.0, 30),   # 2 ceil(12.3 + 2)
    (31, 2.0, 4.0, 20),   # 2 ceil(7.75 + 2)
    (16, 3.0, 1.0, 8),    # 2 ceil(2.67 + 0.5)
    (16, 4.0, 1.0, 6),    # 2 ceil(2 + 0.5)
    (8, 1.0, 4.0, 8),
])
def test_output_length(length, stride, smoothness, expected):
  assert diffstride.output_length(length, stride, smoothness) == expected
  assert diffstride.output_length(length, stride, smoothness, cropping=False) == length


@pytest.mark.parametrize("data_format", diffstride.DATA_FORMATS)
@pytest.mark.parametrize("strides, expected", [
    ((2.0, 2.0), (20, 16)),   # integer strides; W = 24: 2 ceil(6 + 2)
    ((2.5, 1.5), (18, 20)),   # fractional: 2 ceil(6.4 + 2), 2 ceil(8 + 2)
    ((1.0, 3.0), (32, 12)),   # stride 1 keeps the size
])
def test_output_sizes_static_and_dynamic(data_format, strides, expected):
  layer = diffstride.DiffStride(strides=strides, data_format=data_format)
  x = _x((2, 32, 24, 3))
  if data_format == "channels_first":
    x = tf.transpose(x, (0, 3, 1, 2))
  shape = (2,) + expected + (3,) if data_format == "channels_last" else (2, 3) + expected
  dynamic = layer(x)
  assert dynamic.shape == shape
  assert layer.output_size_for((32, 24)) == expected
  static = layer(x, output_size=expected)
  assert static.shape == shape
  np.testing.assert_allclose(static, dynamic, atol=1e-6)


def test_channels_first_equals_channels_last():
  x = _x((2, 20, 20, 5))
  last = diffstride.DiffStride(strides=(2.3, 1.7))(x)
  first = diffstride.DiffStride(strides=(2.3, 1.7), data_format="channels_first")(
      tf.transpose(x, (0, 3, 1, 2)))
  np.testing.assert_allclose(tf.transpose(first, (0, 2, 3, 1)), last, atol=1e-5)


@pytest.mark.parametrize("strides, smoothness", [((2.0, 2.0), 4.0), ((2.6, 3.1), 4.0),
                                                 ((1.7, 2.2), 2.0)])
def test_equals_rfft2d_mask_crop_irfft2d(strides, smoothness):
  """The matrix form is the FFT pipeline: rfft2d, mask, crop, irfft2d (times h w / H W)."""
  x = _x((2, 32, 32, 3), seed=1)
  layer = diffstride.DiffStride(strides=strides, smoothness_factor=smoothness)
  y = layer(x)
  h, w = y.shape[1:3]
  n = 32
  spectrum = tf.signal.rfft2d(tf.transpose(x, (0, 3, 1, 2)))
  freq_h = np.minimum(np.arange(n), n - np.arange(n))  # |frequency| of each rfft2d row.
  freq_w = np.arange(n // 2 + 1)
  mask_h = np.clip((n / (2 * strides[0]) + smoothness / 2 - freq_h) / smoothness, 0, 1)
  mask_w = np.clip((n / (2 * strides[1]) + smoothness / 2 - freq_w) / smoothness, 0, 1)
  spectrum *= tf.constant((mask_h[:, None] * mask_w[None, :]).astype(np.complex64))
  cropped = tf.concat([spectrum[:, :, :h // 2, :w // 2 + 1],
                       spectrum[:, :, n - h // 2:, :w // 2 + 1]], axis=2)
  expected = tf.signal.irfft2d(cropped, fft_length=[h, w]) * (h * w / n**2)
  np.testing.assert_allclose(y, tf.transpose(expected, (0, 2, 3, 1)), atol=2e-5)


@pytest.mark.parametrize("size, strides", [(32, (2.7, 1.9)),
                                           # Strides above N / R = 2: the centred ramp
                                           # alone passed 0.75 of the mean at S = 4.
                                           (8, (4.0, 3.0)), (8, (7.5, 2.5))])
def test_amplitude_is_preserved(size, strides):
  y = diffstride.DiffStride(strides=strides, smoothness_factor=4.0)(
      tf.fill((1, size, size, 2), 3.0))
  assert y.shape[1] < size
  np.testing.assert_allclose(y, 3.0, atol=1e-5)


@pytest.mark.parametrize("data_format", diffstride.DATA_FORMATS)
@pytest.mark.parametrize("strides", [(2.0, 2.0), (1.0, 1.0), (2.6, 1.4), (3.0, 1.7)])
def test_gradient_reaches_the_stride(data_format, strides):
  layer = diffstride.DiffStride(strides=strides, data_format=data_format)
  layer.build(None)
  x = _x((2, 32, 32, 3), seed=2)
  if data_format == "channels_first":
    x = tf.transpose(x, (0, 3, 1, 2))
  size = layer.output_size_for((32, 32))

  def loss():
    return tf.reduce_sum(layer(x, output_size=size) ** 2)

  with tf.GradientTape() as tape:
    value = loss()
  grad = tf.convert_to_tensor(tape.gradient(value, layer.strides)).numpy()[0]
  assert np.all(np.isfinite(grad)) and np.all(grad != 0), grad
  # Central differences at the same (static) output size agree with the gradient, away
  # from the strides where the size changes (S = 2: N / (2S) + R / 2 = 10), whose mask is
  # a kink, and from the lower limit.
  for axis in range(2):
    if strides[axis] == 1.0 or (16 / strides[axis] + 2).is_integer():
      continue
    eps = np.zeros((1, 2), np.float32)
    eps[0, axis] = 1e-2
    base = layer.strides.numpy()
    layer.strides.assign(base + eps)
    plus = float(loss())
    layer.strides.assign(base - eps)
    minus = float(loss())
    layer.strides.assign(base)
    assert (plus - minus) / 2e-2 == pytest.approx(grad[axis], rel=2e-2)


def test_shared_and_stacked_strides():
  shared = diffstride.DiffStride(strides=2.5, shared=True, num_models=3)
  y = shared(_x((1, 32, 32, 1)), model_index=tf.constant(2))
  assert shared.strides.shape == (3, 1) and y.shape == (1, 18, 18, 1)
  layer = diffstride.DiffStride(strides=2.0, num_models=2)
  layer.build(None)
  layer.strides.assign([[2.0, 2.0], [4.0, 1.0]])
  assert layer.output_size_for((32, 32), model_index=1) == (12, 32)
  assert layer(_x((1, 32, 32, 1)), model_index=tf.constant(1)).shape == (1, 12, 32, 1)
  assert layer(_x((1, 32, 32, 1)), model_index=tf.constant(0)).shape == (1, 20, 20, 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(strides=0.5), "Received: strides=(0.5, 0.5)"),
    (dict(strides=(2.0, 3.0), shared=True), "shared=True needs equal strides"),
    (dict(smoothness_factor=0.0), "Received: smoothness_factor=0.0"),
    (dict(lower_limit_stride=0.5), "Received: lower_limit_stride=0.5"),
    (dict(strides=3.0, upper_limit_stride=2.0), "strides must be within"),
    (dict(data_format="NHWC"), "Received: data_format='NHWC'"),
    (dict(strides=(1, 2, 3)), "Received: strides=(1, 2, 3)"),
])
def test_validation_messages(kwargs, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    diffstride.DiffStride(**kwargs)


def test_static_sizes_compile_with_xla_once_per_size():
  layer = diffstride.DiffStride(strides=2.0)
  layer.build(None)

  @tf.function(jit_compile=True)
  def f(x, size):
    return layer(x, output_size=size)

  x = _x((2, 32, 32, 3))
  for size in ((20, 20), (20, 20), (22, 20)):
    assert f(x, size).shape == (2, *size, 3)
  assert f.experimental_get_tracing_count() == 2


def test_sliced_sgd_applies_the_constraint_and_skips_decay():
  layer = diffstride.DiffStride(strides=(1.2, 3.0), upper_limit_stride=3.5)
  layer.build(None)
  opt = optim.SlicedSGD([layer.strides], momentum=0.0, weight_decay=0.5)
  grad = tf.IndexedSlices(tf.constant([[10.0, -10.0]]), tf.constant([0]), tf.constant([1, 2]))
  opt.apply([grad], tf.constant(0), tf.constant(0.1))
  np.testing.assert_allclose(layer.strides.numpy(), [[1.0, 3.5]])  # Clipped to the limits.
  opt.apply([tf.IndexedSlices(tf.zeros((1, 2)), tf.constant([0]), tf.constant([1, 2]))],
            tf.constant(0), tf.constant(0.1))
  np.testing.assert_allclose(layer.strides.numpy(), [[1.0, 3.5]])  # No weight decay.


def test_layer_config_round_trip():
  layer = diffstride.DiffStride(strides=(2.5, 1.5), smoothness_factor=3.0, shared=False,
                                upper_limit_stride=4.0, data_format="channels_first",
                                num_models=2, name="ds")
  clone = diffstride.DiffStride.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
  assert restored.get_config() == layer.get_config()


# The network --------------------------------------------------------------------------


def _network(**kwargs):
  keras.utils.set_random_seed(0)
  return network.SwitchableResNet(configs=[DEFAULT], downsample="diffstride", **kwargs)


def test_network_places_diffstride_at_every_candidate():
  model = _network()
  assert model.learned_strides() == {i: (2.0, 2.0) if i in (4, 7) else (1.0, 1.0)
                                     for i in range(1, 10)}
  plan = model.size_plan(32)
  assert plan == ((32, 32),) * 4 + ((20, 20),) * 3 + ((14, 14),) * 3
  assert model(_images(), config=plan).shape == (4, 10)
  np.testing.assert_allclose(model(_images(), config=plan), model(_images()), atol=1e-4)
  # 18 strides more than the max-pool network.
  maxpool = network.SwitchableResNet(configs=[DEFAULT])
  assert model.count_params_per_model(DEFAULT) == maxpool.count_params_per_model(DEFAULT) + 18
  with pytest.raises(ValueError, match="starting with the stem's output"):
    model(_images(), config=((16, 16),) * 10)
  with pytest.raises(ValueError, match="Received: 2 configurations"):
    network.SwitchableResNet(configs=[DEFAULT, DEFAULT], downsample="diffstride")
  # What the compiled steps receive: the plan for XLA, else the configuration.
  assert model.static_config(DEFAULT, 32) == plan
  assert model.static_config(DEFAULT, 32, static_shapes=False) == DEFAULT
  assert maxpool.static_config(DEFAULT, 32) == DEFAULT


def _macs_at(model, sizes):
  """The network's MACs at the given per-layer sizes (ints, floats or tensors)."""
  count = interpret.Count()
  model.forward(count, (sizes[0][0], sizes[0][1], 3), model.configs[0], sizes)
  return count.macs


def test_diffstride_macs_counts_the_first_conv_at_the_input_size():
  halving = [(32, 32)] * 4 + [(16, 16)] * 3 + [(8, 8)] * 3
  extra = (32**2 - 16**2) * 9 * 16 * 32 + (16**2 - 8**2) * 9 * 32 * 64
  model = _network()
  assert _macs_at(model, halving) == network.costs(DEFAULT, 32, "maxpool")["macs"] + extra
  assert model.costs(plan=halving)["macs"] == _macs_at(model, halving)


def test_regularizer_value_and_gradient():
  model = _network(stride_regularizer=0.5)
  full = _macs_at(model, [(32, 32)] * 10)
  halving = [(32, 32)] * 4 + [(16, 16)] * 3 + [(8, 8)] * 3
  k = tf.constant(0)
  with tf.GradientTape() as tape:
    cost = model.stride_cost(k, (32, 32))
  assert float(cost) == pytest.approx(_macs_at(model, halving) / full, rel=1e-6)
  grads = tape.gradient(cost, [layer.strides for layer in model.diffstride_layers().values()])
  grads = np.concatenate([tf.convert_to_tensor(g).numpy() for g in grads])
  assert np.all(np.isfinite(grads)) and np.all(grads < 0)  # Larger strides cost less.
  # d cost / d S_h of layer 4, by central differences of the exact float arithmetic.
  def relaxed(s4):
    sizes = [(32.0, 32.0)] * 4 + [(32 / s4, 16.0)] * 3 + [(16 / s4, 8.0)] * 3
    return _macs_at(model, sizes) / full
  numeric = (relaxed(2.0 + 1e-4) - relaxed(2.0 - 1e-4)) / 2e-4
  assert grads[3, 0] == pytest.approx(numeric, rel=1e-3)
  # The model adds stride_regularizer * cost to its losses when called.
  model(_images(), config=model.size_plan(32), training=True)
  assert len(model.losses) == 1
  assert float(model.losses[0]) == pytest.approx(0.5 * float(cost), rel=1e-6)


def test_nearest_config_uses_the_cumulative_profile():
  strides = {i: (1.0, 1.0) for i in range(1, 10)}
  assert diffstride_method.nearest_config(SPACE, {**strides, 4: (2, 2), 7: (2, 2)}) == (DEFAULT, 0.0)
  # 1.2 at layer 4 then 1.7 at layer 5 (2.04 in all) is [5,2,3], not [4,3,3].
  config, distance = diffstride_method.nearest_config(
      SPACE, {**strides, 4: (1.2, 1.2), 5: (1.7, 1.7), 7: (2, 2)})
  assert spaces.to_stages(SPACE, config) == (5, 2, 3)
  p4, p5 = math.log2(1.2), math.log2(1.2) + math.log2(1.7)
  assert distance == pytest.approx(p4**2 + 5 * (p5 - 1)**2)


def test_keras_save_load_round_trip(tmp_path):
  model = _network(diffstride={"smoothness_factor": 3.0}, stride_regularizer=0.1)
  model.blocks[4].pool.strides.assign([[1.6, 1.3]])  # A learned, non-initial value.
  plan = model.size_plan(32)
  path = str(tmp_path / "diffstride.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert loaded.get_config() == model.get_config()
  assert loaded.learned_strides() == model.learned_strides()
  assert loaded.size_plan(32) == plan
  np.testing.assert_allclose(loaded(_images(), config=plan), model(_images(), config=plan),
                             atol=1e-5)


@pytest.mark.skipif(not (CIFAR10 / "train").is_dir(),
                    reason=f"the real CIFAR-10 folder is absent ({CIFAR10})")
def test_short_training_on_real_cifar10_moves_the_strides(tmp_path):
  dataset = data_lib.load(f"folder:{CIFAR10}", max_per_class=24, load_test=False)
  train, test = data_lib.split(dataset.train, 0.25, seed=0)
  cfg = standalone.StandaloneConfig(
      dataset=f"folder:{CIFAR10}", config="4,3,3", downsample="diffstride", epochs=1,
      batch_size=30, eval_batch_size=60, smoothness_factor=3.0, stride_regularizer=0.1,
      jit_compile=False, progress=False, log_every=1)
  metrics = standalone.train_standalone(cfg, str(tmp_path), loaded=(dataset, train, test,
                                                                    "holdout"))
  moved = {layer: s for layer, s in metrics["learned_strides"].items()
           if max(abs(v - (2.0 if layer in ("4", "7") else 1.0)) for v in s) > 1e-3}
  assert moved, metrics["learned_strides"]
  assert metrics["nearest_config"]["stages"] == [4, 3, 3]
  assert metrics["macs"] == _macs_at(_network(), [tuple(s) for s in metrics["layer_sizes"]])
  assert 0 < metrics["relative_cost"] < 1 and metrics["test_images"] == 60
  assert metrics["trace_counts"]["train_step"] == 1  # Sizes in-graph: no retrace.
  history = workdir_lib.read_json(str(tmp_path / "state.json"))["history"]
  assert history[-1]["train/regularization_loss"] > 0
  assert "diffstride/stride_4_h" in history[-1]
