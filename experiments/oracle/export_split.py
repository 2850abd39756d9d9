"""Writes a search's exact data split to one .npz, so the PyTorch oracle trains on it.

The oracle (`mixture_torch.py`) must see the same search-train and search-validation
images as `python -m mixnas_tf.train` with the same --dataset/--seed/--val_fraction/
--train_size/--val_size; this script asks mixnas_tf's own data module for them (the only
thing the oracle takes from the package) and writes

    OUT.npz: train_images uint8 [N, S, S, 3], train_labels int64 [N],
             val_images uint8 [M, S, S, 3], val_labels int64 [M],
             mean float [3], std float [3] (pixel statistics in [0, 1] units)

Usage (from the repository root):
    python experiments/oracle/export_split.py --dataset=folder:../shared/data/cifar10 \
        --seed=0 --val_fraction=0.5 --out=runs/oracle/split_seed0.npz
"""

import os
import sys

from absl import app
from absl import flags
import numpy as np

from mixnas_tf.methods import search

_DATASET = flags.DEFINE_string("dataset", "folder:../shared/data/cifar10", "As for train.")
_SEED = flags.DEFINE_integer("seed", 0, "The search's --seed (it fixes the split).")
_VAL_FRACTION = flags.DEFINE_float("val_fraction", 0.5, "As for train.")
_TRAIN_SIZE = flags.DEFINE_integer("train_size", 0, "As for train (0: the whole part).")
_VAL_SIZE = flags.DEFINE_integer("val_size", 0, "As for train (0: the whole part).")
_OUT = flags.DEFINE_string("out", None, "The .npz to write.", required=True)


def main(argv):
  del argv
  cfg = search.SearchConfig(dataset=_DATASET.value, seed=_SEED.value,
                            val_fraction=_VAL_FRACTION.value, train_size=_TRAIN_SIZE.value,
                            val_size=_VAL_SIZE.value)
  dataset, train, val = search.load_search_data(cfg)
  if train.encoded:
    sys.exit("error: the oracle takes small images held as arrays (CIFAR-size), "
             f"not JPEG-encoded {dataset.image_size}px images")
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  tmp = _OUT.value + ".tmp.npz"
  np.savez(tmp, train_images=train.images, train_labels=train.labels.astype(np.int64),
           val_images=val.images, val_labels=val.labels.astype(np.int64),
           mean=np.asarray(dataset.mean), std=np.asarray(dataset.std))
  os.replace(tmp, _OUT.value)
  print(f"wrote {_OUT.value}: search-train {len(train)}, search-val {len(val)} images, "
        f"{dataset.num_classes} classes")


if __name__ == "__main__":
  app.run(main)
