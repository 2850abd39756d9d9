"""The one network builder: a ResNet of a search space whose blocks can each downsample.

`SwitchableResNet` serves every command: the SuperNets of a search (K weight sets,
batch-statistics BatchNorm) and the stand-alone network of retraining, the exhaustive
baseline, the tuner and DiffStride (K = 1, one configuration, standard BatchNorm). It is a
stem, the space's residual blocks and a head (blocks.py), and its forward pass
(`forward`) is written once and read three ways (interpret.py): `call` runs it,
`to_functional` rebuilds it from standard Keras layers for export, `costs` counts its
multiply-accumulates and parameters. The configuration is a static call argument and the
weight set a tensor one (see stacked.py for why).

With `downsample="diffstride"` every candidate block carries a learnable-stride DiffStride
layer initialised from the one configuration (stride 2 where it downsamples, 1
elsewhere). Its layer sizes depend on the strides' values, so for XLA the static call
argument is a *size plan* (`size_plan`, read on the host from the current strides: one
compiled trace per distinct plan); without XLA it may stay the configuration, and the
sizes are computed in-graph (dynamic shapes).
"""

from collections.abc import Mapping
from collections.abc import Sequence
import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.nn import blocks as blocks_lib
from mixnas_tf.nn import interpret
from mixnas_tf.nn import ops
from mixnas_tf.nn import stacked


def _forward(f, stem, blocks, head, x, config, plan=None):
  """stem -> blocks -> head on interpreter `f`. `Execute` goes through the layers' Keras
  `__call__` (dtype policies, name scopes); the other interpreters read `forward`."""
  run = isinstance(f, interpret.Execute)
  f.scope = "stem"
  x = stem(x, f.model_index, training=f.training) if run else stem.forward(f, x)
  for i, block in enumerate(blocks, start=1):
    f.scope = block.name
    if block.op.kind == "learned":
      downsample = block.pool is not None
      size = plan[i] if plan and downsample else None
    else:
      downsample, size = bool(config[i]), None
    if run:
      x = block(x, f.model_index, downsample=downsample, training=f.training,
                output_size=size)
    else:
      x = block.forward(f, x, downsample, size)
  f.scope = "head"
  return head(x, f.model_index) if run else head.forward(f, x)


@functools.lru_cache(maxsize=16)
def _parts(space: spaces.SearchSpace, image_size: int, downsample: str, num_classes: int):
  """Unbuilt stem, blocks and head of a space (no variables: `Count` reads shapes only)."""
  widths = space.widths
  stem = blocks_lib.Stem(widths[0], space.stem_for(image_size), name="stem")
  block_cls = blocks_lib.BLOCKS[space.block]
  blocks = [block_cls(widths[i - 1], widths[i], downsample=downsample, name=f"block{i}",
                      inner_channels=space.inner_width(i),
                      has_projection=i in space.projections)
            for i in range(1, space.num_layers)]
  return stem, blocks, blocks_lib.Head(num_classes, widths[-1], name="head")


def costs(config: "spaces.Config", image_size: int, downsample: str = "maxpool",
          num_classes: int = 10) -> dict[str, int]:
  """{"macs", "params"} of the stand-alone network of `config` (standard BatchNorm), for
  one image of side `image_size`, without building the network.

  Raises:
    ValueError: `downsample` is not a fixed op (a DiffStride network's cost depends on its
      learned sizes: `SwitchableResNet.costs`).
  """
  if not ops.get(downsample).fixed:
    raise ValueError(f"a {downsample} network's cost depends on its learned sizes: use "
                     f"SwitchableResNet.costs. Received: downsample={downsample!r}")
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1. Received: image_size={image_size}")
  stem, blocks, head = _parts(config.space, int(image_size), downsample, int(num_classes))
  count = interpret.Count()
  _forward(count, stem, blocks, head, (image_size, image_size, 3), config)
  # Standard BatchNorm's gamma and beta (the unbuilt parts default to "standard").
  return {"macs": int(count.macs), "params": int(count.params)}


