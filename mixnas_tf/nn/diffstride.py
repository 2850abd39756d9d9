"""DiffStride: a downsampling layer whose (fractional) strides are learned.

Riad et al., "Learning strides in convolutional neural networks" (ICLR 2022). Per spatial
axis of length N with stride S >= 1 and smoothness factor R > 0, the layer keeps the low
frequencies of its input: it takes the real DFT, multiplies it by a mask that is 1 below the
cut-off N / (2 S) - R / 2, falls linearly to 0 over a ramp of width R centred on the cut-off
N / (2 S) (the Nyquist frequency of an output of N / S samples), crops the spectrum to the
mask's support and transforms back. The output length of an axis is therefore

    n(N, S) = min(N, 2 * ceil(N / (2 S) + R / 2))        (~ N / S + R)

and the gradient reaches S through the mask values on the ramp; the crop (an integer) has
no gradient.

How it is computed. The mask, the crop and both transforms are separable and linear, so
each axis is one real matrix `A_S` of shape [n, N] (a DFT, the mask, and the inverse DFT of
the cropped spectrum multiplied out), and the layer is `y = A_S(h) x A_S(w)^T` for every
image and channel: two matrix products on the channels-last tensor, no transposes, no
complex numbers, XLA-friendly. Measured on this CPU it is several times faster than
`tf.signal.rfft2d`/`irfft2d`, which must transpose to channels-first
(experiments/bench_diffstride.md), and tests/test_diffstride.py checks it equals the FFT
pipeline. Only the mask depends on S; the cosine table depends on (n, N) only.

Differences from the reference code (google-research/diffstride), on purpose:
  - the ramp is centred on the cut-off (the reference starts it there), so S = 1 keeps the
    full size and still has a gradient; the reference instead raises every stride to at
    least N / (N - R) inside `call`, by assigning the variable, which makes its mask at
    that minimum equal ours at S = 1. Reference sizes are ~N / S + 2R, ours ~N / S + R;
  - the output keeps the input's amplitude (a constant image stays that constant, at any
    stride: the mask passes frequency 0 whole); the reference's irfft2d scales by
    (H W) / (h w), which jumps whenever the size does;
  - strides are kept in [lower, upper] by a Keras constraint that the optimizer applies
    (optim.SlicedSGD does, like Keras optimizers), not by assignments in `call`.

Shapes. The output size depends on the stride's value. Give `call` the sizes as Python
ints (`output_size`, computed on the host by `output_size_for`) to get static shapes, which
XLA compiles (one compilation per distinct size); without them the sizes are computed
in-graph from the strides, a dynamic shape that runs without XLA only.
See experiments/bench_diffstride.md for the measured trade-off.

K weight sets. Like every layer of nn/stacked.py, the strides are stacked `[K, 2]` (`[K, 1]`
when shared) and a tensor `model_index` selects one row, so the shared sliced optimizer
trains it. With static sizes the host must know which row a compiled step uses (its
`output_size` comes from that row); a step that samples the row inside the graph (the
mixture search) can only run DiffStride with dynamic sizes (without XLA).
"""

from collections.abc import Sequence
import math

import keras
import numpy as np
import tensorflow as tf

DATA_FORMATS = ("channels_last", "channels_first")


def _pair(value, name: str) -> tuple[float, float]:
  if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
    return float(value), float(value)
  try:
    values = tuple(float(v) for v in value)
  except (TypeError, ValueError):
    values = ()
  if len(values) != 2:
    raise ValueError(f"{name} must be a number or a pair of numbers. Received: {name}={value!r}")
  return values


def output_length(length: int, stride: float, smoothness_factor: float,
                  cropping: bool = True) -> int:
  """Output length of one axis: min(N, 2 ceil(N / (2 S) + R / 2)), as the layer computes it.

  The arithmetic is float32, in the layer's order, so that the host and the graph agree even
  where N / (2 S) + R / 2 is within rounding of an integer.

  Args:
    length: N, the input length (>= 1).
    stride: S >= 1.
    smoothness_factor: R > 0, the ramp width in frequency bins.
    cropping: if False the spectrum is masked but not cropped: the length is N.

  Returns:
    The output length, in [min(N, 2), N].
  """
  length = int(length)
  if not cropping:
    return length
  support = (np.float32(length) / (np.float32(2.0) * np.float32(stride))
             + np.float32(smoothness_factor / 2.0))
  return int(min(length, 2 * int(np.ceil(support))))


