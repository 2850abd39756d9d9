"""The one network builder: a ResNet whose blocks can each downsample, with K weight sets.

`SwitchableResNet` serves every command: a SuperNet mixture of the search (K weight sets,
batch-statistics BatchNorm), and the stand-alone network of retraining, the exhaustive
baseline and the tuner (K = 1, one configuration, standard BatchNorm). The configuration
is a static call argument and the weight set a tensor one (see layers.py for why).
"""

from collections.abc import Sequence

import keras
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
    downsample: "maxpool", "avgpool" or "conv" (see layers.SwitchableBlock).
    batchnorm: "batch_stats" (SuperNet, reference) or "standard".
    mean, std: per-channel normalisation in [0, 1] units; inputs are pixels in [0, 255].

  Call: `images` [B, H, W, 3] (uint8 or float pixels), `config` (a code of `configs`),
  `model_index` (int32 scalar tensor in [0, K)), `training` -> logits float32 [B, classes].
  """

  def __init__(self, space: str = "resnet20", configs: Sequence[Sequence[int]] | None = None,
               num_models: int = 1, num_classes: int = 10, downsample: str = "maxpool",
               batchnorm: str = "standard", mean: Sequence[float] = (0.5, 0.5, 0.5),
               std: Sequence[float] = (0.25, 0.25, 0.25), **kwargs):
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

    widths = self.space.widths
    k = dict(num_models=self.num_models)
    self.stem = layers_lib.StackedConv2D(widths[0], 3, 3, name="stem", **k)
    self.stem_bn = layers_lib.StackedBatchNorm(widths[0], mode=batchnorm, name="stem_bn", **k)
    self.blocks = [
        layers_lib.SwitchableBlock(
            widths[i - 1], widths[i], downsample_mode=downsample,
            can_downsample=any(c[i] for c in self.configs), batchnorm=batchnorm,
            name=f"block{i}", **k)
        for i in range(1, self.space.num_layers)
    ]
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
    if config not in self.configs:
      raise ValueError(f"this network was not built for configuration {config}")
    if model_index is None:
      model_index = tf.constant(0, tf.int32)
    x = tf.cast(images, tf.float32) / 255.0
    x = (x - tf.constant(self.mean)) / tf.constant(self.std)
    x = tf.cast(x, self.compute_dtype)
    x = tf.nn.relu(self.stem_bn(self.stem(x, model_index), model_index, training=training))
    for i, block in enumerate(self.blocks, start=1):
      x = block(x, model_index, downsample=bool(config[i]), training=training)
    x = tf.reduce_mean(tf.cast(x, tf.float32), axis=[1, 2])
    return self.head(x, model_index)

  def get_config(self):
    return {**super().get_config(), "space": self.space.name,
            "configs": [list(c) for c in self.configs], "num_models": self.num_models,
            "num_classes": self.num_classes, "downsample": self.downsample,
            "batchnorm": self.batchnorm, "mean": list(self.mean), "std": list(self.std)}

  def count_params_per_model(self, config: Sequence[int]) -> int:
    """Trainable parameters of one weight set that configuration `config` uses."""
    config = tuple(config)
    used = [self.stem, self.stem_bn, self.head]
    for i, block in enumerate(self.blocks, start=1):
      used += [block.conv1, block.bn1, block.conv2, block.bn2]
      if block.in_channels != block.out_channels or (config[i] and self.downsample == "conv"):
        used += [block.proj, block.proj_bn]
    return sum(int(v.shape.num_elements()) // self.num_models
               for layer in used for v in layer.trainable_weights)
