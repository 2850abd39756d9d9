"""Layers with K stacked weight sets, downsampling ops and the switchable residual block.

Every trainable layer here holds K independent weight sets stacked on a leading axis
(`[K, ...]`) and computes with one of them, chosen by a *tensor* `model_index`. The
SuperNets of a balanced mixture are the K slices: indexing a stacked variable with a
tensor compiles once for any index (FACTS.md), so an XLA-compiled training step is traced
once per configuration whatever K is, instead of once per (configuration, SuperNet). A
stand-alone network is the special case K = 1.

Variables are created with `autocast=False` and cast after the gather, so that mixed
precision casts one slice, not all K.

The downsampling op is a constructor argument of the block, as in google-research's
diffstride: `"maxpool"`/`"avgpool"` pool the block input 2x2 (both branches see the pooled
tensor, as the reference ResNet20), `"conv"` gives the first 3x3 conv and the shortcut
stride 2, `"diffstride"` runs the first conv at stride 1 and resizes its output (and the
shortcut) with a learnable-stride `diffstride.DiffStride` layer.
"""

from typing import Any

import keras
import tensorflow as tf

from mixnas_tf import diffstride as diffstride_lib

# Fixed factor-2 ops; "diffstride" (learned strides) is accepted besides them.
DOWNSAMPLE_MODES = ("maxpool", "conv", "avgpool")
ALL_DOWNSAMPLE_MODES = DOWNSAMPLE_MODES + ("diffstride",)
BATCHNORM_MODES = ("batch_stats", "standard")


def _check_choice(name: str, value: Any, accepted: tuple[str, ...]) -> None:
  if value not in accepted:
    raise ValueError(f"{name} must be one of {', '.join(accepted)}. Received: {name}={value!r}")


class StackedInitializer(keras.initializers.Initializer):
  """Initialises each of the K slices with `base`, so fans are computed per slice."""

  def __init__(self, base: str | keras.initializers.Initializer):
    self.base = keras.initializers.get(base)

  def __call__(self, shape, dtype=None):
    # A Keras initializer repeats its values on every call, so each slice gets a new
    # instance: unseeded ones draw a fresh seed (reproducible after set_random_seed),
    # seeded ones are offset by the slice index.
    config = self.base.get_config()
    slices = []
    for i in range(shape[0]):
      if isinstance(config.get("seed"), int):
        config = {**config, "seed": self.base.get_config()["seed"] + i}
      slices.append(self.base.__class__.from_config(config)(shape[1:], dtype=dtype))
    return tf.stack(slices)

  def get_config(self):
    return {"base": keras.initializers.serialize(self.base)}


class _Stacked(keras.layers.Layer):
  """Base class: `num_models` weight sets on a leading axis."""

  def __init__(self, num_models: int = 1, **kwargs):
    super().__init__(**kwargs)
    if int(num_models) < 1:
      raise ValueError(f"num_models must be >= 1. Received: num_models={num_models}")
    self.num_models = int(num_models)

  def _stacked_weight(self, name, shape, initializer, trainable=True):
    return self.add_weight(
        name=name,
        shape=(self.num_models, *shape),
        initializer=StackedInitializer(initializer) if trainable else initializer,
        trainable=trainable,
        autocast=False,
    )

  def _slice(self, variable, model_index, dtype=None):
    """The `model_index` slice of a stacked variable, cast to `dtype` (compute dtype)."""
    value = tf.gather(variable.value, model_index)
    return tf.cast(value, dtype or self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), "num_models": self.num_models}


class StackedConv2D(_Stacked):
  """A bias-free 2-D convolution with K kernels `[K, k, k, in, out]`, 'SAME' padding.

  Call: `x` [B, H, W, in] -> [B, ceil(H/s), ceil(W/s), out]; the stride `s` is a call
  argument because in a SuperNet the same conv runs at stride 1 or 2 depending on the
  configuration.
  """

  def __init__(self, filters: int, kernel_size: int, in_channels: int, num_models: int = 1,
               kernel_initializer="he_normal", **kwargs):
    super().__init__(num_models=num_models, **kwargs)
    for name, value in (("filters", filters), ("kernel_size", kernel_size),
                        ("in_channels", in_channels)):
      if int(value) < 1:
        raise ValueError(f"{name} must be >= 1. Received: {name}={value}")
    self.filters = int(filters)
    self.kernel_size = int(kernel_size)
    self.in_channels = int(in_channels)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape=None):
    k = self.kernel_size
    self.kernel = self._stacked_weight(
        "kernel", (k, k, self.in_channels, self.filters), self.kernel_initializer)
    self.built = True

  def call(self, x, model_index, strides: int = 1):
    kernel = self._slice(self.kernel, model_index)
    return tf.nn.conv2d(x, kernel, strides=strides, padding="SAME")

  def compute_output_shape(self, input_shape):
    return (*input_shape[:-1], self.filters)

  def get_config(self):
    return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
            "in_channels": self.in_channels,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


