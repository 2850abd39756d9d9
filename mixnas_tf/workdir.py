"""Work directories: one process each (a lock), resolved flags written first, conflict
checks on resume, atomic writes that follow the umask."""

import contextlib
import errno
import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any

from mixnas_tf import errors

LOCK_FILE = ".lock"
# Work directories this process holds: path -> open lock file (the lock lives as long as
# the file stays open, and the OS releases it when the process ends, crash included).
_HELD: dict[str, Any] = {}


def _umask_mode(mode: int = 0o666) -> int:
  umask = os.umask(0)
  os.umask(umask)
  return mode & ~umask


def ensure_dir(workdir: str) -> str:
  """Creates `workdir` (and parents); errors.UsageError in one line when it cannot."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.UsageError(f"work directory {workdir} exists and is not a directory; "
                            "choose another --workdir")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise errors.UsageError(f"cannot create work directory {workdir}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise errors.UsageError(f"work directory {workdir} is not writable; choose another "
                            "--workdir")
  return workdir


def acquire(workdir: str) -> str:
  """Holds `workdir` for this process: a second process is refused in one line.

  `fcntl.flock` on WORKDIR/.lock, re-entrant within a process; the lock lasts until
  `release` (see `held`) or the end of the process, crash included.
  """
  workdir = ensure_dir(workdir)
  if workdir in _HELD:
    return workdir
  handle = open(os.path.join(workdir, LOCK_FILE), "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      # Not held by anyone: this filesystem has no locks (ENOLCK, EOPNOTSUPP, ...).
      handle.close()
      raise errors.UsageError(
          f"cannot lock work directory {workdir} ({os.strerror(e.errno)}): its filesystem "
          "does not support file locks; choose a --workdir on a local disk") from None
    handle.seek(0)
    owner = handle.read().strip() or "another process"
    handle.close()
    raise errors.UsageError(f"work directory {workdir} is in use by {owner}; wait for it "
                            "to finish or stop it, or choose another --workdir") from None
  handle.seek(0)
  handle.truncate()
  handle.write(f"process {os.getpid()}\n")
  handle.flush()
  _HELD[workdir] = handle
  return workdir


def acquire_existing(workdir: str) -> None:
  """Takes the lock of a work directory that already exists, before a run loads its data:
  a second process on it is refused at once, not after minutes of loading. A new
  directory is created and locked by `prepare`, after the run's inputs were checked, so
  bad input leaves nothing behind."""
  if os.path.isdir(workdir):
    acquire(workdir)


def release(workdir: str) -> None:
  handle = _HELD.pop(os.path.abspath(workdir), None)
  if handle is not None:
    handle.close()


@contextlib.contextmanager
def held(workdir: str):
  """Releases, on exit, the lock of `workdir` if it was acquired inside the block (by
  `prepare`): a run holds its directory from its first write to its end."""
  workdir = os.path.abspath(workdir)
  already = workdir in _HELD
  try:
    yield
  finally:
    if not already:
      release(workdir)


def holding(fn):
  """Decorates a run function `fn(config, workdir, ...)`: the work directory's lock, taken
  by `prepare` inside it, is released when it returns or raises."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    workdir = kwargs["workdir"] if "workdir" in kwargs else args[1]
    with held(workdir):
      return fn(*args, **kwargs)

  return wrapper


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename (never half-written).

  The file gets the mode a plain `open` would give (0666 less the umask), not the
  temporary file's private 0600.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fchmod(f.fileno(), _umask_mode())
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_directory(directory)


def fsync_directory(directory: str) -> None:
  """Makes the directory's entries (a rename, new files) durable; a no-op where the
  filesystem cannot sync a directory."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def fsync_files(paths) -> None:
  """Flushes files written by another library to the disk (that TensorFlow's checkpoint
  writer does not sync them is a reviewer's reading, not measured here)."""
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


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
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_directory(directory)


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
  commit = source_commit()
  if commit:
    env["mixnas_tf_commit"] = commit
  return env


def source_commit() -> str | None:
  """The git commit of the package's source ("+dirty" with uncommitted changes to tracked
  files), or None outside a git checkout (an installed wheel)."""
  source = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args):
    return subprocess.run(["git", "-C", source, *args], capture_output=True, text=True,
                          timeout=10, check=True).stdout.strip()
  try:
    git("ls-files", "--error-unmatch", "mixnas_tf/__init__.py")  # This package's own checkout.
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "mixnas_tf")
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "")


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
    defaults: the value of every flag that reproduces an older version's behaviour, usually
      its default: a flag that an older version did not have (absent from a saved
      flags.json) matches when the run uses that value.

  Returns:
    True when the directory holds an earlier run of the same flags (resume).
  """
  path = os.path.join(workdir, "flags.json")
  flags = json.loads(json.dumps(flags, default=_jsonable))
  acquire(workdir)
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
    _record_sitting(workdir, {k: flags[k] for k in sorted(ignore) if k in flags})
    return True
  for name, obj in (extra or {}).items():
    atomic_write_json(os.path.join(workdir, name), obj)
  atomic_write_json(os.path.join(workdir, "environment.json"), environment())
  atomic_write_json(path, flags)
  return False


SITTINGS = "sittings.json"


def _record_sitting(workdir: str, resumable: dict[str, Any]) -> None:
  """Appends this start on an existing run (a resume, or a reopening of a finished one) to
  WORKDIR/sittings.json: when, the values of the flags that may change on resume
  (flags.json keeps the first sitting's) and the versions and devices it runs with
  (environment.json keeps the first sitting's). An unreadable log is set aside."""
  path = os.path.join(workdir, SITTINGS)
  sittings, problem = [], None
  if os.path.exists(path):
    try:
      sittings = read_json(path)
    except (OSError, ValueError) as e:
      problem = f"unreadable ({e})"
    else:
      problem = None if isinstance(sittings, list) else "not a list"
    if problem:
      # A log must not stop a resume: keep the bad file aside and start a new one.
      os.replace(path, path + ".bad")
      print(f"warning: {path} was {problem}; kept as {SITTINGS}.bad", file=sys.stderr)
      sittings = []
  sittings.append({"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "flags": resumable, "environment": environment()})
  atomic_write_json(path, sittings)


def check_dataset(workdir: str, name: str, dataset: str, fingerprint: str | None,
                  resumed: bool) -> None:
  """A resumed run must read the image folder it started with: `fingerprint` against the
  `dataset_fingerprint` recorded in WORKDIR/`name` (errors.UsageError when it changed)."""
  path = os.path.join(workdir, name)
  if not resumed or fingerprint is None or not os.path.exists(path):
    return
  recorded = read_json(path).get("dataset_fingerprint")
  if recorded is not None and recorded != fingerprint:
    raise errors.UsageError(
        f"{dataset} changed since the run in {workdir} started ({recorded}, now "
        f"{fingerprint}); restore the folder or use a new --workdir")

