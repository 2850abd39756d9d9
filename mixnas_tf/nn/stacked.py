"""Layers with K stacked weight sets, selected by a tensor index.

Every trainable layer here holds K independent weight sets stacked on a leading axis
(`[K, ...]`) and computes with one of them, chosen by a *tensor* `model_index`. The
SuperNets of a balanced mixture are the K slices: indexing a stacked variable with a
tensor compiles once for any index (FACTS.md), so an XLA-compiled training step is traced
once per configuration whatever K is, instead of once per (configuration, SuperNet). A
stand-alone network is the special case K = 1.

Variables are created with `autocast=False` and cast after the gather, so that mixed
precision casts one slice, not all K.
"""

from typing import Any

import keras
import tensorflow as tf

from mixnas_tf.training import distribute

BATCHNORM_MODES = ("batch_stats", "standard")


def check_choice(name: str, value: Any, accepted) -> None:
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
               momentum: float = 0.9, epsilon: float = 1e-5, zero_gamma: bool = False,
               **kwargs):
    super().__init__(num_models=num_models, **kwargs)
    check_choice("mode", mode, BATCHNORM_MODES)
    self.channels = int(channels)
    self.mode = mode
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    # The last BN of a residual branch may start at gamma = 0 (the block starts as the
    # identity; the reference's ResNet18/50 retraining does this).
    self.zero_gamma = bool(zero_gamma)

  @property
  def affine(self) -> bool:
    return self.mode == "standard"

  def build(self, input_shape=None):
    if self.mode == "standard":
      c = (self.channels,)
      self.gamma = self._stacked_weight("gamma", c, "zeros" if self.zero_gamma else "ones")
      self.beta = self._stacked_weight("beta", c, "zeros")
      self.moving_mean = self._stacked_weight("moving_mean", c, "zeros", trainable=False)
      self.moving_variance = self._stacked_weight("moving_variance", c, "ones",
                                                  trainable=False)
    self.built = True

  def _update_moving(self, variable, model_index, batch_value):
    old = tf.gather(variable.value, model_index)
    new = self.momentum * old + (1.0 - self.momentum) * batch_value
    distribute.write_slice(variable.value, model_index, new)

  def call(self, x, model_index, training: bool = False):
    x32 = tf.cast(x, tf.float32)
    if self.mode == "batch_stats" or training:
      # Over the global batch under a tf.distribute strategy (synchronized BatchNorm).
      mean, variance = distribute.moments(x32, axes=[0, 1, 2])
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
            "momentum": self.momentum, "epsilon": self.epsilon, "zero_gamma": self.zero_gamma}
