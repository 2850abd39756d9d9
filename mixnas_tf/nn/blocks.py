"""The parts of a network: stem, residual blocks (basic, bottleneck), classifier head.

Each part writes its forward pass once, in `forward(f, x, ...)`, against the operations of
an interpreter `f` (interpret.py): `Execute` runs it on stacked weights (the Keras `call`),
`KerasBuild` rebuilds it from standard Keras layers (the export), `Count` costs it
(multiply-accumulates and parameters). A new block type is one class with a `branch`.

How a residual block downsamples is its op (ops.py), read in one place: a "pool" op
pools the block input, a "stride" op puts stride 2 on the block's strided conv (and its
projection; without one the shortcut is the strided identity), a "learned" op runs that
conv at stride 1 and resizes its output and the shortcut with a DiffStride layer.
"""

from typing import Any

import keras

from mixnas_tf.nn import diffstride as diffstride_lib
from mixnas_tf.nn import interpret
from mixnas_tf.nn import ops
from mixnas_tf.nn import stacked

STEM_KINDS = ("cifar", "imagenet")


class Stem(keras.layers.Layer):
  """3x3 stride-1 conv + BN + ReLU ("cifar"), or 7x7 stride-2 conv + BN + ReLU + 3x3
  stride-2 max-pool ("imagenet"): [B, H, W, in] -> [B, H', W', width]."""

  def __init__(self, width: int, kind: str = "cifar", num_models: int = 1,
               batchnorm: str = "standard", in_channels: int = 3, **kwargs):
    super().__init__(**kwargs)
    stacked.check_choice("kind", kind, STEM_KINDS)
    self.width, self.kind, self.num_models = int(width), kind, int(num_models)
    self.batchnorm, self.in_channels = batchnorm, int(in_channels)
    self.conv = stacked.StackedConv2D(width, 3 if kind == "cifar" else 7, in_channels,
                                      num_models=num_models, name="conv")
    self.bn = stacked.StackedBatchNorm(width, num_models=num_models, mode=batchnorm,
                                       name="bn")

  def build(self, input_shape=None):
    self.conv.build(None)
    self.bn.build(None)
    self.built = True

  def forward(self, f, x):
    x = f.relu(f.bn(f.conv(x, self.conv, 1 if self.kind == "cifar" else 2), self.bn))
    return x if self.kind == "cifar" else f.pool(x, "max", size=3, stride=2)

  def call(self, x, model_index, training=False):
    return self.forward(interpret.Execute(model_index, training), x)

  def get_config(self):
    return {**super().get_config(), "width": self.width, "kind": self.kind,
            "num_models": self.num_models, "batchnorm": self.batchnorm,
            "in_channels": self.in_channels}


class ResidualBlock(keras.layers.Layer):
  """A residual block that may halve the resolution; subclasses give the `branch`.

  Whether it downsamples is a static call argument, so a compiled function that calls it
  is specialised per configuration. A 1x1 conv + BN projection shortcut exists where the
  widths differ.

  Args:
    in_channels, out_channels: widths of the block's input and output.
    num_models: K stacked weight sets.
    downsample: the op's name (ops.OPS).
    can_downsample: whether any configuration downsamples here (a "learned" op gets its
      DiffStride layer only then).
    batchnorm: "batch_stats" (SuperNet) or "standard".
    zero_init_residual: the branch's last BatchNorm starts with gamma = 0.
    diffstride: keyword arguments of the DiffStride layer (e.g. its initial `strides`).
    inner_channels: the bottleneck's inner width.

  Call: `x` [B, H, W, in_channels], `model_index`, `downsample`, `training`,
  `output_size` (a learned op's static size, else None) -> [B, H', W', out_channels].
  """

  # The branch's conv that carries the stride (v1.5 for the bottleneck).
  strided_conv_name = ""

  def __init__(self, in_channels: int, out_channels: int, num_models: int = 1,
               downsample: str = "maxpool", can_downsample: bool = True,
               batchnorm: str = "standard", zero_init_residual: bool = False,
               diffstride: dict[str, Any] | None = None, inner_channels: int = 0,
               has_projection: bool | None = None, **kwargs):
    super().__init__(**kwargs)
    self.op = ops.get(downsample)
    self.in_channels, self.out_channels = int(in_channels), int(out_channels)
    self.inner_channels = int(inner_channels)
    self.num_models, self.can_downsample = int(num_models), bool(can_downsample)
    self.batchnorm, self.zero_init_residual = batchnorm, bool(zero_init_residual)
    self.diffstride = dict(diffstride or {})
    # Where the width changes, and wherever the space says (a pruned network keeps the
    # projections of the network it was pruned from).
    self.has_projection = (self.in_channels != self.out_channels if has_projection is None
                           else bool(has_projection))
    if self.in_channels != self.out_channels and not self.has_projection:
      raise ValueError(f"a block from {in_channels} to {out_channels} channels needs a "
                       "projection shortcut. Received: has_projection=False")
    self.make_branch()
    if self.has_projection:
      self.proj = self._conv(out_channels, 1, in_channels, "proj")
      self.proj_bn = self._bn(out_channels, "proj_bn")
    self.pool = None
    if self.op.kind == "learned" and self.can_downsample:
      self.pool = diffstride_lib.DiffStride(name="diffstride", num_models=self.num_models,
                                            **self.diffstride)

  def _conv(self, filters, kernel_size, in_channels, name):
    return stacked.StackedConv2D(filters, kernel_size, in_channels, name=name,
                                 num_models=self.num_models)

  def _bn(self, channels, name, last=False):
    return stacked.StackedBatchNorm(channels, mode=self.batchnorm, name=name,
                                    zero_gamma=last and self.zero_init_residual,
                                    num_models=self.num_models)

  def make_branch(self) -> None:
    raise NotImplementedError

  def branch(self, f, x, op, output_size):
    raise NotImplementedError

  def build(self, input_shape=None):
    for layer in self._flatten_layers(include_self=False, recursive=False):
      layer.build(None)
    self.built = True

  def strided(self, f, x, layer, op, output_size):
    """Applies the branch's strided conv `layer`, carrying a "stride" or "learned" op."""
    if op is not None and op.kind == "stride":
      return f.conv(x, layer, 2)
    if op is not None and op.kind == "learned":
      return f.resize(f.conv(x, layer, 1), self.pool, output_size)
    return f.conv(x, layer, 1)

  def shortcut(self, f, x, op, output_size):
    kind = op.kind if op is not None else None
    if kind == "learned":
      # The 1x1 projection (if any) follows the resize: both are linear and commute,
      # so it runs at the smaller size.
      x = f.resize(x, self.pool, output_size)
    if self.has_projection:
      return f.bn(f.conv(x, self.proj, 2 if kind == "stride" else 1), self.proj_bn)
    return f.subsample(x) if kind == "stride" else x

  def forward(self, f, x, downsample: bool = False, output_size=None):
    if downsample and not self.can_downsample:
      raise ValueError(f"block {self.name} was built with can_downsample=False")
    op = self.op if downsample else None
    if op is not None and op.kind == "pool":
      x = f.pool(x, op.pool)
    h = self.branch(f, x, op, output_size)
    return f.relu(f.add(h, self.shortcut(f, x, op, output_size)))

  def call(self, x, model_index, downsample: bool = False, training: bool = False,
           output_size=None):
    return self.forward(interpret.Execute(model_index, training), x, downsample, output_size)

  def get_config(self):
    config = {**super().get_config(), "in_channels": self.in_channels,
              "out_channels": self.out_channels, "num_models": self.num_models,
              "downsample": self.op.name, "can_downsample": self.can_downsample,
              "batchnorm": self.batchnorm, "zero_init_residual": self.zero_init_residual,
              "inner_channels": self.inner_channels, "has_projection": self.has_projection}
    if self.op.kind == "learned":
      config["diffstride"] = self.diffstride
    return config


