"""The network: stacked layers, blocks, the switchable ResNet of every space and op."""

import itertools
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.nn import blocks
from mixnas_tf.nn import interpret
from mixnas_tf.nn import network
from mixnas_tf.nn import ops
from mixnas_tf.nn import stacked

SPACE = spaces.get_space("resnet20")
DEFAULT = spaces.parse_config(SPACE, "4,3,3")
EARLY = spaces.parse_config(SPACE, "1,1,8")
LATE = spaces.parse_config(SPACE, "8,1,1")


def _images(batch=4, size=32, seed=0):
  rng = np.random.default_rng(seed)
  return tf.constant(rng.integers(0, 256, (batch, size, size, 3)).astype(np.uint8))


@pytest.mark.parametrize("mode", ops.FIXED)
@pytest.mark.parametrize("config", [DEFAULT, EARLY, LATE])
def test_every_layer_output_shape(mode, config):
  model = network.SwitchableResNet(configs=[DEFAULT, EARLY, LATE], num_models=2,
                                  downsample=mode, batchnorm="batch_stats")
  x = tf.cast(_images(), tf.float32)
  k = tf.constant(1)
  x = model.stem(x, k)
  assert x.shape == (4, 32, 32, 16)
  divisors = list(itertools.accumulate((2 if d else 1 for d in config), lambda a, b: a * b))
  for i, block in enumerate(model.blocks, start=1):
    x = block(x, k, downsample=bool(config[i]))
    assert x.shape == (4, 32 // divisors[i], 32 // divisors[i], SPACE.widths[i]), (i, mode)
  assert model(_images(), config=config, model_index=k).shape == (4, 10)


def test_odd_sizes_round_up():
  for mode in ops.FIXED:
    for width in (16, 32):  # Without and with a projection.
      block = blocks.BasicBlock(16, width, downsample=mode)
      block.build(None)
      out = block(tf.zeros((2, 7, 9, 16)), tf.constant(0), downsample=True)
      assert out.shape == (2, 4, 5, width), mode
  f = interpret.Execute(tf.constant(0), False)
  assert f.pool(tf.zeros((1, 7, 9, 3)), "max").shape == (1, 4, 5, 3)
  assert f.subsample(tf.zeros((1, 7, 9, 3))).shape == (1, 4, 5, 3)


def test_weight_sets_are_independent_and_selected_by_index():
  model = network.SwitchableResNet(configs=[DEFAULT], num_models=3, batchnorm="batch_stats")
  for v in model.trainable_variables:
    assert v.shape[0] == 3
  kernel = model.stem.conv.kernel.numpy()
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
  # Projections exist where the width changes, whatever the op: a "conv" block that
  # downsamples without one takes the parameter-free strided identity (reference
  # ResNet18/50), so the op changes no parameter count.
  for mode in ops.FIXED:
    model = network.SwitchableResNet(configs=[DEFAULT, EARLY], downsample=mode)
    assert [b.has_projection for b in model.blocks] == [i in (4, 7) for i in range(1, 10)]
    assert model.count_params_per_model(EARLY) == model.count_params_per_model(DEFAULT)
  only_default = network.SwitchableResNet(configs=[DEFAULT], downsample="conv")
  with pytest.raises(ValueError, match="not built for configuration"):
    only_default(_images(), config=EARLY)


def test_parameter_count_of_resnet20():
  model = network.SwitchableResNet(configs=[DEFAULT], batchnorm="standard")
  # 0.27 M parameters: convs 268,336 + classifier 650 + BN affine 2 x 1,360... counted
  # exactly from the layer widths below.
  convs = 3 * 3 * 3 * 16 + 6 * 9 * 16 * 16 + 9 * 16 * 32 + 5 * 9 * 32 * 32 + 9 * 32 * 64 \
      + 5 * 9 * 64 * 64 + 16 * 32 + 32 * 64
  bn_channels = 16 + 2 * 3 * 16 + 2 * 3 * 32 + 2 * 3 * 64 + 32 + 64
  expected = convs + 64 * 10 + 10 + 2 * bn_channels
  assert model.count_params_per_model(DEFAULT) == expected
  assert network.SwitchableResNet(configs=[DEFAULT], batchnorm="batch_stats") \
      .count_params_per_model(DEFAULT) == convs + 650


def test_standard_batchnorm_updates_only_the_trained_slice():
  bn = stacked.StackedBatchNorm(4, num_models=3, mode="standard")
  bn.build(None)
  x = tf.random.stateless_normal((8, 2, 2, 4), seed=(1, 2)) * 3.0 + 5.0
  bn(x, tf.constant(1), training=True)
  mean = bn.moving_mean.numpy()
  assert np.all(mean[0] == 0) and np.all(mean[2] == 0)
  np.testing.assert_allclose(mean[1], 0.1 * tf.reduce_mean(x, [0, 1, 2]).numpy(), rtol=1e-5)
  # Inference uses the moving statistics of the slice; batch_stats mode never does.
  y = bn(x, tf.constant(0), training=False).numpy()
  np.testing.assert_allclose(y, x.numpy() / np.sqrt(1 + 1e-5), rtol=1e-5)
  bs = stacked.StackedBatchNorm(4, num_models=3, mode="batch_stats")
  bs.build(None)
  assert not bs.weights
  y = bs(x, tf.constant(2), training=False).numpy()
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)


