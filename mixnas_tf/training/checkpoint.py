"""Checkpoints of a trainer's variables with the host-side state they go with."""

import json
import os

import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf import workdir as workdir_lib


class Checkpointer:
  """TF checkpoint of the trainer's variables + an atomic JSON of the host-side state.

  The JSON (`state.json`) names the checkpoint it goes with and is written after it, so
  a crash between the two leaves the previous consistent pair.
  """

  def __init__(self, directory: str, trainer: tf.Module, keep: int = 2):
    self.directory = os.path.join(directory, "checkpoints")
    self.state_path = os.path.join(directory, "state.json")
    self.checkpoint = tf.train.Checkpoint(trainer=trainer)
    self.keep = keep

  def restore(self) -> dict | None:
    """Restores the latest checkpoint; returns its host state, or None for a fresh run."""
    if not os.path.exists(self.state_path):
      return None
    with open(self.state_path) as f:
      state = json.load(f)
    path = os.path.join(self.directory, state["checkpoint"])
    try:
      self.checkpoint.read(path).assert_consumed()
    except AssertionError as e:
      # E.g. a checkpoint of mixnas_tf 0.1.0, which lost the blocks' moving statistics.
      raise errors.UsageError(
          f"checkpoint {path} does not hold every variable of this run's network "
          f"({str(e).splitlines()[0][:200]}); it cannot be resumed or exported: "
          "train again in a new --workdir") from None
    return state

  def save(self, state: dict) -> None:
    os.makedirs(self.directory, exist_ok=True)
    name = f"ckpt-{state['epoch']:04d}-{state['step_in_epoch']:06d}"
    try:
      self.checkpoint.write(os.path.join(self.directory, name))
      workdir_lib.atomic_write_json(self.state_path, {**state, "checkpoint": name})
    except (OSError, tf.errors.OpError) as e:
      # state.json still names the previous checkpoint, which rotation has not touched.
      for f in os.listdir(self.directory):
        if f.startswith(name + "."):
          os.remove(os.path.join(self.directory, f))
      reason = str(getattr(e, "message", None) or e).splitlines()[0][:300]
      raise errors.RunError(
          f"could not write checkpoint {name} in {self.directory} ({reason}); the last good "
          "checkpoint is intact: make room and run the same command again to resume") from None
    kept = sorted({f.split(".")[0] for f in os.listdir(self.directory)
                   if f.startswith("ckpt-")})
    for old in kept[:-self.keep]:
      for f in os.listdir(self.directory):
        if f.startswith(old + "."):
          os.remove(os.path.join(self.directory, f))
