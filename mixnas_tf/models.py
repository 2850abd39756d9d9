"""The one network builder: a ResNet whose blocks can each downsample, with K weight sets.

`SwitchableResNet` serves every command: a SuperNet mixture of the search (K weight sets,
batch-statistics BatchNorm), and the stand-alone network of retraining, the exhaustive
baseline and the tuner (K = 1, one configuration, standard BatchNorm). The configuration
is a static call argument and the weight set a tensor one (see layers.py for why).

With `downsample="diffstride"` the same builder makes a DiffStride network: every candidate
block carries a learnable-stride `diffstride.DiffStride` layer initialised from the one
configuration (stride 2 where it downsamples, 1 elsewhere). Its layer sizes depend on the
strides' values, so for XLA the static call argument is a *size plan* (`size_plan`, read
on the host from the current strides: one compiled trace per distinct plan); without XLA
it may stay the configuration, and the sizes are computed in-graph (dynamic shapes).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mixnas_tf import layers as layers_lib
from mixnas_tf import search_space as ss

Config = tuple[int, ...]


@keras.saving.register_keras_serializable(package="mixnas_tf")
class SwitchableResNet(keras.Model):
  """ResNet of a search space (e.g. ResNet20) whose downsampling positions are switchable.

  Args:
    space: search-space name (`search_space.get_space`).
    configs: the configurations (10-digit 0/1 codes) the network must support; a block gets
      downsampling sub-layers only where one of them downsamples. Default: all of the space.
    num_models: K, the number of stacked weight sets.
    num_classes: classifier outputs.
    downsample: "maxpool", "avgpool", "conv" or "diffstride" (see layers.SwitchableBlock).
    batchnorm: "batch_stats" (SuperNet, reference) or "standard".
    mean, std: per-channel normalisation in [0, 1] units; inputs are pixels in [0, 255].
    diffstride: "diffstride" only: keyword arguments of every `diffstride.DiffStride`
      layer (e.g. `smoothness_factor`), except `strides`, which `configs[0]` sets.
    stride_regularizer: "diffstride" only: weight of the cost penalty added with
      `add_loss`: `stride_regularizer * stride_cost(...)` (the relative MACs implied by
      the strides; see `stride_cost`).

  Call: `images` [B, H, W, 3] (uint8 or float pixels), `config` (a code of `configs`, or
  for "diffstride" a size plan from `size_plan`), `model_index` (int32 scalar tensor in
  [0, K)), `training` -> logits float32 [B, classes].
  """

  def __init__(self, space: str = "resnet20", configs: Sequence[Sequence[int]] | None = None,
               num_models: int = 1, num_classes: int = 10, downsample: str = "maxpool",
               batchnorm: str = "standard", mean: Sequence[float] = (0.5, 0.5, 0.5),
               std: Sequence[float] = (0.25, 0.25, 0.25),
               diffstride: Mapping[str, Any] | None = None, stride_regularizer: float = 0.0,
               **kwargs):
    super().__init__(**kwargs)
    self.space = ss.get_space(space)
    configs = self.space.configs if configs is None else configs
    self.configs = tuple(tuple(int(d) for d in c) for c in configs)
    if not self.configs:
      raise ValueError("configs must name at least one configuration. Received: configs=()")
    for c in self.configs:
      if len(c) != self.space.num_layers:
        raise ValueError(f"a configuration of {space} has {self.space.num_layers} digits. "
                         f"Received: {c}")
    if int(num_classes) < 2:
      raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    self.num_models = int(num_models)
    self.num_classes = int(num_classes)
    self.downsample = downsample
    self.batchnorm = batchnorm
    self.mean = tuple(float(m) for m in mean)
    self.std = tuple(float(s) for s in std)
    self.diffstride = dict(diffstride or {})
    self.stride_regularizer = float(stride_regularizer)
    learned = downsample == "diffstride"
    if learned and len(self.configs) != 1:
      raise ValueError("a diffstride network learns its strides from one initial "
                       f"configuration. Received: {len(self.configs)} configurations")
    if self.stride_regularizer < 0:
      raise ValueError("stride_regularizer must be >= 0. "
                       f"Received: stride_regularizer={stride_regularizer}")
    for name in ("strides", "num_models"):
      if name in self.diffstride:
        raise ValueError(f"diffstride sets {name} itself. Received: diffstride={diffstride}")

    widths = self.space.widths
    k = dict(num_models=self.num_models)
    self.stem = layers_lib.StackedConv2D(widths[0], 3, 3, name="stem", **k)
    self.stem_bn = layers_lib.StackedBatchNorm(widths[0], mode=batchnorm, name="stem_bn", **k)
    self.blocks = [
        layers_lib.SwitchableBlock(
            widths[i - 1], widths[i], downsample_mode=downsample,
            can_downsample=(i in self.space.candidates if learned
                            else any(c[i] for c in self.configs)),
            batchnorm=batchnorm, name=f"block{i}",
            diffstride=({**self.diffstride, "strides": 2.0 if self.configs[0][i] else 1.0}
                        if learned else None), **k)
        for i in range(1, self.space.num_layers)
    ]
    # Keras 3 leaves layers held in a Python list out of TensorFlow's object graph, so
    # tf.train.Checkpoint would not reach the blocks through the network (the optimiser
    # still holds their trainable weights, but their moving statistics were lost:
    # BUILD_NOTES.md). Each block is also an attribute, which Keras (once) and
    # TensorFlow both track.
    for block in self.blocks:
      setattr(self, block.name, block)
    # The classifier stays float32 under mixed precision.
    self.head = layers_lib.StackedDense(self.num_classes, widths[-1], dtype="float32",
                                        name="head", **k)
    self.build(None)

  def build(self, input_shape=None):
    for layer in [self.stem, self.stem_bn, *self.blocks, self.head]:
      layer.build(None)
    self.built = True

  def call(self, images, config: Sequence[int] = None, model_index=None, training=False):
    config = self.configs[0] if config is None else tuple(config)
    plan = None
    if self.downsample == "diffstride" and config and isinstance(config[0], Sequence):
      plan = self._check_plan(config, images.shape[1:3])
    elif config not in self.configs:
      raise ValueError(f"this network was not built for configuration {config}")
    if model_index is None:
      model_index = tf.constant(0, tf.int32)
    x = tf.cast(images, tf.float32) / 255.0
    x = (x - tf.constant(self.mean)) / tf.constant(self.std)
    x = tf.cast(x, self.compute_dtype)
    x = tf.nn.relu(self.stem_bn(self.stem(x, model_index), model_index, training=training))
    for i, block in enumerate(self.blocks, start=1):
      if self.downsample == "diffstride":
        x = block(x, model_index, downsample=block.pool is not None, training=training,
                  output_size=plan[i] if plan and block.pool is not None else None)
      else:
        x = block(x, model_index, downsample=bool(config[i]), training=training)
    if self.downsample == "diffstride" and self.stride_regularizer:
      size = [images.shape[a] if images.shape[a] is not None else tf.shape(images)[a]
              for a in (1, 2)]
      self.add_loss(self.stride_regularizer * self.stride_cost(model_index, size))
    x = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2])
    return self.head(x, model_index)

  def get_config(self):
    config = {**super().get_config(), "space": self.space.name,
              "configs": [list(c) for c in self.configs], "num_models": self.num_models,
              "num_classes": self.num_classes, "downsample": self.downsample,
              "batchnorm": self.batchnorm, "mean": list(self.mean), "std": list(self.std)}
    if self.downsample == "diffstride":
      config.update(diffstride=self.diffstride, stride_regularizer=self.stride_regularizer)
    return config

  # DiffStride networks ------------------------------------------------------------------

  def diffstride_layers(self) -> dict[int, Any]:
    """{layer index: its DiffStride layer}, empty unless downsample == "diffstride"."""
    return {i: block.pool for i, block in enumerate(self.blocks, start=1)
            if block.pool is not None}

  def learned_strides(self, model_index: int = 0) -> dict[int, tuple[float, float]]:
    """{layer index: (S_h, S_w)} of weight set `model_index`, read on the host."""
    layers = self.diffstride_layers()
    if not layers:
      return {}
    k = tf.constant(model_index, tf.int32)
    values = np.asarray(tf.stack([layer.stride_values(k) for layer in layers.values()]))
    return {i: (float(v[0]), float(v[1])) for i, v in zip(layers, values)}

  def size_plan(self, image_size: int | Sequence[int], model_index: int = 0,
                strides: Mapping[int, Sequence[float]] | None = None
                ) -> tuple[tuple[int, int], ...]:
    """Per layer (stem first), its output (height, width) at the current strides.

    The static `config` of a diffstride network's compiled steps: calls with equal plans
    share a trace, a new plan is a new trace (and XLA compilation).

    Args:
      image_size: the input's side, or (height, width).
      model_index: the weight set whose strides decide ...
      strides: ... unless given, as from `learned_strides`.
    """
    if self.downsample != "diffstride":
      raise ValueError(f"size plans are for diffstride networks. "
                       f"Received: downsample={self.downsample!r}")
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    strides = self.learned_strides(model_index) if strides is None else strides
    plan = [tuple(int(v) for v in size)]
    for i, block in enumerate(self.blocks, start=1):
      plan.append(block.pool.output_size_for(plan[-1], strides=strides[i])
                  if block.pool is not None else plan[-1])
    return tuple(plan)

  def static_config(self, config: Sequence[int], image_size: int | Sequence[int],
                    model_index: int = 0, static_shapes: bool = True):
    """What compiled steps should receive for `config`.

    `config` itself, except for a diffstride network with `static_shapes` (which XLA
    needs): the size plan of the current strides of weight set `model_index`, read on the
    host (a new plan is a new trace). Without XLA, `static_shapes=False` is as fast per
    step and never retraces: the sizes are computed in-graph
    (experiments/bench_diffstride.md).
    """
    if self.downsample != "diffstride" or not static_shapes:
      return tuple(config)
    return self.size_plan(image_size, model_index)

  def _check_plan(self, plan, image_shape) -> tuple[tuple[int, int], ...]:
    plan = tuple(tuple(int(v) for v in size) for size in plan)
    ok = (len(plan) == self.space.num_layers and all(len(s) == 2 and min(s) >= 1 for s in plan)
          and all(plan[i] == plan[i - 1] for i, block in enumerate(self.blocks, start=1)
                  if block.pool is None))
    if ok and None not in tuple(image_shape):
      ok = plan[0] == tuple(image_shape)
    if not ok:
      raise ValueError(f"a size plan gives (height, width) for the {self.space.num_layers} "
                       f"layers, starting with the input's size {tuple(image_shape)}, and "
                       f"changes size only at DiffStride layers. Received: {plan}")
    return plan

  def stride_cost(self, model_index=None, image_size: Sequence[Any] = (32, 32)):
    """The regulariser: MACs implied by the strides, relative to the network at stride 1.

    Each layer's cost is its `search_space.diffstride_macs` term at the continuous sizes
    H / prod(S_h), W / prod(S_w) (the products over the DiffStride layers up to it), so
    it is differentiable in every stride; it ignores the ramp's margin and the rounding
    of the executed sizes (reported exactly by `diffstride.summarize`).

    Returns:
      float32 scalar tensor in (0, 1].
    """
    h, w = (tf.cast(v, tf.float32) for v in image_size)
    sizes = [(h, w)]
    for block in self.blocks:
      if block.pool is not None:
        s = block.pool.stride_values(model_index)
        sizes.append((sizes[-1][0] / s[0], sizes[-1][1] / s[1]))
      else:
        sizes.append(sizes[-1])
    full = ss.diffstride_macs(self.space, [(h, w)] * self.space.num_layers, self.num_classes)
    return ss.diffstride_macs(self.space, sizes, self.num_classes) / full

  def count_params_per_model(self, config: Sequence[int]) -> int:
    """Trainable parameters of one weight set that configuration `config` uses."""
    config = tuple(config)
    used = [self.stem, self.stem_bn, self.head]
    for i, block in enumerate(self.blocks, start=1):
      used += [block.conv1, block.bn1, block.conv2, block.bn2]
      used += [block.pool] if block.pool is not None else []
      if block.in_channels != block.out_channels or (config[i] and self.downsample == "conv"):
        used += [block.proj, block.proj_bn]
    return sum(int(v.shape.num_elements()) // self.num_models
               for layer in used for v in layer.trainable_weights)
