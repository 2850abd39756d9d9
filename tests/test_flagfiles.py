"""Every flagfile under experiments/ names real flags, and its settings validate."""

import dataclasses
import pathlib

import pytest

from mixnas_tf import errors
from mixnas_tf import spaces
from mixnas_tf import workdir as workdir_lib
from mixnas_tf.methods import search
from mixnas_tf.methods import standalone

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
SEARCH_FILES = sorted(p.name for p in EXPERIMENTS.glob("*.flags")
                      if not p.name.startswith("retrain_"))
RETRAIN_FILES = sorted(p.name for p in EXPERIMENTS.glob("retrain_*.flags"))


def _read(name: str, config_cls) -> object:
  """The flagfile's settings as `config_cls` (its fields, typed like their defaults)."""
  defaults = dataclasses.asdict(config_cls())
  values = {}
  for line in (EXPERIMENTS / name).read_text().splitlines():
    if not line.strip() or line.startswith("#"):
      continue
    key, _, text = line.lstrip("-").partition("=")
    assert key in defaults, f"{name}: --{key} is not a flag of {config_cls.__name__}"
    default = defaults[key]
    if isinstance(default, bool):
      value = text.lower() in ("true", "1")
    elif isinstance(default, tuple):
      value = tuple(float(v) for v in text.split(","))
    elif isinstance(default, (int, float)) and not isinstance(default, bool):
      value = type(default)(text)
    else:
      value = text
    values[key] = value
  return config_cls(**values)


@pytest.mark.parametrize("name", SEARCH_FILES)
def test_search_flagfiles_validate(name):
  cfg = _read(name, search.SearchConfig)
  space, configs = search.validate(cfg)
  assert len(configs) >= 2 and space.name == cfg.space


@pytest.mark.parametrize("name", RETRAIN_FILES)
def test_retrain_flagfiles_validate(name):
  cfg = _read(name, standalone.StandaloneConfig)
  default = ",".join(map(str, spaces.get_space(cfg.space).default))
  space, config = standalone.validate(dataclasses.replace(cfg, config=default))
  assert config.space is space and config.id == default


def test_the_paper_flagfiles_are_there():
  assert {"cifar10_resnet20_m4.flags", "cifar10_resnet18_m4.flags", "cifar100_resnet50_m4.flags",
          "food101_resnet50_m8.flags"} <= set(SEARCH_FILES)
  food = _read("food101_resnet50_m8.flags", search.SearchConfig)
  assert (food.space, food.image_size, food.num_models, food.max_temperature,
          food.final_eval) == ("resnet50", 224, 8, 300.0, "top:50,random:50")


def test_a_flag_added_later_matches_its_default(tmp_path):
  """A work directory of an older version (without a newer flag) resumes when the run
  keeps the new flag's default, and is refused otherwise."""
  workdir = str(tmp_path)
  workdir_lib.prepare(workdir, {"a": 1})
  assert workdir_lib.prepare(workdir, {"a": 1, "b": 2}, defaults={"a": 1, "b": 2})
  with pytest.raises(errors.UsageError, match=r"--b=2 \(now 3\)"):
    workdir_lib.prepare(workdir, {"a": 1, "b": 3}, defaults={"a": 1, "b": 2})


def test_the_paper_flagfiles_keep_the_papers_schedule_and_estimator():
  """The paper's searches have no warm-up and rank by the assigned set, whatever our defaults."""
  for name in ("cifar10_resnet20_m4.flags", "cifar10_resnet18_m4.flags",
               "cifar100_resnet50_m4.flags", "food101_resnet50_m8.flags"):
    cfg = _read(name, search.SearchConfig)
    assert (cfg.warmup_epochs, cfg.estimate) == (0, "assigned"), name
  # The ResNet20 search gives each of its 4 SuperNets the 100 epochs (the paper timed it at
  # ~4x SPOS); the logged Food101 run's 600 epochs already are 8 x 75, the run's whole budget.
  r20 = _read("cifar10_resnet20_m4.flags", search.SearchConfig)
  assert (r20.budget, r20.epochs, r20.run_epochs()) == ("per_set", 100, 400)
  food = _read("food101_resnet50_m8.flags", search.SearchConfig)
  assert (food.budget, food.run_epochs()) == ("total", 600)
  # The CPU example's committed results were measured without warm-up; it keeps them valid.
  assert _read("cifar10_folder_cpu.flags", search.SearchConfig).warmup_epochs == 0


def test_a_search_of_a_version_before_the_warm_up_flag_resumes_only_without_warm_up(tmp_path):
  old = dataclasses.asdict(search.SearchConfig())
  del old["warmup_epochs"]  # flags.json of a version without the flag: it had no warm-up.
  workdir_lib.prepare(str(tmp_path), old)
  resumed = dataclasses.replace(search.SearchConfig(), warmup_epochs=0)
  assert workdir_lib.prepare(str(tmp_path), dataclasses.asdict(resumed),
                             defaults=search.resume_defaults())
  with pytest.raises(errors.UsageError, match=r"--warmup_epochs=0 \(now 1\)"):
    workdir_lib.prepare(str(tmp_path), dataclasses.asdict(search.SearchConfig()),
                        defaults=search.resume_defaults())