def _mask(num_freqs, length, stride, smoothness_factor):
  """Mask values at frequencies 0..num_freqs-1: clip((N/(2S) + R/2 - f) / R, 0, 1), float32,
  and 1 at f = 0.

  The centred ramp alone would pass less than the whole mean once N / (2S) < R / 2 (a
  stride above N / R: e.g. N = 8, R = 4, S = 4 gives 0.75 at f = 0, and a constant image
  of 3 came out as 2.25); the reference's ramp starts at the cut-off, so its f = 0 always
  passes whole, and so does ours.
  """
  freqs = tf.cast(tf.range(num_freqs), tf.float32)
  cutoff = tf.cast(length, tf.float32) / (2.0 * stride)
  ramp = tf.clip_by_value((cutoff + smoothness_factor / 2.0 - freqs) / smoothness_factor,
                          0.0, 1.0)
  return tf.where(tf.equal(freqs, 0.0), tf.ones_like(ramp), ramp)


def _cosine_table(out_length, length):
  """Weighted cosines [n * N, F] of the masked-crop operator, F = n // 2 + 1 frequencies.

  Entry (a * N + j, f) = w_f cos(2 pi f (a / n - j / N)) / N, where w_f = 2 counts the
  pair of frequencies +-f of a real signal (1 for f = 0 and for the Nyquist frequency n / 2
  of an even n). The phase is reduced modulo n N in integers, so the cosine is accurate.
  Works with Python ints (a constant XLA folds) and with int32 tensors (dynamic sizes).
  """
  num_freqs = out_length // 2 + 1
  a = tf.range(out_length)[:, None, None]
  j = tf.range(length)[None, :, None]
  f = tf.range(num_freqs)[None, None, :]
  period = out_length * length
  phase = tf.math.floormod(f * (a * length - j * out_length), period)
  angle = (2.0 * math.pi) * tf.cast(phase, tf.float32) / tf.cast(period, tf.float32)
  single = tf.logical_or(tf.equal(f, 0),
                         tf.logical_and(tf.equal(out_length % 2, 0),
                                        tf.equal(2 * f, out_length)))
  weight = tf.where(single, 1.0, 2.0) / tf.cast(length, tf.float32)
  return tf.reshape(weight * tf.cos(angle), [-1, num_freqs])


