"""Diagnostic (issue 9): `python -m mixnas_tf.train` with PyTorch's default initialisers.

PyTorch initialises a conv or linear kernel uniformly with variance 1 / (3 fan_in)
(kaiming_uniform, a = sqrt(5)); mixnas_tf uses He-normal convolutions and a Glorot-uniform
classifier. INIT=conv|dense|both swaps in the PyTorch-like initialiser for those layers,
INIT=he changes nothing; every flag is train's. Used to look at the first epoch of seed 0,
whose training loss starts badly (README, "How far to trust a ranking"):

    INIT=both python experiments/fidelity/init_probe.py --workdir=/tmp/probe --seed=0 \\
        --num_models=1 --configs=all --epochs=15 --train_size=15000 --val_size=5000 \\
        --dataset=folder:../shared/data/cifar10 --nojit_compile --log_every=3
    # stop it after "epoch 1/15", then read train/loss there and batch/loss in TensorBoard.
"""

import os

from mixnas_tf import cli
from mixnas_tf import train
from mixnas_tf.nn import stacked

TORCH = {"class_name": "VarianceScaling",
         "config": {"scale": 1 / 3, "mode": "fan_in", "distribution": "uniform"}}


def _with_torch_init(layer_cls):
  original = layer_cls.__init__

  def init(self, *args, kernel_initializer=None, **kwargs):
    del kernel_initializer
    original(self, *args, kernel_initializer=dict(TORCH), **kwargs)  # A new one per layer.
  layer_cls.__init__ = init


if __name__ == "__main__":
  which = os.environ.get("INIT", "")
  if which not in ("he", "conv", "dense", "both"):
    raise SystemExit("error: set INIT to he, conv, dense or both")
  if which in ("conv", "both"):
    _with_torch_init(stacked.StackedConv2D)
  if which in ("dense", "both"):
    _with_torch_init(stacked.StackedDense)
  cli.run(train.main)
