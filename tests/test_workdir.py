"""Work directories: one process each, files that follow the umask, one-line refusals."""

import errno
import json
import os
import stat
import subprocess
import sys

import pytest

from mixnas_tf import cli
from mixnas_tf import errors
from mixnas_tf import workdir as workdir_lib


def _run(args, cwd=None):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        timeout=300, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_a_second_process_is_refused_in_one_line(tiny_folder, tmp_path):
  workdir = str(tmp_path / "run")
  with workdir_lib.held(workdir):
    workdir_lib.acquire(workdir)
    out = _run(["mixnas_tf.train", f"--workdir={workdir}", f"--dataset=folder:{tiny_folder}",
                "--configs=4,3,3;1,1,8", "--num_models=1", "--epochs=1", "--batch_size=8",
                "--nojit_compile", "--noprogress"])
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: work directory") and f"process {os.getpid()}" in last
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(workdir, "flags.json"))
  # Released: this process can take it again, and so could another.
  assert workdir_lib.acquire(workdir) == workdir
  workdir_lib.release(workdir)


def test_a_second_process_is_refused_before_it_loads_any_data(tmp_path):
  # The folder does not exist: a process that loaded data first would say so instead.
  workdir = str(tmp_path / "run")
  for args in (["mixnas_tf.train", "--configs=4,3,3;1,1,8", "--num_models=1"],
               ["mixnas_tf.retrain", "--config=4,3,3"]):
    with workdir_lib.held(workdir):
      workdir_lib.acquire(workdir)
      out = _run([*args, f"--workdir={workdir}", "--dataset=folder:/nonexistent/data",
                  "--epochs=1", "--nojit_compile", "--noprogress"])
      assert out.returncode == 2, out.stderr[-2000:]
      assert "is in use by process" in out.stderr.strip().splitlines()[-1], out.stderr[-2000:]


def test_the_lock_is_reentrant_and_released(tmp_path):
  workdir = str(tmp_path / "w")
  with workdir_lib.held(workdir):
    workdir_lib.prepare(workdir, {"a": 1})
    assert workdir_lib.prepare(workdir, {"a": 1})  # Same process: resumes.
    assert workdir in workdir_lib._HELD  # pylint: disable=protected-access
  assert workdir not in workdir_lib._HELD  # pylint: disable=protected-access


def test_each_start_on_a_run_records_its_resumable_flags_and_environment(tmp_path):
  workdir = str(tmp_path / "w")
  ignore = frozenset({"log_every", "progress"})
  with workdir_lib.held(workdir):
    assert not workdir_lib.prepare(workdir, {"a": 1, "log_every": 10}, ignore=ignore)
    assert not os.path.exists(os.path.join(workdir, workdir_lib.SITTINGS))
    assert workdir_lib.prepare(workdir, {"a": 1, "log_every": 50}, ignore=ignore)
    assert workdir_lib.prepare(workdir, {"a": 1, "log_every": 7, "progress": False},
                               ignore=ignore)
  sittings = workdir_lib.read_json(os.path.join(workdir, workdir_lib.SITTINGS))
  assert [s["flags"] for s in sittings] == [{"log_every": 50},
                                            {"log_every": 7, "progress": False}]
  assert all(s["environment"]["tensorflow"] and s["started_utc"].endswith("Z")
             for s in sittings)
  # flags.json keeps the first sitting's values.
  assert workdir_lib.read_json(os.path.join(workdir, "flags.json"))["log_every"] == 10
  # A damaged log is set aside, not a reason to refuse the resume.
  path = os.path.join(workdir, workdir_lib.SITTINGS)
  with open(path, "w") as f:
    f.write('[{"started_utc": ')
  with workdir_lib.held(workdir):
    assert workdir_lib.prepare(workdir, {"a": 1, "log_every": 3}, ignore=ignore)
  assert [s["flags"] for s in workdir_lib.read_json(path)] == [{"log_every": 3}]
  with open(path + ".bad") as f:
    assert f.read() == '[{"started_utc": '
  # A refused start (other flags) leaves the log as it was.
  with pytest.raises(errors.UsageError, match="different flags"):
    workdir_lib.prepare(workdir, {"a": 2, "log_every": 3}, ignore=ignore)
  assert len(workdir_lib.read_json(path)) == 1


