r"""Checks an export the way a user loads it: in a process that never imports mixnas_tf.

  python experiments/check_export.py --export=runs/retrain/export \
      --folder=../shared/data/cifar10/train --every=100

Loads `model.keras` with plain Keras and the SavedModel's `serving_default` with
`tf.saved_model.load`, feeds both the same uint8 images (every N-th file of an image
folder, labels from the sub-folder names) and prints their agreement and accuracy.
Images of the training split overlap the run's training images: use them to check the
export, not to measure accuracy.
"""

import argparse
import json
import pathlib
import sys

import keras
import numpy as np
import tensorflow as tf


def _load(path: pathlib.Path, size) -> np.ndarray:
  """uint8 RGB pixels, resized as export.json's preprocessing says when not `size`."""
  image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
  if tuple(image.shape[:2]) != tuple(size):
    image = tf.image.resize(image, size, antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return image.numpy()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--export", required=True, help="export directory (export.json, ...)")
  parser.add_argument("--folder", required=True, help="PATH/<class>/<image> folder")
  parser.add_argument("--every", type=int, default=100, help="take every N-th image")
  args = parser.parse_args()
  export = pathlib.Path(args.export)
  info = json.loads((export / "export.json").read_text())
  classes = info["class_names"]
  size = info["input"]["shape"][:2]
  files = sorted(p for p in pathlib.Path(args.folder).glob("*/*") if p.is_file())
  files = files[::args.every]
  if not files:
    sys.exit(f"error: no images under {args.folder}/<class>/")
  images = np.stack([_load(f, size) for f in files])
  labels = np.array([classes.index(f.parent.name) for f in files])
  model = keras.models.load_model(export / info["files"]["keras"])
  serving = tf.saved_model.load(str(export / info["files"]["saved_model"]))
  serving = serving.signatures[info["files"]["signature"]]
  from_keras = model.predict(images, batch_size=256, verbose=0)
  from_saved = serving(**{info["input"]["name"]: tf.constant(images)})
  from_saved = from_saved[info["output"]["name"]].numpy()
  assert "mixnas_tf" not in sys.modules
  print(f"{len(files)} images; keras vs SavedModel: max |diff| "
        f"{np.abs(from_keras - from_saved).max():.2e}, same class "
        f"{np.mean(from_keras.argmax(1) == from_saved.argmax(1)):.4f}; accuracy "
        f"{np.mean(from_keras.argmax(1) == labels):.4f}; predicted classes "
        f"{np.bincount(from_keras.argmax(1), minlength=len(classes)).tolist()}; "
        f"export.json test accuracy {info['test_accuracy']}; mixnas_tf imported: no")


if __name__ == "__main__":
  main()