class BasicBlock(ResidualBlock):
  """Two 3x3 convs (ResNet20, ResNet18); the first carries the stride. The first conv's
  output width is `inner_channels` (default: the output width)."""

  def make_branch(self):
    inner = self.inner_channels or self.out_channels
    self.conv1 = self._conv(inner, 3, self.in_channels, "conv1")
    self.bn1 = self._bn(inner, "bn1")
    self.conv2 = self._conv(self.out_channels, 3, inner, "conv2")
    self.bn2 = self._bn(self.out_channels, "bn2", last=True)

  def branch(self, f, x, op, output_size):
    h = f.relu(f.bn(self.strided(f, x, self.conv1, op, output_size), self.bn1))
    return f.bn(f.conv(h, self.conv2), self.bn2)


class BottleneckBlock(ResidualBlock):
  """1x1 -> 3x3 -> 1x1 (ResNet50, v1.5: the 3x3 carries the stride)."""

  def make_branch(self):
    inner = self.inner_channels
    if inner < 1:
      raise ValueError(f"a bottleneck needs inner_channels >= 1. Received: {inner}")
    self.conv1 = self._conv(inner, 1, self.in_channels, "conv1")
    self.bn1 = self._bn(inner, "bn1")
    self.conv2 = self._conv(inner, 3, inner, "conv2")
    self.bn2 = self._bn(inner, "bn2")
    self.conv3 = self._conv(self.out_channels, 1, inner, "conv3")
    self.bn3 = self._bn(self.out_channels, "bn3", last=True)

  def branch(self, f, x, op, output_size):
    h = f.relu(f.bn(f.conv(x, self.conv1), self.bn1))
    h = f.relu(f.bn(self.strided(f, h, self.conv2, op, output_size), self.bn2))
    return f.bn(f.conv(h, self.conv3), self.bn3)


BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


class Head(keras.layers.Layer):
  """Global average pooling + dense classifier, float32 under mixed precision."""

  def __init__(self, num_classes: int, in_features: int, num_models: int = 1, **kwargs):
    super().__init__(**{"dtype": "float32", **kwargs})
    self.num_classes, self.in_features = int(num_classes), int(in_features)
    self.num_models = int(num_models)
    self.dense = stacked.StackedDense(num_classes, in_features, num_models=num_models,
                                      dtype="float32", name="dense")

  def build(self, input_shape=None):
    self.dense.build(None)
    self.built = True

  def forward(self, f, x):
    return f.dense(f.global_pool(x), self.dense)

  def call(self, x, model_index):
    return self.forward(interpret.Execute(model_index, False), x)

  def get_config(self):
    return {**super().get_config(), "num_classes": self.num_classes,
            "in_features": self.in_features, "num_models": self.num_models}