class StackedDense(_Stacked):
  """A dense layer with K weight sets: `x` [B, in] -> [B, units]."""

  def __init__(self, units: int, in_features: int, num_models: int = 1,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(num_models=num_models, **kwargs)
    self.units = int(units)
    self.in_features = int(in_features)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape=None):
    self.kernel = self._stacked_weight("kernel", (self.in_features, self.units),
                                       self.kernel_initializer)
    self.bias = self._stacked_weight("bias", (self.units,), "zeros")
    self.built = True

  def call(self, x, model_index):
    return tf.matmul(x, self._slice(self.kernel, model_index)) + self._slice(
        self.bias, model_index)

  def get_config(self):
    return {**super().get_config(), "units": self.units, "in_features": self.in_features,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


class StackedBatchNorm(_Stacked):
  """Batch normalisation over [B, H, W, C] with K parameter sets.

  Modes:
    "batch_stats": no affine parameters and no running statistics; batch statistics are
      used in training *and* evaluation. The reference SuperNet does this because
      statistics differ between configurations that share the weights.
    "standard": affine gamma/beta and moving statistics per weight set (PyTorch
      semantics, momentum 0.9 on the old value); training updates only slice
      `model_index` of the moving statistics.
  Statistics are computed in float32 whatever the compute dtype.
  """

  def __init__(self, channels: int, num_models: int = 1, mode: str = "standard",
               momentum: float = 0.9, epsilon: float = 1e-5, **kwargs):
    super().__init__(num_models=num_models, **kwargs)
    _check_choice("mode", mode, BATCHNORM_MODES)
    self.channels = int(channels)
    self.mode = mode
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)

  def build(self, input_shape=None):
    if self.mode == "standard":
      c = (self.channels,)
      self.gamma = self._stacked_weight("gamma", c, "ones")
      self.beta = self._stacked_weight("beta", c, "zeros")
      self.moving_mean = self._stacked_weight("moving_mean", c, "zeros", trainable=False)
      self.moving_variance = self._stacked_weight("moving_variance", c, "ones",
                                                  trainable=False)
    self.built = True

  def _update_moving(self, variable, model_index, batch_value):
    old = tf.gather(variable.value, model_index)
    new = self.momentum * old + (1.0 - self.momentum) * batch_value
    variable.value.scatter_nd_update(tf.reshape(model_index, [1, 1]), new[None])

  def call(self, x, model_index, training: bool = False):
    x32 = tf.cast(x, tf.float32)
    if self.mode == "batch_stats" or training:
      mean, variance = tf.nn.moments(x32, axes=[0, 1, 2])
      if self.mode == "standard":
        self._update_moving(self.moving_mean, model_index, mean)
        self._update_moving(self.moving_variance, model_index, variance)
    else:
      mean = self._slice(self.moving_mean, model_index, tf.float32)
      variance = self._slice(self.moving_variance, model_index, tf.float32)
    y = (x32 - mean) * tf.math.rsqrt(variance + self.epsilon)
    if self.mode == "standard":
      y = y * self._slice(self.gamma, model_index, tf.float32) + self._slice(
          self.beta, model_index, tf.float32)
    return tf.cast(y, self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), "channels": self.channels, "mode": self.mode,
            "momentum": self.momentum, "epsilon": self.epsilon}


def pool2x2(x, mode: str):
  """Halves H and W of `x` [B, H, W, C] with a 2x2 max or average pool ('SAME': ceil)."""
  _check_choice("mode", mode, ("maxpool", "avgpool"))
  pool = tf.nn.max_pool2d if mode == "maxpool" else tf.nn.avg_pool2d
  return pool(x, ksize=2, strides=2, padding="SAME")


