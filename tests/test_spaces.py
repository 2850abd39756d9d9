"""Search spaces: enumeration and numbering (pinned on the reference tables), notations,
parsing, the Config value."""

import csv
import json
from pathlib import Path
import pickle

import pytest

from mixnas_tf import errors
from mixnas_tf import spaces

# The shared folder sits beside the repository: /work/main -> /work/shared.
REFERENCE_DIR = (Path(__file__).resolve().parents[1].parent / "shared" /
                 "reference")

# (reference number, stages, code), copied from resnet20_search_space.csv so
# that the numbering is pinned even where the shared folder is absent.
KNOWN_ROWS = [
    (1, (1, 1, 8), "0,1,1,0,0,0,0,0,0,0"),
    (24, (4, 3, 3), "0,0,0,0,1,0,0,1,0,0"),
    (34, (7, 1, 2), "0,0,0,0,0,0,0,1,1,0"),
    (36, (8, 1, 1), "0,0,0,0,0,0,0,0,1,1"),
]


@pytest.fixture(name="space")
def fixture_space():
  return spaces.get_space("resnet20")


def test_resnet20_space(space):
  assert space.name == "resnet20"
  assert space.widths == (16, 16, 16, 16, 32, 32, 32, 64, 64, 64)
  assert space.candidates == tuple(range(1, 10))
  assert space.num_downsamples == 2
  assert space.block == "basic"
  assert space.default == (4, 3, 3)
  assert space.num_layers == 10
  assert space.num_configs == 36
  assert len(set(space.configs)) == 36


def test_space_is_immutable(space):
  with pytest.raises(AttributeError):
    space.name = "other"


def test_invalid_space_is_rejected():
  with pytest.raises(ValueError, match="candidates"):
    spaces.SearchSpace(name="bad", widths=(16, 16, 32), candidates=(0, 1),
                   num_downsamples=1, block="basic", default=(1, 2))
  with pytest.raises(ValueError, match="block"):
    spaces.SearchSpace(name="bad", widths=(16, 16, 32), candidates=(1, 2),
                       num_downsamples=1, block="resnext", default=(1, 2))
  with pytest.raises(ValueError, match="inner_widths"):
    spaces.SearchSpace(name="bad", widths=(16, 16, 32), candidates=(1, 2),
                       num_downsamples=1, block="bottleneck", default=(1, 2))


def test_unknown_space_lists_known_names():
  with pytest.raises(errors.UsageError, match="resnet20") as info:
    spaces.get_space("resnet1000")
  assert "resnet1000" in str(info.value)


@pytest.mark.parametrize("number,stages,code", KNOWN_ROWS)
def test_known_rows(space, number, stages, code):
  config = spaces.from_index(space, number)
  assert spaces.to_stages(space, config) == stages
  assert spaces.to_code_string(config) == code
  assert spaces.to_index(space, spaces.from_stages(space, stages)) == number