def test_a_filesystem_without_locks_is_named_as_such(tmp_path, monkeypatch):
  def no_locks(handle, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(workdir_lib.fcntl, "flock", no_locks)
  with pytest.raises(errors.UsageError, match="does not support file locks") as info:
    workdir_lib.acquire(str(tmp_path / "w"))
  assert "in use" not in str(info.value)
  assert str(tmp_path / "w") not in workdir_lib._HELD  # pylint: disable=protected-access


def test_written_files_follow_the_umask(tmp_path):
  previous = os.umask(0o022)
  try:
    workdir_lib.atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    os.umask(0o077)
    workdir_lib.atomic_write_text(str(tmp_path / "b.txt"), "x")
    assert stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o600
  finally:
    os.umask(previous)
  assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


def test_a_work_directory_that_is_a_file_is_one_line_and_creates_nothing(tiny_folder,
                                                                          tmp_path):
  target = tmp_path / "file"
  target.write_text("not a directory")
  before = sorted(os.listdir(tmp_path))
  out = _run(["mixnas_tf.train", f"--workdir={target}", f"--dataset=folder:{tiny_folder}",
              "--configs=4,3,3;1,1,8", "--num_models=2", "--epochs=1", "--batch_size=8"])
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      f"error: work directory {target} exists and is not a directory; choose another "
      "--workdir")
  assert sorted(os.listdir(tmp_path)) == before and target.read_text() == "not a directory"
  with pytest.raises(errors.UsageError, match="not a directory"):
    workdir_lib.ensure_dir(str(target))


def test_interrupts_outside_the_loop_are_one_line_and_exit_130(capsys):
  def main(argv):
    del argv
    raise KeyboardInterrupt  # E.g. Ctrl-C while the data loads.

  with pytest.raises(SystemExit) as info:
    cli.guarded(main)(["prog"])
  assert info.value.code == 130
  assert capsys.readouterr().err.startswith("interrupted: ")


def test_help_lists_the_shared_flags_and_exits_0():
  out = _run(["mixnas_tf.train", "--help"])
  assert out.returncode == 0
  for flag in ("--dataset", "--batch_size", "--learning_rate", "--seed", "--space",
               "--workdir", "--num_models"):
    assert f"  {flag}:" in out.stdout, flag


def test_a_resumed_run_refuses_a_changed_folder_and_records_absolute_paths(tmp_path,
                                                                          monkeypatch):
  from conftest import make_image_folder  # pylint: disable=g-import-not-at-top

  from mixnas_tf.methods import search  # pylint: disable=g-import-not-at-top
  folder = make_image_folder(tmp_path / "data", per_class=12, size=16)
  monkeypatch.chdir(tmp_path)
  cfg = search.SearchConfig(dataset="folder:data", configs="4,3,3;1,1,8", num_models=1,
                            epochs=1, batch_size=8, eval_batch_size=8, jit_compile=False,
                            progress=False)
  workdir = str(tmp_path / "run")
  search.run_search(cfg, workdir)
  flags_json = json.loads((tmp_path / "run" / "flags.json").read_text())
  assert flags_json["dataset"] == f"folder:{folder.resolve()}"
  os.remove(os.path.join(workdir, "results.json"))  # As if it had stopped before the end.
  (folder / "train" / "a" / "0000.png").unlink()
  with pytest.raises(errors.UsageError, match="changed since the run .* started"):
    search.run_search(cfg, workdir)


def test_environment_records_the_source_commit(monkeypatch):
  root = os.path.dirname(os.path.dirname(os.path.abspath(workdir_lib.__file__)))
  head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                        text=True)
  if head.returncode != 0:
    pytest.skip("not a git checkout")
  commit = workdir_lib.environment()["mixnas_tf_commit"]
  assert commit.split("+")[0] == head.stdout.strip() and commit[len(head.stdout.strip()):] in (
      "", "+dirty")

  def no_git(*args, **kwargs):
    raise FileNotFoundError("git")
  monkeypatch.setattr(subprocess, "run", no_git)  # No git (or an installed wheel): left out.
  assert workdir_lib.source_commit() is None
  assert "mixnas_tf_commit" not in workdir_lib.environment()