def test_mixed_precision_keeps_float32_logits():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = network.SwitchableResNet(configs=[DEFAULT], num_models=2)
    assert model.stem.compute_dtype == "bfloat16"
    assert model.stem.conv.kernel.dtype == "float32"
    out = model(_images(), config=DEFAULT, model_index=tf.constant(1))
    assert out.dtype == tf.float32
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip_and_keras_file(tmp_path):
  model = network.SwitchableResNet(configs=[DEFAULT, EARLY], num_models=2, num_classes=5,
                                  downsample="avgpool", batchnorm="standard",
                                  mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
  config = model.get_config()
  json.dumps(config)
  clone = network.SwitchableResNet.from_config(config)
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
  with pytest.raises(ValueError, match="Received: downsample='stride3'"):
    blocks.BasicBlock(16, 16, downsample="stride3")
  with pytest.raises(ValueError, match="Received: mode='group'"):
    stacked.StackedBatchNorm(16, mode="group")
  with pytest.raises(ValueError, match="num_models=0"):
    stacked.StackedConv2D(16, 3, 3, num_models=0)


# Maxpool MACs per 32x32 image, 10 classes. By hand for [4,3,3]:
#   stem   32*32*3*16*9                                   =    442,368
#   b1-3   3 * 32*32*9*(16*16 + 16*16)                    = 14,155,776
#   b4     16*16*(9*(16*32 + 32*32) + 16*32)  (pooled)    =  3,670,016
#   b5-6   2 * 16*16*9*(32*32 + 32*32)                    =  9,437,184
#   b7     8*8*(9*(32*64 + 64*64) + 32*64)    (pooled)    =  3,670,016
#   b8-9   2 * 8*8*9*(64*64 + 64*64)                      =  9,437,184
#   dense  64*10                                          =        640
#   total                                                 = 40,813,184
# (An independent Keras build of the same network, counting conv and dense
# kernels times output positions, gives the same numbers for all 36.)
MAXPOOL_MACS = {
    (4, 3, 3): 40_813_184,
    (1, 1, 8): 18_596_480,
    (8, 1, 1): 149_340_800,
}
MAXPOOL_MACS_SUM = 1_764_973_056  # Over all 36 configurations.


def _macs(config, size=32, op="maxpool", classes=10):
  return network.costs(config, size, op, classes)["macs"]


@pytest.mark.parametrize("stages,expected", sorted(MAXPOOL_MACS.items()))
def test_macs_maxpool(stages, expected):
  config = spaces.from_stages(SPACE, stages)
  assert _macs(config) == expected
  # Pooling is not counted, and a stride-2 3x3 conv has the outputs of a stride-1 conv
  # on the pooled input (its shortcut is the projection or the free strided identity),
  # so average pooling and strided convs cost the same in a basic block.
  assert _macs(config, op="avgpool") == _macs(config, op="conv") == expected


def test_macs_maxpool_range_and_mean():
  all_macs = [_macs(c) for c in SPACE.configs]
  assert sum(all_macs) == MAXPOOL_MACS_SUM
  assert min(all_macs) == MAXPOOL_MACS[(1, 1, 8)]
  assert max(all_macs) == MAXPOOL_MACS[(8, 1, 1)]
  # The paper's figures: default 40.8 M, range 18.6..149.3 M, mean 49.0 M.
  assert round(MAXPOOL_MACS[(4, 3, 3)] / 1e6, 1) == 40.8
  assert round(MAXPOOL_MACS_SUM / 36 / 1e6, 1) == 49.0


def test_macs_other_arguments():
  config = spaces.from_stages(SPACE, (4, 3, 3))
  # 100 classes add 64*90 MACs to the dense layer.
  assert _macs(config, classes=100) == 40_813_184 + 64 * 90
  # Odd sides round up ('same' padding): 33 -> 17 -> 9, so the sum above
  # becomes 33*33*432 + 3*33*33*4608 + 17*17*14336 + 2*17*17*18432
  # + 9*9*57344 + 2*9*9*73728 + 640.
  assert _macs(config, size=33) == 46_911_024
  with pytest.raises(ValueError, match="learned sizes"):
    _macs(config, op="diffstride")


def _keras_macs(model: keras.Model) -> int:
  """MACs counted independently, over the exported model's own Keras layers."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      _, h, w, filters = layer.output.shape
      kh, kw = layer.kernel_size
      total += h * w * kh * kw * layer.input.shape[-1] * filters
    elif isinstance(layer, keras.layers.Dense):
      total += layer.input.shape[-1] * layer.units
  return total


# Every space x fixed op, three configurations each (the first, the default, the last);
# ResNet50 also at 128 px, where its stem is ImageNet's (7x7/2 + max-pool).
@pytest.mark.parametrize("name,size,ops_", [
    ("resnet20", 32, ops.FIXED), ("resnet18", 32, ops.FIXED), ("resnet50", 32, ops.FIXED),
    ("resnet50", 128, ("conv",))])
def test_every_space_and_op_runs_costs_and_exports_alike(name, size, ops_):
  space = spaces.get_space(name)
  configs = [space.configs[0], spaces.from_stages(space, space.default), space.configs[-1]]
  x = _images(batch=2, size=size)
  for op in ops_:
    model = network.SwitchableResNet(space=name, configs=configs, num_models=2,
                                     num_classes=5, downsample=op, batchnorm="standard",
                                     image_size=size)
    assert model.stem.kind == ("imagenet" if size >= 128 else "cifar")
    for config in configs:
      logits = model(x, config=config, model_index=tf.constant(1))
      assert logits.shape == (2, 5)
      costs = model.costs(config)
      assert costs == network.costs(config, size, op, 5)
      exported = model.to_functional(config, 1, image_size=size)
      assert _keras_macs(exported) == costs["macs"], (name, op, config.label)
      trainable = sum(int(np.prod(w.shape)) for w in exported.trainable_weights)
      assert trainable == costs["params"]
      np.testing.assert_allclose(exported(x).numpy(), tf.nn.softmax(logits).numpy(),
                                 atol=1e-5)


def test_bottleneck_downsampling_follows_v1_5():
  """[3,4,6,3] at 32 px: the 3x3 conv of blocks 4, 8 and 14 (layers) has stride 2 with
  "conv" (v1.5), so their 1x1 input conv runs at the input resolution; with "maxpool"
  the whole block runs on the pooled input."""
  space = spaces.get_space("resnet50")
  config = spaces.from_stages(space, (3, 4, 6, 3))
  # Layer 4: 256 -> inner 128 -> 512, input 32x32, output 16x16.
  extra = (32 * 32 - 16 * 16) * 256 * 128
  # Layers 8 (512 -> 256, 16 -> 8) and 14 (1024 -> 512, 8 -> 4).
  extra += (16 * 16 - 8 * 8) * 512 * 256 + (8 * 8 - 4 * 4) * 1024 * 512
  assert _macs(config, op="conv") - _macs(config) == extra
  # The standard CIFAR ResNet18 / ResNet50 sizes.
  assert network.costs(spaces.from_stages(spaces.get_space("resnet18"), (3, 2, 2, 2)), 32,
                       "conv")["params"] == 11_173_962
  assert network.costs(config, 224, "conv", 1000)["params"] == 25_557_032


def test_zero_init_residual_in_the_larger_spaces_only():
  r18 = network.SwitchableResNet(space="resnet18", configs=[(0, 0, 0, 1, 0, 1, 0, 1, 0)])
  assert np.all(r18.blocks[0].bn2.gamma.numpy() == 0)
  assert np.all(r18.blocks[0].bn1.gamma.numpy() == 1)
  r20 = network.SwitchableResNet(configs=[DEFAULT])
  assert np.all(r20.blocks[0].bn2.gamma.numpy() == 1)


def test_a_network_learning_channel_importance_starts_every_scale_at_one():
  # The width search's l1 on the BatchNorm scales ranks every channel by one threshold:
  # zero-initialised last scales would start the residual streams below the inner units.
  code = (0, 0, 0, 1, 0, 1, 0, 1, 0)
  r18 = network.SwitchableResNet(space="resnet18", configs=[code], gamma_l1=1e-4)
  for block in r18.blocks:
    assert np.all(block.bn2.gamma.numpy() == 1)
  r50_space = spaces.get_space("resnet50")
  r50 = network.SwitchableResNet(space="resnet50",
                                 configs=[spaces.from_stages(r50_space, r50_space.default)],
                                 num_classes=10, image_size=32, gamma_l1=1e-4)
  assert np.all(r50.blocks[0].bn3.gamma.numpy() == 1)
  rebuilt = network.SwitchableResNet.from_config(r18.get_config())
  assert np.all(rebuilt.blocks[0].bn2.gamma.numpy() == 1)
