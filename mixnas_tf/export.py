"""Export of a trained stand-alone network as plain Keras and TensorFlow artefacts.

  python -m mixnas_tf.export --workdir=RUN_DIR [--out=DIR]

A `SwitchableResNet` holds stacked weights and custom layers, so its own `.keras` file
only loads where mixnas_tf is importable. `to_functional` rebuilds one (configuration,
weight set) of it as a functional model of standard Keras layers (Conv2D,
BatchNormalization, pooling, Add, Dense, ...) with the trained weights copied in; that
model is what gets shipped. `export` writes, into RUN_DIR/export by default:
  - model.keras: loads with `keras.models.load_model` in any Keras 3 process;
  - saved_model/: `tf.saved_model.load`-able, signature `serving_default` taking
    `images` uint8 [B, S, S, 3] and returning `probabilities` float32 [B, classes];
  - export.json: configuration, class names, input size, preprocessing, test accuracy,
    and the export's identity (configuration + fingerprint of the weights).
Both model forms normalise the pixels inside and output class probabilities.
"""

import os

from absl import flags

from mixnas_tf import cli

cli.quiet_startup()

from mixnas_tf import spaces  # pylint: disable=wrong-import-position
from mixnas_tf.exporting import keras_export as lib  # pylint: disable=wrong-import-position


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Directory of a finished stand-alone training run "
                      "(python -m mixnas_tf.retrain writes them; with several seeds, "
                      "WORKDIR/seed_<s>).")
  flags.DEFINE_string("out", None, "Export directory (default: WORKDIR/export). It must be "
                      "new, empty, or hold an export of the same model.")


def main(argv):
  cli.check_no_positional(argv)
  run_dir = cli.required_workdir(flags.FLAGS.workdir)
  out = flags.FLAGS.out and os.path.abspath(os.path.expanduser(flags.FLAGS.out))
  info = lib.export(run_dir, out)
  accuracy = info["test_accuracy"]
  print(f"exported configuration {spaces.format_stages(info['config']['stages'])} "
        f"(test accuracy {'unknown' if accuracy is None else f'{accuracy:.4f}'}) to "
        f"{out or os.path.join(run_dir, 'export')}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
