"""The time left of long work (training steps, configurations evaluated), at this process's pace.

A resumed run's whole elapsed time holds earlier sittings, other machines and pauses: a run
resumed on a faster machine, or after a day stopped, would be told hours too many. Only the
units of work done since this process started counting are used.
"""

from collections.abc import Callable
import time


class Pace:
  """Time left from the units done since construction (`done` of `total` then)."""

  def __init__(self, done: int, total: int, clock: Callable[[], float] = time.monotonic):
    self._first, self._total, self._clock = done, total, clock
    self._start = clock()

  def seconds_left(self, done: int) -> float | None:
    """Seconds until `total` at the pace since construction; None before a unit is done."""
    ran = done - self._first
    if ran <= 0:
      return None
    return (self._clock() - self._start) / ran * max(self._total - done, 0)

  def eta(self, done: int) -> str:
    """'ETA 12 min', 'ETA 3.4 h', or 'ETA unknown' before the first unit of this process."""
    return f"ETA {format_duration(self.seconds_left(done))}"


def format_duration(seconds: float | None) -> str:
  """Minutes below 100 of them ('<1 min' for under one), hours beyond."""
  if seconds is None:
    return "unknown"
  if 0 < seconds < 60:
    return "<1 min"
  if seconds < 100 * 60:
    return f"{round(seconds / 60)} min"
  return f"{seconds / 3600:.1f} h"
