"""Three readings of one forward pass: run it, rebuild it in Keras, or count its cost.

A block (blocks.py) writes its forward pass once, against the small set of operations
below (`conv`, `bn`, `relu`, `add`, `pool`, `subsample`, `resize`, `global_pool`,
`dense`). Each class here gives them a meaning:
  - `Execute`: TensorFlow ops on weight set `model_index` of the stacked layers (training,
    evaluation, the compiled steps);
  - `KerasBuild`: standard Keras layers (Conv2D, BatchNormalization, MaxPooling2D, ...)
    holding a copy of one weight set: the export;
  - `Count`: shapes only, accumulating multiply-accumulates (convolutions and the dense
    layer) and the parameters of one weight set. Sizes may be ints (exact counts) or
    tensors (DiffStride's differentiable cost).
So the network, its export and its cost cannot disagree: they are one description.
"""

import keras
import numpy as np
import tensorflow as tf


def _div(size, stride: int):
  """Output side of a 'SAME' stride-`stride` op: ceil for ints, exact for tensors."""
  if stride == 1:
    return size
  return -(-size // stride) if isinstance(size, (int, np.integer)) else size / stride


class Execute:
  """Runs the pass with weight set `model_index` (an int32 scalar tensor)."""

  def __init__(self, model_index, training: bool):
    self.model_index = model_index
    self.training = training
    self.scope = ""

  def conv(self, x, layer, strides: int = 1):
    return layer(x, self.model_index, strides=strides)

  def bn(self, x, layer):
    return layer(x, self.model_index, training=self.training)

  def relu(self, x):
    return tf.nn.relu(x)

  def add(self, a, b):
    return a + b

  def pool(self, x, kind: str, size: int = 2, stride: int = 2):
    op = tf.nn.max_pool2d if kind == "max" else tf.nn.avg_pool2d
    return op(x, ksize=size, strides=stride, padding="SAME")

  def subsample(self, x):
    return x[:, ::2, ::2, :]

  def resize(self, x, layer, output_size):
    return layer(x, self.model_index, output_size=output_size)

  def global_pool(self, x):
    return tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2])

  def dense(self, x, layer):
    return layer(x, self.model_index)


class KerasBuild:
  """Builds standard Keras layers (functional API) holding weight set `model_index`.

  Layer names are `<scope>_<layer>` for the stacked layers and `<scope>_<op><n>` for the
  others; the dense layer is "logits".
  """

  def __init__(self, model_index: int):
    self.k = int(model_index)
    self.scope = ""
    self._counts: dict[str, int] = {}

  def _name(self, what: str) -> str:
    key = f"{self.scope}_{what}" if self.scope else what
    self._counts[key] = self._counts.get(key, 0) + 1
    return f"{key}{self._counts[key]}"

  def _slice(self, variable) -> np.ndarray:
    return np.asarray(variable.numpy()[self.k], np.float32)

  def conv(self, x, layer, strides: int = 1):
    keras_layer = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=strides,
                                      padding="same", use_bias=False,
                                      name=f"{self.scope}_{layer.name}")
    y = keras_layer(x)  # Keras "same" on TF is tf.nn.conv2d's 'SAME', as in StackedConv2D.
    keras_layer.set_weights([self._slice(layer.kernel)])
    return y

  def bn(self, x, layer):
    if not layer.affine:
      raise ValueError("batch-statistics BatchNorm has no moving statistics to export")
    # Keras' momentum is the weight of the old moving value, as in StackedBatchNorm.
    keras_layer = keras.layers.BatchNormalization(momentum=layer.momentum,
                                                  epsilon=layer.epsilon,
                                                  name=f"{self.scope}_{layer.name}")
    y = keras_layer(x)
    keras_layer.set_weights([self._slice(layer.gamma), self._slice(layer.beta),
                             self._slice(layer.moving_mean),
                             self._slice(layer.moving_variance)])
    return y

  def relu(self, x):
    return keras.layers.ReLU(name=self._name("relu"))(x)

  def add(self, a, b):
    return keras.layers.Add(name=self._name("add"))([a, b])

  def pool(self, x, kind: str, size: int = 2, stride: int = 2):
    cls = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    # 'same' = the 'SAME' of Execute (ceil on odd sizes; the average excludes padding).
    return cls(pool_size=size, strides=stride, padding="same", name=self._name("pool"))(x)

  def subsample(self, x):
    # x[:, ::2, ::2] as a standard layer: a 1x1 max-pool with stride 2.
    return keras.layers.MaxPooling2D(pool_size=1, strides=2, padding="same",
                                     name=self._name("subsample"))(x)

  def resize(self, x, layer, output_size):
    raise ValueError("a DiffStride layer has no standard Keras equivalent to export")

  def global_pool(self, x):
    return keras.layers.GlobalAveragePooling2D(name="pool")(x)

  def dense(self, x, layer):
    keras_layer = keras.layers.Dense(layer.units, name="logits")
    y = keras_layer(x)
    keras_layer.set_weights([self._slice(layer.kernel), self._slice(layer.bias)])
    return y


