r"""Training a DiffStride ResNet: the strides of the downsampling positions are learned.

  python -m mixnas_tf.diffstride_train --workdir=DIR --dataset=cifar10 --init_config=4,3,3
  python -m mixnas_tf.diffstride_train --workdir=DIR --dataset=folder:PATH \
      --init_config=1,1,8 --stride_regularizer=0.1 --epochs=30

Every candidate position of the space's network carries a `diffstride.DiffStride` layer,
initialised at stride 2 where --init_config downsamples and 1 elsewhere (those can learn to
grow). The network is the one builder's (`SwitchableResNet(downsample="diffstride")`) and it
is trained by the stand-alone library (`standalone.train_standalone`: the same train step
and loop as retraining; flags first, TensorBoard, checkpoints, resume). DIR/metrics.json
holds the test accuracy and, from `diffstride.summarize`, the learned strides per layer,
the executed layer sizes, the nearest configuration of the space, and the cost (MACs) at
the learned strides.

Execution: by default without XLA (--nojit_compile), where the layer sizes are computed
in-graph from the strides; with --jit_compile the sizes are read on the host before every
step and each new set of sizes is traced and compiled once (the persistent XLA cache keeps
them across resumes). experiments/bench_diffstride.md has the measurements.
"""

import dataclasses

from absl import flags

from mixnas_tf import cli

# XLA reads its flags when TensorFlow starts: the cache is set before any import of it.
cli.preset_xla_cache()
cli.quiet_startup()

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.methods import standalone  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  d = standalone.StandaloneConfig()
  flags.DEFINE_string("workdir", None, "Output directory (flags, checkpoints, TensorBoard, "
                      "metrics.json). Running again on the same directory resumes.")
  flags.DEFINE_string("init_config", d.config, "Initial strides, as a configuration of the "
                      "space: stride 2 where it downsamples, 1 elsewhere: "
                      f"{cli.CONFIG_NOTATIONS}.")
  flags.DEFINE_float("smoothness_factor", d.smoothness_factor, "Width R, in frequency bins, "
                     "of the linear ramp of every DiffStride mask; an axis of N pixels at "
                     "stride S keeps min(N, 2 ceil(N/(2S) + R/2)) pixels.")
  flags.DEFINE_float("stride_regularizer", d.stride_regularizer, "Weight of the cost "
                     "penalty: the network's multiply-accumulates implied by the strides, "
                     "relative to the network at stride 1 (0 disables it).", lower_bound=0.0)
  # Without XLA the layer sizes are computed in-graph and nothing retraces; with XLA every
  # new set of sizes is a new compilation. Graph mode was also the faster one per step on
  # the project's CPU (experiments/bench_diffstride.md), hence this command's default.
  cli.define_standalone_flags(dataclasses.replace(d, jit_compile=False),
                              skip=("downsample",))


def config_from_flags() -> standalone.StandaloneConfig:
  return cli.standalone_values(standalone.StandaloneConfig, config=FLAGS.init_config,
                               downsample="diffstride")


def main(argv):
  cli.check_no_positional(argv)
  workdir = cli.required_workdir(FLAGS.workdir)
  cfg = config_from_flags()
  metrics = standalone.train_standalone(cfg, workdir)
  if metrics is None:
    cli.exit_interrupted()
  nearest = metrics["nearest_config"]
  strides = " ".join(f"{layer}:{s[0]:.2f}x{s[1]:.2f}"
                     for layer, s in metrics["learned_strides"].items())
  print(f"from {spaces.format_stages(metrics['config']['stages'])}: test accuracy "
        f"{metrics['test_accuracy']:.4f}; learned strides {strides}; nearest configuration "
        f"{spaces.format_stages(nearest['stages'])} (#{nearest['index']}); "
        f"{metrics['macs'] / 1e6:.1f} M MACs")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
