"""The one training loop: epochs of steps, progress, TensorBoard, checkpoints, resume.

`run_epochs` (flax-style `for step, batch in zip(...)`) runs what a command plugs into it
(`LoopHooks`): progress, TensorBoard scalars, checkpoints every epoch and on
SIGINT/SIGTERM, and resume from the last checkpoint of the work directory.
"""

from collections.abc import Callable
from collections.abc import Iterable
import contextlib
import dataclasses
import math
import os
import signal
import time
from typing import Any

from absl import logging
import keras
import tensorflow as tf

from mixnas_tf import errors
from mixnas_tf.training import checkpoint as checkpoint_lib
from mixnas_tf.training import pace as pace_lib
from mixnas_tf.training.trainer import Trainer


class GracefulStop(contextlib.AbstractContextManager):
  """Turns SIGINT/SIGTERM into a request to checkpoint and stop after the current step.

  A second SIGINT while a stop is pending raises KeyboardInterrupt as usual.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    logging.warning("Received signal %d: checkpointing and stopping after this step.", signum)

  def __enter__(self):
    try:
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # Not the main thread: no handlers, no graceful stop.
      self._previous = {}
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


@dataclasses.dataclass
class LoopHooks:
  """What a command plugs into `run_epochs`.

  batches(epoch, start_step, epochs): the run's training batches from `start_step` of
    `epoch` to the end of epoch `epochs - 1`. The loop reads them all from one iterator
    (one per run, not per epoch: BUILD_NOTES, "stalls at 0 % CPU"); a tf.data.Dataset of
    known cardinality must hold exactly that many batches.
  step(epoch, step, batch): runs one compiled step, returns scalar tensors (not fetched).
  epoch_begin(epoch, start_step): host work before an epoch (e.g. balancing) or before
    resuming it at `start_step` > 0; returns scalars to log.
  epoch_end(epoch, metrics): host work after it; returns scalars to log.
  state(): extra JSON-able host state to checkpoint; restore(state): its inverse.
  after_step(global_step): test hook, called after each step.
  """
  batches: Callable[[int, int, int], Iterable]
  step: Callable[[int, int, Any], dict]
  epoch_begin: Callable[[int, int], dict] = lambda epoch, start_step: {}
  epoch_end: Callable[[int, dict], dict] = lambda epoch, metrics: {}
  state: Callable[[], dict] = dict
  restore: Callable[[dict], None] = lambda state: None
  after_step: Callable[[int], None] | None = None


def _scalars(writer, step: int, values: dict[str, float]) -> None:
  with writer.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(name, value)


def _check_finite(values: dict[str, float], epoch: int, first_step: int, step: int) -> None:
  """Stops a diverged run before anything is checkpointed or written from it."""
  bad = sorted(k for k, v in values.items() if not math.isfinite(v))
  if bad:
    raise errors.RunError(
        f"training diverged: {', '.join(bad)} became non-finite in epoch {epoch + 1} between "
        f"steps {first_step + 1} and {step + 1} of the epoch; no results written, the last "
        "good checkpoint is kept (lower --learning_rate and train in a new --workdir)")


def hparams_of(config) -> dict[str, bool | int | float | str]:
  """A run's settings (a dataclass) as TensorBoard HParams: scalar fields as they are,
  the rest as text, so that runs can be compared side by side in the HParams dashboard."""
  return {k: v if isinstance(v, (bool, int, float, str)) else str(v)
          for k, v in dataclasses.asdict(config).items() if v is not None}


def _check_count(source, expected: int) -> None:
  """Refuses a tf.data input whose known number of batches is not the run's remaining
  steps: one iterator serves every epoch, so a per-epoch count that differs from the
  loop's would shift every later epoch's batches."""
  if isinstance(source, tf.data.Dataset):
    count = int(source.cardinality())
    if count >= 0 and count != expected:
      raise RuntimeError(f"the input pipeline holds {count} batches; the run's remaining "
                         f"steps are {expected}")


def run_epochs(*, workdir: str, trainer: Trainer, hooks: LoopHooks, epochs: int,
               steps_per_epoch: int, log_every: int = 50, progress: bool = True,
               hparams: dict | None = None) -> str:
  """Runs (or resumes) epochs of training; returns "completed" or "interrupted".

  Per-step metrics are summed on the device and fetched only every `log_every` steps
  and at the end of an epoch, so the loop does not wait on the device in between.
  History (per-epoch metric means and whatever the hooks return) is kept in the
  checkpointed host state under "history". `hparams` (see `hparams_of`) go to TensorBoard's
  HParams dashboard, where its epoch/* metrics compare runs side by side.
  """
  checkpointer = checkpoint_lib.Checkpointer(workdir, trainer)
  state = checkpointer.restore() or {"epoch": 0, "step_in_epoch": 0, "history": [],
                                     "extra": {}, "sums": {}, "elapsed": 0.0}
  if state["epoch"] or state["step_in_epoch"]:
    logging.info("Resuming from epoch %d, step %d.", state["epoch"], state["step_in_epoch"])
  hooks.restore(state["extra"])
  if state["epoch"] >= epochs:
    return "completed"
  writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
  if hparams and not state["history"] and not state["step_in_epoch"]:
    from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
    with writer.as_default():
      hp.hparams(hparams)  # Once per run (not again on resume).
  start_time = time.time() - state["elapsed"]
  pace = pace_lib.Pace(state["epoch"] * steps_per_epoch + state["step_in_epoch"],
                       epochs * steps_per_epoch)

  def snapshot(epoch, step_in_epoch, sums):
    return {**state, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "sums": {k: float(v) for k, v in sums.items()}, "extra": hooks.state(),
            "elapsed": time.time() - start_time}

  with GracefulStop() as stop:
    source = hooks.batches(state["epoch"], state["step_in_epoch"], epochs)
    _check_count(source, (epochs - state["epoch"]) * steps_per_epoch - state["step_in_epoch"])
    batches = iter(source)
    for epoch in range(state["epoch"], epochs):
      start = state["step_in_epoch"] if epoch == state["epoch"] else 0
      begin = hooks.epoch_begin(epoch, start)
      sums = {k: tf.constant(v) for k, v in state["sums"].items()} if start else {}
      bar = None
      if progress:
        print(f"Epoch {epoch + 1}/{epochs}", flush=True)
      last = start - 1
      checked = start  # Steps before this one were seen finite.
      waited = 0.0  # Seconds the loop waited for its input this epoch.
      for step in range(start, steps_per_epoch):
        t0 = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - t0
        if batch is None:
          break
        metrics = hooks.step(epoch, step, batch)
        for name, value in metrics.items():
          if value.dtype.is_floating:
            sums[name] = sums.get(name, 0.0) + tf.cast(value, tf.float32)
        last = step
        global_step = epoch * steps_per_epoch + step + 1
        if hooks.after_step:
          hooks.after_step(global_step)
        if (step + 1) % log_every == 0 or step + 1 == steps_per_epoch:
          # TensorBoard: this step's values (batch/*); the bar: the epoch's means so far,
          # the numbers the epoch's log line and epoch/* will report at its end.
          _scalars(writer, global_step, {f"batch/{k}": float(v) for k, v in metrics.items()
                                         if v.dtype.is_floating})
          running = [(k, float(v) / (step + 1)) for k, v in sums.items()]
          _check_finite(dict(running), epoch, checked, step)
          checked = step + 1
          if bar is None:
            bar = keras.utils.Progbar(steps_per_epoch, verbose=1 if progress else 0,
                                      stateful_metrics=[k for k, _ in running])
          bar.update(step + 1, running)
        if stop.requested:
          _check_finite({k: float(v) for k, v in sums.items()}, epoch, checked, step)
          checkpointer.save(snapshot(epoch, step + 1, sums))
          writer.flush()
          logging.warning("Stopped at epoch %d step %d; checkpointed. Run the same command "
                          "again to resume.", epoch + 1, step + 1)
          return "interrupted"
      if last + 1 < steps_per_epoch:
        raise RuntimeError(f"the input pipeline ended after {last + 1} of {steps_per_epoch} "
                           f"steps of epoch {epoch}")
      # Sums restored from a mid-epoch checkpoint include the steps before it.
      means = {f"train/{k}": float(v) / steps_per_epoch for k, v in sums.items()}
      _check_finite(means, epoch, checked, steps_per_epoch - 1)
      record = {"epoch": epoch, **means, **begin}
      record.update(hooks.epoch_end(epoch, means))
      record["time/input_wait_s"] = waited
      record["time/elapsed_s"] = time.time() - start_time
      _scalars(writer, (epoch + 1) * steps_per_epoch,
               {k.replace("train/", "epoch/", 1): v for k, v in record.items()
                if isinstance(v, (int, float)) and k != "epoch"})
      writer.flush()
      state["history"].append(record)
      state = snapshot(epoch + 1, 0, {})
      checkpointer.save(state)
      logging.info("epoch %d/%d (%s): %s", epoch + 1, epochs,
                   pace.eta((epoch + 1) * steps_per_epoch),
                   ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                             if isinstance(v, float)))
      if stop.requested:  # It came during the epoch's end or its checkpoint, just saved.
        logging.warning("Stopped after epoch %d; checkpointed. Run the same command again "
                        "to resume.", epoch + 1)
        return "interrupted"
  return "completed"