class Count:
  """Counts multiply-accumulates and parameters (of one weight set) on shapes (h, w, c).

  Convolutions cost output height x width x k x k x in x out, the dense layer in x out;
  BatchNorm, ReLU, pooling, additions and DiffStride's spectral op are free (the usual
  convention, and ALGORITHM.md's figures). Parameters: conv kernels, BatchNorm gamma and
  beta when affine, the dense kernel and bias, DiffStride strides.

  Args:
    relaxed_index: for DiffStride networks, the weight set whose strides give the
      continuous sizes H / S (tensors: a differentiable cost) where no size is given.
  """

  def __init__(self, relaxed_index=None):
    self.macs = 0
    self.params = 0
    self.relaxed_index = relaxed_index
    self.scope = ""
    self._counted: set[int] = set()  # A layer applied twice (DiffStride) has one set.

  def _add_params(self, layer, count: int) -> None:
    if id(layer) not in self._counted:
      self._counted.add(id(layer))
      self.params += count

  def conv(self, x, layer, strides: int = 1):
    h, w, c = x
    if c != layer.in_channels:
      raise ValueError(f"{layer.name} takes {layer.in_channels} channels. Received: {c}")
    h, w = _div(h, strides), _div(w, strides)
    weights = layer.kernel_size * layer.kernel_size * layer.in_channels * layer.filters
    self.macs = self.macs + h * w * weights
    self._add_params(layer, weights)
    return (h, w, layer.filters)

  def bn(self, x, layer):
    self._add_params(layer, 2 * layer.channels if layer.affine else 0)
    return x

  def relu(self, x):
    return x

  def add(self, a, b):
    for u, v in zip(a, b):
      if isinstance(u, int) and isinstance(v, int) and u != v:
        raise ValueError(f"a residual addition of shapes {a} and {b}")
    return a

  def pool(self, x, kind: str, size: int = 2, stride: int = 2):
    return (_div(x[0], stride), _div(x[1], stride), x[2])

  def subsample(self, x):
    return self.pool(x, "max", 1, 2)

  def resize(self, x, layer, output_size):
    self._add_params(layer, 1 if layer.shared else 2)
    if output_size is not None:
      return (output_size[0], output_size[1], x[2])
    if self.relaxed_index is None:
      raise ValueError("counting a DiffStride network needs its sizes (a size plan)")
    s = layer.stride_values(self.relaxed_index)
    return (x[0] / s[0], x[1] / s[1], x[2])

  def global_pool(self, x):
    return x[2]

  def dense(self, x, layer):
    if x != layer.in_features:
      raise ValueError(f"the classifier takes {layer.in_features} features. Received: {x}")
    self.macs = self.macs + layer.in_features * layer.units
    self._add_params(layer, layer.in_features * layer.units + layer.units)
    return layer.units