class SwitchableBlock(keras.layers.Layer):
  """A basic residual block (two 3x3 convs) that may halve the resolution.

  Whether it downsamples is a static call argument, so a compiled function that calls it
  is specialised per configuration. A 1x1 conv + BN shortcut exists when the widths
  differ, and in "conv" mode also when the block can downsample (a stride-2 shortcut);
  otherwise the shortcut is the identity.

  In "diffstride" mode a block that can downsample owns a `DiffStride` layer (`pool`,
  built from `diffstride`, the layer's keyword arguments, e.g. its initial `strides`):
  the first conv runs at stride 1, then `pool` resizes its output and the shortcut input
  (the 1x1 projection, when widths differ, follows the op: both are linear and commute,
  so it runs at the smaller size). The output size is then `output_size` when given
  (static), else computed from the strides in-graph (see diffstride.py).

  Call: `x` [B, H, W, in_channels] -> [B, H', W', out_channels], H' = ceil(H/2) when
  `downsample` else H (in "diffstride" mode: the DiffStride output size).
  """

  def __init__(self, in_channels: int, out_channels: int, num_models: int = 1,
               downsample_mode: str = "maxpool", can_downsample: bool = True,
               batchnorm: str = "standard", diffstride: dict[str, Any] | None = None,
               **kwargs):
    super().__init__(**kwargs)
    _check_choice("downsample_mode", downsample_mode, ALL_DOWNSAMPLE_MODES)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.num_models = int(num_models)
    self.downsample_mode = downsample_mode
    self.can_downsample = bool(can_downsample)
    self.batchnorm = batchnorm
    k = dict(num_models=num_models)
    self.conv1 = StackedConv2D(out_channels, 3, in_channels, name="conv1", **k)
    self.bn1 = StackedBatchNorm(out_channels, mode=batchnorm, name="bn1", **k)
    self.conv2 = StackedConv2D(out_channels, 3, out_channels, name="conv2", **k)
    self.bn2 = StackedBatchNorm(out_channels, mode=batchnorm, name="bn2", **k)
    self.has_projection = (in_channels != out_channels
                           or (downsample_mode == "conv" and can_downsample))
    if self.has_projection:
      self.proj = StackedConv2D(out_channels, 1, in_channels, name="proj", **k)
      self.proj_bn = StackedBatchNorm(out_channels, mode=batchnorm, name="proj_bn", **k)
    self.diffstride = dict(diffstride or {})
    self.pool = None
    if downsample_mode == "diffstride" and can_downsample:
      self.pool = diffstride_lib.DiffStride(name="diffstride", **self.diffstride, **k)

  def build(self, input_shape=None):
    for layer in self._sublayers():
      layer.build(None)
    self.built = True

  def _sublayers(self):
    layers = [self.conv1, self.bn1, self.conv2, self.bn2]
    layers += [self.pool] if self.pool is not None else []
    return layers + ([self.proj, self.proj_bn] if self.has_projection else [])

  def call(self, x, model_index, downsample: bool = False, training: bool = False,
           output_size: tuple[int, int] | None = None):
    if downsample and not self.can_downsample:
      raise ValueError(f"block {self.name} was built with can_downsample=False")
    strides = 1
    if downsample and self.pool is not None:
      h = self.pool(self.conv1(x, model_index), model_index, output_size=output_size)
      x = self.pool(x, model_index, output_size=output_size)
    else:
      if downsample:
        if self.downsample_mode == "conv":
          strides = 2
        else:
          x = pool2x2(x, self.downsample_mode)
      h = self.conv1(x, model_index, strides=strides)
    h = tf.nn.relu(self.bn1(h, model_index, training=training))
    h = self.bn2(self.conv2(h, model_index), model_index, training=training)
    if self.in_channels != self.out_channels or strides == 2:
      shortcut = self.proj_bn(self.proj(x, model_index, strides=strides), model_index,
                              training=training)
    else:
      shortcut = x
    return tf.nn.relu(h + shortcut)

  def get_config(self):
    config = {**super().get_config(), "in_channels": self.in_channels,
              "out_channels": self.out_channels, "num_models": self.num_models,
              "downsample_mode": self.downsample_mode, "can_downsample": self.can_downsample,
              "batchnorm": self.batchnorm}
    if self.downsample_mode == "diffstride":
      config["diffstride"] = self.diffstride
    return config