def spectral_operator(length, out_length, stride, smoothness_factor):
  """The [n, N] real matrix that masks and crops the spectrum of a length-N axis.

  `y = A x` equals: real DFT of x, multiply by the mask of `stride`, keep frequencies
  0..n//2, inverse real DFT of length n, times n / N (amplitude-preserving).

  Args:
    length: N (Python int, or int32 scalar tensor for dynamic shapes).
    out_length: n <= N (same types), e.g. from `output_length`.
    stride: float32 scalar tensor S; the gradient flows to it through the mask.
    smoothness_factor: R > 0 (Python float).

  Returns:
    float32 tensor [n, N].
  """
  mask = _mask(out_length // 2 + 1, length, stride, smoothness_factor)
  table = _cosine_table(out_length, length)
  return tf.reshape(tf.linalg.matvec(table, mask), [out_length, length])


@keras.saving.register_keras_serializable(package="mixnas_tf")
class StrideConstraint(keras.constraints.Constraint):
  """Clips strides to [lower, upper] (upper None: unbounded)."""

  def __init__(self, lower: float = 1.0, upper: float | None = None):
    self.lower = float(lower)
    self.upper = None if upper is None else float(upper)

  def __call__(self, w):
    upper = np.finfo(np.float32).max if self.upper is None else self.upper
    return tf.clip_by_value(w, self.lower, upper)

  def get_config(self):
    return {"lower": self.lower, "upper": self.upper}


@keras.saving.register_keras_serializable(package="mixnas_tf")
class DiffStride(keras.layers.Layer):
  """Spectral downsampling with a learnable stride per axis (or one shared stride).

  Args:
    strides: initial stride (S_h, S_w), or one number for both; each >= 1 and within the
      limits.
    smoothness_factor: R > 0, the width of the mask's linear ramp in frequency bins.
    cropping: crop the spectrum to the mask's support (downsample). If False the output
      has the input's size (a learned low-pass filter; static shape, no saving).
    trainable: learn the strides.
    shared: one stride for both axes (strides must then be equal).
    lower_limit_stride: strides are kept >= this (>= 1).
    upper_limit_stride: strides are kept <= this; None: no upper limit.
    data_format: "channels_last" ([B, H, W, C], native) or "channels_first" ([B, C, H, W]).
    num_models: K, the number of stacked stride sets (see the module docstring).

  Call:
    inputs: [B, H, W, C] (or [B, C, H, W]).
    model_index: int32 scalar tensor in [0, K) (default 0).
    output_size: (h, w) Python ints for static shapes, from `output_size_for` with the
      current strides; None computes them in-graph (dynamic shapes, no XLA).
  Returns:
    [B, h, w, C] (or [B, C, h, w]) with h = output_length(H, S_h, R) and likewise w.
  """

  def __init__(self, strides: float | Sequence[float] = (2.0, 2.0),
               smoothness_factor: float = 4.0, cropping: bool = True, trainable: bool = True,
               shared: bool = False, lower_limit_stride: float = 1.0,
               upper_limit_stride: float | None = None, data_format: str = "channels_last",
               num_models: int = 1, **kwargs):
    super().__init__(trainable=trainable, **kwargs)
    strides = _pair(strides, "strides")
    if data_format not in DATA_FORMATS:
      raise ValueError(f"data_format must be one of {', '.join(DATA_FORMATS)}. "
                       f"Received: data_format={data_format!r}")
    if not smoothness_factor > 0:
      raise ValueError("smoothness_factor must be > 0 (the stride learns through the mask's "
                       f"ramp). Received: smoothness_factor={smoothness_factor}")
    if not lower_limit_stride >= 1.0:
      raise ValueError("lower_limit_stride must be >= 1. "
                       f"Received: lower_limit_stride={lower_limit_stride}")
    if upper_limit_stride is not None and not upper_limit_stride >= lower_limit_stride:
      raise ValueError("upper_limit_stride must be None or >= lower_limit_stride. Received: "
                       f"upper_limit_stride={upper_limit_stride}, "
                       f"lower_limit_stride={lower_limit_stride}")
    upper = math.inf if upper_limit_stride is None else upper_limit_stride
    if not all(lower_limit_stride <= s <= upper for s in strides):
      raise ValueError(f"strides must be within [{lower_limit_stride}, {upper}]. "
                       f"Received: strides={strides}")
    if shared and strides[0] != strides[1]:
      raise ValueError(f"shared=True needs equal strides. Received: strides={strides}")
    if int(num_models) < 1:
      raise ValueError(f"num_models must be >= 1. Received: num_models={num_models}")
    self.initial_strides = strides
    self.smoothness_factor = float(smoothness_factor)
    self.cropping = bool(cropping)
    self.shared = bool(shared)
    self.lower_limit_stride = float(lower_limit_stride)
    self.upper_limit_stride = None if upper_limit_stride is None else float(upper_limit_stride)
    self.data_format = data_format
    self.num_models = int(num_models)

  def build(self, input_shape=None):
    init = self.initial_strides[:1] if self.shared else self.initial_strides
    self.strides = self.add_weight(
        name="strides", shape=(self.num_models, len(init)),
        initializer=keras.initializers.Constant(np.tile(np.float32(init), (self.num_models, 1))),
        constraint=StrideConstraint(self.lower_limit_stride, self.upper_limit_stride),
        trainable=self.trainable, autocast=False)
    # Weight decay would pull every stride towards 0 (optim.SlicedSGD reads this flag).
    self.strides.no_weight_decay = True
    self.built = True

  def stride_values(self, model_index=None):
    """The strides (S_h, S_w) of one weight set: float32 tensor [2], within the limits."""
    index = tf.constant(0, tf.int32) if model_index is None else model_index
    strides = tf.gather(self.strides.value, index)
    # The optimizer applies the constraint after each step; clipping here as well keeps the
    # layer correct under optimizers that do not. In range, the gradient passes unchanged.
    upper = np.finfo(np.float32).max if self.upper_limit_stride is None else \
        self.upper_limit_stride
    strides = tf.clip_by_value(strides, self.lower_limit_stride, upper)
    return tf.concat([strides, strides], 0) if self.shared else strides

  def current_strides(self, model_index: int = 0) -> tuple[float, float]:
    """The strides (S_h, S_w) of weight set `model_index`, read on the host."""
    return tuple(float(s) for s in self.stride_values(tf.constant(model_index, tf.int32)))

  def output_size_for(self, input_size: Sequence[int], model_index: int = 0,
                      strides: Sequence[float] | None = None) -> tuple[int, int]:
    """The static output size (h, w) for an input of spatial size (H, W).

    Args:
      input_size: (H, W).
      model_index: the weight set whose strides decide (read on the host) ...
      strides: ... unless the strides (S_h, S_w) are given.
    """
    s = self.current_strides(model_index) if strides is None else strides
    return tuple(output_length(n, s_i, self.smoothness_factor, self.cropping)
                 for n, s_i in zip(input_size, s))

  def _spatial_axes(self):
    return (1, 2) if self.data_format == "channels_last" else (2, 3)

  def call(self, inputs, model_index=None, output_size: Sequence[int] | None = None):
    strides = self.stride_values(model_index)
    axes = self._spatial_axes()
    shape = tf.shape(inputs)
    static = inputs.shape
    # Spatial sizes as Python ints when static, else int32 tensors.
    height, width = (static[a] if static[a] is not None else shape[a] for a in axes)
    if output_size is not None:
      out_h, out_w = (int(v) for v in output_size)
      for name, n_out, n in (("height", out_h, height), ("width", out_w, width)):
        if not 1 <= n_out or (isinstance(n, int) and n_out > n):
          raise ValueError(f"output_size {name} must be in [1, {n}]. "
                           f"Received: output_size={tuple(output_size)}")
    elif not self.cropping:
      out_h, out_w = height, width
    else:
      out_h, out_w = (self._dynamic_length(n, strides[i]) for i, n in enumerate((height, width)))
    a_h = tf.cast(spectral_operator(height, out_h, strides[0], self.smoothness_factor),
                  inputs.dtype)
    a_w = tf.cast(spectral_operator(width, out_w, strides[1], self.smoothness_factor),
                  inputs.dtype)
    if self.data_format == "channels_last":
      batch, channels = shape[0], shape[3]
      # [B, H, W*C] -> [B, h, W*C]: the H axis is a matrix row axis, no transpose needed.
      y = tf.matmul(a_h, tf.reshape(inputs, [batch, height, -1]))
      # [B*h, W, C] -> [B*h, w, C].
      y = tf.matmul(a_w, tf.reshape(y, [-1, width, channels]))
      out = tf.reshape(y, [batch, out_h, out_w, channels])
      out_shape = (static[0], _static(out_h), _static(out_w), static[3])
    else:
      batch, channels = shape[0], shape[1]
      # [B*C*H, W] x A_w^T -> [B*C*H, w], then [B*C, H, w] -> [B*C, h, w].
      y = tf.matmul(tf.reshape(inputs, [-1, width]), a_w, transpose_b=True)
      y = tf.matmul(a_h, tf.reshape(y, [-1, height, out_w]))
      out = tf.reshape(y, [batch, channels, out_h, out_w])
      out_shape = (static[0], static[1], _static(out_h), _static(out_w))
    return tf.ensure_shape(out, out_shape)

  def _dynamic_length(self, length, stride):
    """`output_length` in-graph (the same float32 arithmetic), as an int32 tensor."""
    n = tf.cast(length, tf.float32)
    support = n / (2.0 * tf.stop_gradient(stride)) + np.float32(self.smoothness_factor / 2.0)
    return tf.minimum(tf.cast(length, tf.int32), 2 * tf.cast(tf.math.ceil(support), tf.int32))

  def compute_output_shape(self, input_shape):
    shape = list(input_shape)
    for a in self._spatial_axes():
      if not self.cropping:
        continue
      shape[a] = None
    return tuple(shape)

  def get_config(self):
    return {**super().get_config(), "strides": list(self.initial_strides),
            "smoothness_factor": self.smoothness_factor, "cropping": self.cropping,
            "shared": self.shared, "lower_limit_stride": self.lower_limit_stride,
            "upper_limit_stride": self.upper_limit_stride, "data_format": self.data_format,
            "num_models": self.num_models}


def _static(value):
  return value if isinstance(value, int) else None


# Reading a trained DiffStride network ---------------------------------------------------
