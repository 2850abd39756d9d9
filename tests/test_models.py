"""Shapes and behaviour of the stacked layers and the switchable ResNet."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import layers
from mixnas_tf import models
from mixnas_tf import search_space as ss

SPACE = ss.get_space("resnet20")
DEFAULT = ss.parse_config(SPACE, "4,3,3")
EARLY = ss.parse_config(SPACE, "1,1,8")
LATE = ss.parse_config(SPACE, "8,1,1")


def _images(batch=4, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8))


@pytest.mark.parametrize("mode", layers.DOWNSAMPLE_MODES)
@pytest.mark.parametrize("config", [DEFAULT, EARLY, LATE])
def test_every_layer_output_shape(mode, config):
  model = models.SwitchableResNet(configs=[DEFAULT, EARLY, LATE], num_models=2,
                                  downsample=mode, batchnorm="batch_stats")
  x = tf.cast(_images(), tf.float32)
  k = tf.constant(1)
  x = model.stem(x, k)
  assert x.shape == (4, 32, 32, 16)
  divisors = ss.resolution_divisors(SPACE, config)
  for i, block in enumerate(model.blocks, start=1):
    x = block(x, k, downsample=bool(config[i]))
    assert x.shape == (4, 32 // divisors[i], 32 // divisors[i], SPACE.widths[i]), (i, mode)
  assert model(_images(), config=config, model_index=k).shape == (4, 10)


def test_odd_sizes_round_up():
  block = layers.SwitchableBlock(16, 32, downsample_mode="conv")
  block.build(None)
  assert block(tf.zeros((2, 7, 9, 16)), tf.constant(0), downsample=True).shape == (2, 4, 5, 32)
  assert layers.pool2x2(tf.zeros((1, 7, 9, 3)), "maxpool").shape == (1, 4, 5, 3)


def test_weight_sets_are_independent_and_selected_by_index():
  model = models.SwitchableResNet(configs=[DEFAULT], num_models=3, batchnorm="batch_stats")
  for v in model.trainable_variables:
    assert v.shape[0] == 3
  kernel = model.stem.kernel.numpy()
  assert not np.allclose(kernel[0], kernel[1])  # Initialised independently.
  # He-normal per slice: the fan-in of a slice, not of the stack.
  assert abs(kernel.std() - np.sqrt(2.0 / 27)) < 0.03
  outs = [model(_images(), config=DEFAULT, model_index=tf.constant(k)).numpy()
          for k in range(3)]
  assert not np.allclose(outs[0], outs[1])
  # Copying slice 2 into slice 0 makes model 0 compute what model 2 does.
  for v in model.variables:
    value = v.numpy()
    value[0] = value[2]
    v.assign(value)
  np.testing.assert_allclose(
      model(_images(), config=DEFAULT, model_index=tf.constant(0)).numpy(), outs[2],
      rtol=1e-5, atol=1e-5)


def test_sublayers_only_where_needed():
  # Block 2 keeps its width; in conv mode it needs a stride-2 shortcut only where some
  # configuration downsamples there.
  only_default = models.SwitchableResNet(configs=[DEFAULT], downsample="conv")
  assert not only_default.blocks[1].has_projection
  assert only_default.blocks[3].has_projection  # 16 -> 32 at layer 4.
  with_early = models.SwitchableResNet(configs=[DEFAULT, EARLY], downsample="conv")
  assert with_early.blocks[1].has_projection
  pooled = models.SwitchableResNet(configs=[DEFAULT, EARLY], downsample="maxpool")
  assert not pooled.blocks[1].has_projection
  with pytest.raises(ValueError, match="not built for configuration"):
    only_default(_images(), config=EARLY)


def test_parameter_count_of_resnet20():
  model = models.SwitchableResNet(configs=[DEFAULT], batchnorm="standard")
  # 0.27 M parameters: convs 268,336 + classifier 650 + BN affine 2 x 1,360... counted
  # exactly from the layer widths below.
  convs = 3 * 3 * 3 * 16 + 6 * 9 * 16 * 16 + 9 * 16 * 32 + 5 * 9 * 32 * 32 + 9 * 32 * 64 \
      + 5 * 9 * 64 * 64 + 16 * 32 + 32 * 64
  bn_channels = 16 + 2 * 3 * 16 + 2 * 3 * 32 + 2 * 3 * 64 + 32 + 64
  expected = convs + 64 * 10 + 10 + 2 * bn_channels
  assert model.count_params_per_model(DEFAULT) == expected
  assert models.SwitchableResNet(configs=[DEFAULT], batchnorm="batch_stats") \
      .count_params_per_model(DEFAULT) == convs + 650


def test_standard_batchnorm_updates_only_the_trained_slice():
  bn = layers.StackedBatchNorm(4, num_models=3, mode="standard")
  bn.build(None)
  x = tf.random.stateless_normal((8, 2, 2, 4), seed=(1, 2)) * 3.0 + 5.0
  bn(x, tf.constant(1), training=True)
  mean = bn.moving_mean.numpy()
  assert np.all(mean[0] == 0) and np.all(mean[2] == 0)
  np.testing.assert_allclose(mean[1], 0.1 * tf.reduce_mean(x, [0, 1, 2]).numpy(), rtol=1e-5)
  # Inference uses the moving statistics of the slice; batch_stats mode never does.
  y = bn(x, tf.constant(0), training=False).numpy()
  np.testing.assert_allclose(y, x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-5)
  bs = layers.StackedBatchNorm(4, num_models=3, mode="batch_stats")
  bs.build(None)
  assert not bs.weights
  y = bs(x, tf.constant(2), training=False).numpy()
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_mixed_precision_keeps_float32_logits():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = models.SwitchableResNet(configs=[DEFAULT], num_models=2)
    assert model.stem.compute_dtype == "bfloat16"
    assert model.stem.kernel.dtype == "float32"
    out = model(_images(), config=DEFAULT, model_index=tf.constant(1))
    assert out.dtype == tf.float32
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip_and_keras_file(tmp_path):
  model = models.SwitchableResNet(configs=[DEFAULT, EARLY], num_models=2, num_classes=5,
                                  downsample="avgpool", batchnorm="standard",
                                  mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
  config = model.get_config()
  json.dumps(config)
  clone = models.SwitchableResNet.from_config(config)
  assert clone.get_config() == config
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  for config_code in (DEFAULT, EARLY):
    np.testing.assert_allclose(
        loaded(_images(), config=config_code, model_index=tf.constant(1)).numpy(),
        model(_images(), config=config_code, model_index=tf.constant(1)).numpy(),
        rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="Received: downsample_mode='stride3'"):
    layers.SwitchableBlock(16, 16, downsample_mode="stride3")
  with pytest.raises(ValueError, match="Received: mode='group'"):
    layers.StackedBatchNorm(16, mode="group")
  with pytest.raises(ValueError, match="num_models=0"):
    layers.StackedConv2D(16, 3, 3, num_models=0)
