"""Checkpoints of a trainer's variables with the host-side state they go with."""

import glob
import json
import os
import shutil

import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf import workdir as workdir_lib


class Checkpointer:
  """TF checkpoints of the trainer's variables (`tf.train.CheckpointManager`: numbering,
  rotation, `tf.train.latest_checkpoint`) + an atomic JSON of the host-side state.

  The JSON (`state.json`) names the checkpoint it goes with and is written after it, so
  a crash between the two leaves the previous consistent pair (the manager keeps two).
  """

  def __init__(self, directory: str, trainer: tf.Module, keep: int = 2):
    self.directory = os.path.join(directory, "checkpoints")
    self.state_path = os.path.join(directory, "state.json")
    self.checkpoint = tf.train.Checkpoint(trainer=trainer)
    self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                              max_to_keep=keep, checkpoint_name="ckpt")

  def restore(self) -> dict | None:
    """Restores the latest checkpoint; returns its host state, or None for a fresh run."""
    if not os.path.exists(self.state_path):
      return None
    with open(self.state_path) as f:
      state = json.load(f)
    path = os.path.join(self.directory, state["checkpoint"])
    try:
      # restore() also resumes the manager's numbering (save_counter); checkpoints of
      # mixnas_tf <= 0.1.1 (ckpt-EPOCH-STEP, written by Checkpoint.write) have none.
      if any(n.startswith("save_counter") for n, _ in tf.train.list_variables(path)):
        self.checkpoint.restore(path).assert_consumed()
      else:
        self.checkpoint.read(path).assert_consumed()
    except AssertionError as e:
      # E.g. a checkpoint of mixnas_tf 0.1.0, which lost the blocks' moving statistics.
      raise errors.UsageError(
          f"checkpoint {path} does not hold every variable of this run's network "
          f"({str(e).splitlines()[0][:200]}); it cannot be resumed or exported: "
          "train again in a new --workdir") from None
    except (tf.errors.OpError, IndexError) as e:
      # Missing files (NotFoundError) or truncated ones (TF's reader raises IndexError, "Read
      # less bytes than requested", or DataLossError): a disk that lost them, a copy that
      # left them out.
      reason = str(getattr(e, "message", None) or e).splitlines()[0][:200]
      raise errors.UsageError(
          f"checkpoint {path}, which {self.state_path} names, cannot be read ({reason}); "
          "restore its files, or train again in a new --workdir") from None
    return state

  def save(self, state: dict) -> None:
    try:
      path = self.manager.save()
      name = os.path.basename(path)
      # On disk before state.json names it: after a power loss, state.json never names a
      # checkpoint whose files were still in the page cache.
      workdir_lib.fsync_files(glob.glob(path + ".*") + [os.path.join(self.directory,
                                                                     "checkpoint")])
      workdir_lib.fsync_directory(self.directory)
      workdir_lib.atomic_write_json(self.state_path, {**state, "checkpoint": name})
    except (OSError, tf.errors.OpError) as e:
      # state.json still names the last good checkpoint: keep it, drop the partial one.
      self._sweep(keep=self._named())
      reason = str(getattr(e, "message", None) or e).splitlines()[0][:300]
      raise errors.RunError(
          f"could not write checkpoint {self.directory}/ckpt-{int(self.checkpoint.save_counter)}"
          f" ({reason}); the last good checkpoint is intact: make room and run the same "
          "command again to resume") from None
    # Files the manager does not track (an earlier version's names): removed.
    self._sweep(keep={os.path.basename(p) for p in self.manager.checkpoints})

  def _named(self) -> set[str]:
    if not os.path.exists(self.state_path):
      return set()
    with open(self.state_path) as f:
      return {json.load(f)["checkpoint"]}

  def _sweep(self, keep: set[str]) -> None:
    if not os.path.isdir(self.directory):  # The failed save could not even create it.
      return
    for f in os.listdir(self.directory):
      if f.startswith("ckpt-") and f.split(".")[0] not in keep:
        path = os.path.join(self.directory, f)
        if os.path.isdir(path):  # A sharded save's `ckpt-N_temp/`.
          shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
          os.remove(path)