@keras.saving.register_keras_serializable(package="mixnas_tf")
class SwitchableResNet(keras.Model):
  """ResNet of a search space whose downsampling positions are switchable.

  Args:
    space: search-space name (`spaces.get_space`).
    configs: the configurations the network must support; a block gets downsampling
      sub-layers only where one of them downsamples. Default: all of the space.
    num_models: K, the number of stacked weight sets.
    num_classes: classifier outputs.
    downsample: a downsampling op of ops.OPS.
    batchnorm: "batch_stats" (SuperNet, reference) or "standard".
    mean, std: per-channel normalisation in [0, 1] units; inputs are pixels in [0, 255].
    image_size: the input side; picks the stem of a space whose stem is "auto".
    diffstride: "diffstride" only: keyword arguments of every DiffStride layer (e.g.
      `smoothness_factor`), except `strides`, which `configs[0]` sets.
    stride_regularizer: "diffstride" only: weight of the cost penalty added with
      `add_loss`: `stride_regularizer * stride_cost(...)`.

  Call: `images` [B, H, W, 3] (uint8 or float pixels), `config` (one of `configs`, or
  for "diffstride" a size plan from `size_plan`), `model_index` (int32 scalar tensor in
  [0, K)), `training` -> logits float32 [B, classes].
  """

  def __init__(self, space: str = "resnet20", configs: Sequence[Sequence[int]] | None = None,
               num_models: int = 1, num_classes: int = 10, downsample: str = "maxpool",
               batchnorm: str = "standard", mean: Sequence[float] = (0.5, 0.5, 0.5),
               std: Sequence[float] = (0.25, 0.25, 0.25), image_size: int = 32,
               diffstride: Mapping[str, Any] | None = None, stride_regularizer: float = 0.0,
               gamma_l1: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.space = spaces.get_space(space)
    configs = self.space.configs if configs is None else configs
    try:
      configs = tuple(spaces.check_code(self.space, c) for c in configs)
    except ValueError as e:
      raise ValueError(f"not a configuration of {self.space.name}: {e}") from None
    # Set past Keras' attribute tracking, which would rebuild each Config as a bare tuple.
    object.__setattr__(self, "configs", configs)
    if not self.configs:
      raise ValueError("configs must name at least one configuration. Received: configs=()")
    if int(num_classes) < 2:
      raise ValueError(f"num_classes must be >= 2. Received: num_classes={num_classes}")
    self.op = ops.get(downsample)
    self.num_models = int(num_models)
    self.num_classes = int(num_classes)
    self.downsample = downsample
    self.batchnorm = batchnorm
    self.mean = tuple(float(m) for m in mean)
    self.std = tuple(float(s) for s in std)
    self.image_size = int(image_size)
    self.diffstride = dict(diffstride or {})
    self.stride_regularizer = float(stride_regularizer)
    self.gamma_l1 = float(gamma_l1)
    if self.gamma_l1 < 0 or (self.gamma_l1 and batchnorm != "standard"):
      raise ValueError("gamma_l1 is >= 0 and needs affine (standard) BatchNorm. Received: "
                       f"gamma_l1={gamma_l1}, batchnorm={batchnorm!r}")
    learned = self.op.kind == "learned"
    if learned and len(self.configs) != 1:
      raise ValueError("a diffstride network learns its strides from one initial "
                       f"configuration. Received: {len(self.configs)} configurations")
    if self.stride_regularizer < 0:
      raise ValueError("stride_regularizer must be >= 0. "
                       f"Received: stride_regularizer={stride_regularizer}")
    for name in ("strides", "num_models"):
      if name in self.diffstride:
        raise ValueError(f"diffstride sets {name} itself. Received: diffstride={diffstride}")

    space_ = self.space
    widths = space_.widths
    k = dict(num_models=self.num_models)
    self.stem = blocks_lib.Stem(widths[0], space_.stem_for(self.image_size),
                                batchnorm=batchnorm, name="stem", **k)
    block_cls = blocks_lib.BLOCKS[space_.block]
    # A network that learns channel importance from its BatchNorm scales (gamma_l1 > 0,
    # the width search) starts every scale at 1: its global threshold then compares
    # residual-stream and inner channels from the same start, where zero-initialised last
    # scales would put the streams below.
    zero_init = space_.zero_init_residual and batchnorm == "standard" and not self.gamma_l1
    self.blocks = [
        block_cls(
            widths[i - 1], widths[i], downsample=downsample,
            can_downsample=(i in space_.candidates if learned
                            else any(c[i] for c in self.configs)),
            batchnorm=batchnorm, zero_init_residual=zero_init, name=f"block{i}",
            inner_channels=space_.inner_width(i), has_projection=i in space_.projections,
            diffstride=({**self.diffstride, "strides": 2.0 if self.configs[0][i] else 1.0}
                        if learned else None), **k)
        for i in range(1, space_.num_layers)
    ]
    # Keras 3 leaves layers held in a Python list out of TensorFlow's object graph, so
    # tf.train.Checkpoint would not reach the blocks through the network (their moving
    # statistics were lost: BUILD_NOTES.md). Each block is also an attribute.
    for block in self.blocks:
      setattr(self, block.name, block)
    self.head = blocks_lib.Head(self.num_classes, widths[-1], name="head", **k)
    self.build(None)

  def build(self, input_shape=None):
    for layer in [self.stem, *self.blocks, self.head]:
      layer.build(None)
    self.built = True

  # The forward pass, once -------------------------------------------------------------

  def forward(self, f, x, config, plan=None):
    """The network on interpreter `f` (interpret.py) for `config` (or a size `plan`)."""
    return _forward(f, self.stem, self.blocks, self.head, x, config, plan)

  def _resolve(self, config, image_shape):
    """(config, plan) for a call: `config` is one of `configs` or a DiffStride plan."""
    config = self.configs[0] if config is None else tuple(config)
    if self.op.kind == "learned" and config and isinstance(config[0], Sequence):
      return self.configs[0], self._check_plan(config, image_shape)
    if config not in self.configs:
      raise ValueError(f"this network was not built for configuration {config}")
    return config, None

  def call(self, images, config: Sequence[int] = None, model_index=None, training=False):
    config, plan = self._resolve(config, images.shape[1:3])
    if model_index is None:
      model_index = tf.constant(0, tf.int32)
    x = tf.cast(images, tf.float32) / 255.0
    x = (x - tf.constant(self.mean)) / tf.constant(self.std)
    x = tf.cast(x, self.compute_dtype)
    logits = self.forward(interpret.Execute(model_index, training), x, config, plan)
    if self.gamma_l1 and training:
      # Network slimming's sparsity penalty on the BatchNorm scales (methods/widths.py).
      self.add_loss(self.gamma_l1 * tf.add_n([
          tf.reduce_sum(tf.abs(tf.gather(layer.gamma.value, model_index)))
          for layer in self.batchnorms()]))
    if self.op.kind == "learned" and self.stride_regularizer:
      size = [images.shape[a] if images.shape[a] is not None else tf.shape(images)[a]
              for a in (1, 2)]
      self.add_loss(self.stride_regularizer * self.stride_cost(model_index, size))
    return logits

  def batchnorms(self) -> list:
    """Every BatchNorm layer of the network (stem, blocks)."""
    return [layer for layer in self._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, stacked.StackedBatchNorm)]

  def costs(self, config=None, image_size: int | None = None, plan=None) -> dict[str, int]:
    """{"macs", "params"} of one image through `config` (one weight set's parameters).

    A DiffStride network needs its size `plan` (default: its current strides').
    """
    image_size = image_size or self.image_size
    config = self.configs[0] if config is None else tuple(config)
    if self.op.kind == "learned" and plan is None:
      plan = self.size_plan(image_size)
    count = interpret.Count()
    self.forward(count, (image_size, image_size, 3), config, plan)
    return {"macs": int(count.macs), "params": int(count.params)}

  def count_params_per_model(self, config) -> int:
    """Trainable parameters of one weight set that configuration `config` uses."""
    return self.costs(config)["params"]

  def to_functional(self, config, model_index: int = 0, image_size: int | None = None,
                    input_name: str = "images", output_name: str = "probabilities",
                    name: str | None = None) -> keras.Model:
    """Weight set `model_index` in `config` as a functional model of standard Keras layers.

    uint8 pixels [B, S, S, 3] -> class probabilities float32 [B, classes]; the layer
    "logits" gives the pre-softmax outputs; BatchNorm runs on its moving statistics.
    Built in float32 whatever the global dtype policy.
    """
    config, _ = self._resolve(config, (None, None))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
      side = image_size or None
      inputs = keras.Input(shape=(side, side, 3), dtype="uint8", name=input_name)
      x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
      # Normalization divides by sqrt(variance): variance = std**2 gives (x - mean) / std.
      x = keras.layers.Normalization(mean=list(self.mean),
                                     variance=[s * s for s in self.std], name="normalize")(x)
      logits = self.forward(interpret.KerasBuild(model_index), x, config)
      outputs = keras.layers.Softmax(name=output_name)(logits)
      return keras.Model(inputs, outputs, name=name or f"{self.space.name}_" + "_".join(
          str(s) for s in spaces.to_stages(self.space, config)))
    finally:
      keras.config.set_dtype_policy(previous)

  def get_config(self):
    # A registered space by name; another one (e.g. pruned widths) by its fields.
    registered = spaces.SPACES.get(self.space.name) == self.space
    config = {**super().get_config(),
              "space": self.space.name if registered else self.space.to_dict(),
              "configs": [list(c) for c in self.configs], "num_models": self.num_models,
              "num_classes": self.num_classes, "downsample": self.downsample,
              "batchnorm": self.batchnorm, "mean": list(self.mean), "std": list(self.std),
              "image_size": self.image_size}
    if self.op.kind == "learned":
      config.update(diffstride=self.diffstride, stride_regularizer=self.stride_regularizer)
    if self.gamma_l1:
      config["gamma_l1"] = self.gamma_l1
    return config

  # DiffStride networks ----------------------------------------------------------------

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

  def _stem_size(self, size) -> tuple[int, int]:
    h, w, _ = self.stem.forward(interpret.Count(), (size[0], size[1], 3))
    return (int(h), int(w))

  def size_plan(self, image_size, model_index: int = 0,
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
    if self.op.kind != "learned":
      raise ValueError(f"size plans are for diffstride networks. "
                       f"Received: downsample={self.downsample!r}")
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    strides = self.learned_strides(model_index) if strides is None else strides
    plan = [self._stem_size(size)]
    for i, block in enumerate(self.blocks, start=1):
      plan.append(block.pool.output_size_for(plan[-1], strides=strides[i])
                  if block.pool is not None else plan[-1])
    return tuple(plan)

  def static_config(self, config, image_size, model_index: int = 0,
                    static_shapes: bool = True):
    """What compiled steps should receive for `config`: itself, except for a diffstride
    network with `static_shapes` (which XLA needs): the size plan of the current strides
    of weight set `model_index` (a new plan is a new trace). Without XLA,
    `static_shapes=False` is as fast per step and never retraces
    (experiments/bench_diffstride.md)."""
    if self.op.kind != "learned" or not static_shapes:
      return tuple(config)
    return self.size_plan(image_size, model_index)

  def _check_plan(self, plan, image_shape) -> tuple[tuple[int, int], ...]:
    plan = tuple(tuple(int(v) for v in size) for size in plan)
    ok = (len(plan) == self.space.num_layers and all(len(s) == 2 and min(s) >= 1 for s in plan)
          and all(plan[i] == plan[i - 1] for i, block in enumerate(self.blocks, start=1)
                  if block.pool is None))
    if ok and None not in tuple(image_shape):
      ok = plan[0] == self._stem_size(tuple(image_shape))
    if not ok:
      raise ValueError(f"a size plan gives (height, width) for the {self.space.num_layers} "
                       f"layers, starting with the stem's output for {tuple(image_shape)}, "
                       f"and changes size only at DiffStride layers. Received: {plan}")
    return plan

  def stride_cost(self, model_index=None, image_size: Sequence[Any] = (32, 32)):
    """The regulariser: MACs implied by the strides, relative to the network at stride 1.

    The network counted (`costs`' `Count`) at the continuous sizes H / prod(S_h),
    W / prod(S_w), so it is differentiable in every stride; it ignores the ramp's margin
    and the rounding of the executed sizes (which `costs` and `diffstride.summarize`
    count exactly).

    Returns:
      float32 scalar tensor in (0, 1].
    """
    index = tf.constant(0, tf.int32) if model_index is None else model_index
    h, w = (tf.cast(v, tf.float32) for v in image_size)
    relaxed = interpret.Count(relaxed_index=index)
    self.forward(relaxed, (h, w, 3), self.configs[0])
    # The same network with every DiffStride layer at stride 1 (keeping its input size).
    stem_h, stem_w, _ = self.stem.forward(interpret.Count(), (h, w, 3))
    full = interpret.Count()
    self.forward(full, (h, w, 3), self.configs[0], [(stem_h, stem_w)] * self.space.num_layers)
    return relaxed.macs / full.macs
