"""Work directories: resolved flags written first, conflict checks on resume, atomic writes."""

import json
import os
import platform
import sys
import tempfile
from typing import Any

from mixnas_tf import errors


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename (never half-written)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_json(path: str, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def atomic_savefig(figure, path: str) -> None:
  """Saves a matplotlib figure atomically (same temporary-file-and-rename rule)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                             suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    figure.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _jsonable(value):
  if hasattr(value, "tolist"):
    return value.tolist()
  if isinstance(value, (set, frozenset, tuple)):
    return list(value)
  raise TypeError(f"not JSON-serialisable: {value!r}")


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def environment() -> dict[str, str]:
  """Versions that decide a run's numbers."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  env = {"python": sys.version.split()[0], "platform": platform.platform(),
         "tensorflow": tf.__version__, "keras": keras.__version__,
         "devices": [d.name for d in tf.config.list_logical_devices()]}
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    env["tensorflow_datasets"] = tfds.__version__
  except ImportError:
    pass
  from mixnas_tf import __version__  # pylint: disable=g-import-not-at-top
  env["mixnas_tf"] = __version__
  return env


def prepare(workdir: str, flags: dict[str, Any], ignore: frozenset[str] = frozenset(),
            extra: dict[str, Any] | None = None,
            defaults: dict[str, Any] | None = None) -> bool:
  """Creates `workdir` and writes `flags.json` (and `extra` files) before the run starts.

  On a work directory that already holds `flags.json`, checks that the flags that decide
  the results are the same (all but `ignore`, e.g. logging frequency or data paths) and
  raises UsageError naming the first conflicts otherwise.

  Args:
    workdir: the run's directory.
    flags: resolved flag values (JSON-able).
    ignore: flag names that may differ on resume.
    extra: {file name: JSON-able object} to write beside flags.json on a fresh start.
    defaults: the default of every flag: a flag that an older version did not have (absent
      from a saved flags.json) matches when the run uses its default.

  Returns:
    True when the directory holds an earlier run of the same flags (resume).
  """
  path = os.path.join(workdir, "flags.json")
  flags = json.loads(json.dumps(flags, default=_jsonable))
  if os.path.exists(path):
    saved = read_json(path)
    known = json.loads(json.dumps(defaults or {}, default=_jsonable))
    saved = {**{k: v for k, v in known.items() if k in flags and k not in saved}, **saved}
    conflicts = [f"--{k}={saved.get(k)!r} (now {flags.get(k)!r})"
                 for k in sorted(set(saved) | set(flags))
                 if k not in ignore and saved.get(k) != flags.get(k)]
    if conflicts:
      raise errors.UsageError(
          f"work directory {workdir} holds a run started with different flags: "
          f"{'; '.join(conflicts[:4])}{' ...' if len(conflicts) > 4 else ''}; "
          "use a new --workdir or the same flags to resume")
    return True
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.UsageError(f"cannot create work directory {workdir}: {e.strerror}") from None
  for name, obj in (extra or {}).items():
    atomic_write_json(os.path.join(workdir, name), obj)
  atomic_write_json(os.path.join(workdir, "environment.json"), environment())
  atomic_write_json(path, flags)
  return False