def test_matches_reference_csv(space):
  path = REFERENCE_DIR / "resnet20_search_space.csv"
  if not path.exists():
    pytest.skip(f"reference table {path} is absent (the shared folder is not "
                f"beside the repository); KNOWN_ROWS still pins 4 rows")
  with path.open(newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 36
  for i, row in enumerate(rows):
    config = space.configs[i]
    assert int(row["number"]) == i + 1
    assert spaces.to_stages(space, config) == (int(row["block1"]),
                                           int(row["block2"]),
                                           int(row["block3"]))
    assert spaces.to_code_string(config) == row["code"]


def test_order_is_combinations_and_lexicographic_by_stages(space):
  stages = [spaces.to_stages(space, c) for c in space.configs]
  assert stages == sorted(stages)
  positions = [spaces.downsample_layers(c) for c in space.configs]
  assert positions[:3] == [(1, 2), (1, 3), (1, 4)]
  assert positions[-1] == (8, 9)


def test_round_trips_all_configs(space):
  for number in range(1, 37):
    config = spaces.from_index(space, number)
    stages = spaces.to_stages(space, config)
    code = spaces.to_code_string(config)
    assert spaces.to_index(space, config) == number
    assert spaces.from_stages(space, stages) == config
    assert spaces.parse_config(space, code) == config
    assert spaces.parse_config(space, spaces.format_stages(stages)) == config
    assert spaces.parse_config(space, ",".join(map(str, stages))) == config
    assert spaces.parse_config(space, str(number)) == config


@pytest.mark.parametrize("text", [
    "[4,3,3]", "4,3,3", " [ 4, 3, 3 ] ", "24", "0,0,0,0,1,0,0,1,0,0",
    "[0,0,0,0,1,0,0,1,0,0]"
])
def test_parse_accepts_each_notation(space, text):
  assert spaces.parse_config(space, text) == (0, 0, 0, 0, 1, 0, 0, 1, 0, 0)


@pytest.mark.parametrize("text,fragment", [
    ("[4,3,4]", "sum to 11, expected 10"),
    ("0,0,0", "sum to 0"),
    ("40", "reference number 40 is out of range 1..36"),
    ("0", "reference number 0 is out of range 1..36"),
    ("a,b,c", "not a comma-separated list of integers"),
    ("[0,5,5]", "entry below 1"),
    ("1,0,0,0,1,0,0,0,0,0", "stem"),
    ("0,0,0,0,1,0,1,1,0,0", "has 3 ones, expected 2"),
    ("0,0,0,0,2,0,0,1,0,0", "digits other than 0 and 1"),
    ("4,3", "has 2 integers, expected 1, 3 or 10"),
    ("", "not a comma-separated list"),
])
def test_parse_rejects_with_one_line(space, text, fragment):
  with pytest.raises(errors.UsageError) as info:
    spaces.parse_config(space, text)
  message = str(info.value)
  assert "\n" not in message
  assert repr(text) in message  # The received value is quoted.
  assert fragment in message


def test_parse_configs(space):
  configs = spaces.parse_configs(space, "4,3,3;5,3,2;24;[5,3,2]; 1 ")
  assert [spaces.to_index(space, c) for c in configs] == [24, 29, 1]
  assert spaces.parse_configs(space, "all") == space.configs
  assert spaces.parse_configs(space, "ALL") == space.configs
  assert spaces.parse_configs(space, "24;") == (spaces.from_index(space, 24),)


def test_parse_configs_rejects(space):
  for text in (";;", "", "  "):  # An empty list is a mistake, not "all".
    with pytest.raises(errors.UsageError, match="holds no configuration") as info:
      spaces.parse_configs(space, text)
    assert "\n" not in str(info.value)
  with pytest.raises(errors.UsageError, match=r"'\[4,3,4\]'") as info:
    spaces.parse_configs(space, "24;[4,3,4];1")
  assert "\n" not in str(info.value)


def test_conversions_reject_non_configs(space):
  with pytest.raises(ValueError, match="out of range"):
    spaces.from_index(space, 37)
  with pytest.raises(ValueError, match="sum to 9"):
    spaces.from_stages(space, (3, 3, 3))
  with pytest.raises(ValueError, match="has 9 digits"):
    spaces.to_index(space, (0,) * 9)


def test_downsample_layers(space):
  assert spaces.downsample_layers(spaces.from_stages(space, (4, 3, 3))) == (4, 7)
  assert spaces.downsample_layers(spaces.from_index(space, 36)) == (8, 9)


def test_format_stages():
  assert spaces.format_stages((4, 3, 3)) == "[4,3,3]"
  assert spaces.to_code_string((0, 1)) == "0,1"


def test_describe_is_json(space):
  description = json.loads(json.dumps(spaces.describe(space)))
  assert description["name"] == "resnet20"
  assert description["default"] == [4, 3, 3]
  assert len(description["configs"]) == 36
  assert description["configs"][23] == {
      "index": 24,
      "stages": [4, 3, 3],
      "code": "0,0,0,0,1,0,0,1,0,0",
  }


def _reference_rows(name):
  path = REFERENCE_DIR / name
  if not path.exists():
    pytest.skip(f"reference table {path} is absent")
  with open(path, newline="") as f:
    return list(csv.reader(f))


def test_resnet20_matches_the_reference_table(space):
  rows = _reference_rows("resnet20_search_space.csv")[1:]
  assert len(rows) == 36
  for number, a, b, c, code in rows:
    config = spaces.from_index(space, int(number))
    assert config.stages == (int(a), int(b), int(c))
    assert spaces.to_code_string(config) == code


def test_resnet18_matches_the_reference_table():
  space = spaces.get_space("resnet18")
  rows = _reference_rows("resnet18_search_space.csv")  # No header: index, n1..n4.
  assert space.num_configs == len(rows) == 56
  for index, *stages in rows:
    config = spaces.from_index(space, int(index))
    assert config.stages == tuple(int(s) for s in stages)
    assert config.index == int(index)


def test_resnet50_is_the_reference_list_without_its_defect():
  """455 = compositions of the 16 blocks into 4 stages (the paper's number). The
  reference lookup CSV lists the 560 compositions of 17 (stem + 16 blocks) of the
  baseline trainer; those whose first stage holds more than the stem are the 455, in the
  same order, with the stem taken out of the first stage."""
  space = spaces.get_space("resnet50")
  rows = _reference_rows("resnet50_search_space.csv")[1:]
  assert len(rows) == 560
  stages = [tuple(int(v) for v in row[1:5]) for row in rows]
  supernet = [(s[0] - 1,) + s[1:] for s in stages if s[0] >= 2]
  assert [c.stages for c in space.configs] == supernet
  assert space.num_configs == 455


@pytest.mark.parametrize("name,stages,index,code", [
    ("resnet20", (4, 3, 3), 24, "0,0,0,0,1,0,0,1,0,0"),
    ("resnet18", (3, 2, 2, 2), 41, "0,0,0,1,0,1,0,1,0"),
    ("resnet18", (1, 1, 1, 6), 0, "0,1,1,1,0,0,0,0,0"),
    ("resnet50", (3, 4, 6, 3), 204, "0,0,0,0,1,0,0,0,1,0,0,0,0,0,1,0,0"),
    # The Food101 runs' picks (ALGORITHM.md): M=1 index 360, M=8 [9,4,2,1].
    ("resnet50", (6, 4, 5, 1), 360, "0,0,0,0,0,0,0,1,0,0,0,1,0,0,0,0,1"),
    ("resnet50", (9, 4, 2, 1), 433, "0,0,0,0,0,0,0,0,0,0,1,0,0,0,1,0,1"),
    # p3 = 1: the third downsampling is at the last block (the reference drops it).
    ("resnet50", (1, 1, 13, 1), 12, "0,0,1,1,0,0,0,0,0,0,0,0,0,0,0,0,1"),
])
def test_known_configurations_of_every_space(name, stages, index, code):
  space = spaces.get_space(name)
  for text in (",".join(map(str, stages)), str(index), code):
    config = spaces.parse_config(space, text)
    assert config.stages == stages and config.index == index
    assert spaces.to_code_string(config) == code
    assert config.id == ",".join(map(str, stages))
    assert config.label == spaces.format_stages(stages)
  assert code.split(",").count("1") == space.num_downsamples


def test_every_space_enumerates_distinct_valid_configurations():
  for space in spaces.SPACES.values():
    ids = [c.id for c in space.configs]
    assert len(set(ids)) == space.num_configs
    first = space.reference_base
    assert [c.index for c in space.configs] == list(range(first, first + space.num_configs))
    assert spaces.from_stages(space, space.default) in space.configs
    assert all(spaces.parse_config(space, c.id) == c for c in space.configs[:: 17])


def test_config_is_a_tuple_that_knows_its_space(space):
  config = spaces.parse_config(space, "4,3,3")
  assert config == (0, 0, 0, 0, 1, 0, 0, 1, 0, 0) and hash(config) == hash(tuple(config))
  assert {tuple(config): "found"}[config] == "found"
  assert config.space is space and config.record() == {
      "index": 24, "stages": [4, 3, 3], "code": "0,0,0,0,1,0,0,1,0,0"}
  assert json.loads(json.dumps(config)) == list(config)  # Serialises as its digits.
  assert pickle.loads(pickle.dumps(config)).label == "[4,3,3]"
  assert repr(config) == "Config(resnet20 [4,3,3])"


def test_resnet50_stages_count_blocks_only():
  space = spaces.get_space("resnet50")
  with pytest.raises(errors.UsageError, match=r"sum to 17, expected 16 .*\(blocks\)"):
    spaces.parse_config(space, "4,4,6,3")
  # The first block always runs at the stem's resolution.
  with pytest.raises(errors.UsageError, match="entry below 1"):
    spaces.parse_config(space, "0,4,6,6")
