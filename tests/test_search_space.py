"""Tests for mixnas_tf.search_space: enumeration, notations, parsing, MACs."""

import csv
import json
from pathlib import Path

import pytest

from mixnas_tf import errors
from mixnas_tf import search_space as ss

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
  return ss.get_space("resnet20")


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
    ss.SearchSpace(name="bad", widths=(16, 16, 32), candidates=(0, 1),
                   num_downsamples=1, block="basic", default=(1, 2))
  with pytest.raises(ValueError, match="block"):
    ss.SearchSpace(name="bad", widths=(16, 16, 32), candidates=(1, 2),
                   num_downsamples=1, block="bottleneck", default=(1, 2))


def test_unknown_space_lists_known_names():
  with pytest.raises(errors.UsageError, match="resnet20") as info:
    ss.get_space("resnet1000")
  assert "resnet1000" in str(info.value)


@pytest.mark.parametrize("number,stages,code", KNOWN_ROWS)
def test_known_rows(space, number, stages, code):
  config = ss.from_index(space, number)
  assert ss.to_stages(space, config) == stages
  assert ss.to_code_string(config) == code
  assert ss.to_index(space, ss.from_stages(space, stages)) == number


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
    assert ss.to_stages(space, config) == (int(row["block1"]),
                                           int(row["block2"]),
                                           int(row["block3"]))
    assert ss.to_code_string(config) == row["code"]


def test_order_is_combinations_and_lexicographic_by_stages(space):
  stages = [ss.to_stages(space, c) for c in space.configs]
  assert stages == sorted(stages)
  positions = [ss.downsample_layers(c) for c in space.configs]
  assert positions[:3] == [(1, 2), (1, 3), (1, 4)]
  assert positions[-1] == (8, 9)


def test_round_trips_all_configs(space):
  for number in range(1, 37):
    config = ss.from_index(space, number)
    stages = ss.to_stages(space, config)
    code = ss.to_code_string(config)
    assert ss.to_index(space, config) == number
    assert ss.from_stages(space, stages) == config
    assert ss.parse_config(space, code) == config
    assert ss.parse_config(space, ss.format_stages(stages)) == config
    assert ss.parse_config(space, ",".join(map(str, stages))) == config
    assert ss.parse_config(space, str(number)) == config


@pytest.mark.parametrize("text", [
    "[4,3,3]", "4,3,3", " [ 4, 3, 3 ] ", "24", "0,0,0,0,1,0,0,1,0,0",
    "[0,0,0,0,1,0,0,1,0,0]"
])
def test_parse_accepts_each_notation(space, text):
  assert ss.parse_config(space, text) == (0, 0, 0, 0, 1, 0, 0, 1, 0, 0)


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
    ss.parse_config(space, text)
  message = str(info.value)
  assert "\n" not in message
  assert repr(text) in message  # The received value is quoted.
  assert fragment in message


def test_parse_configs(space):
  configs = ss.parse_configs(space, "4,3,3;5,3,2;24;[5,3,2]; 1 ")
  assert [ss.to_index(space, c) for c in configs] == [24, 29, 1]
  assert ss.parse_configs(space, "all") == space.configs
  assert ss.parse_configs(space, "ALL") == space.configs
  assert ss.parse_configs(space, "") == space.configs
  assert ss.parse_configs(space, "24;") == (ss.from_index(space, 24),)


def test_parse_configs_rejects(space):
  with pytest.raises(errors.UsageError, match="holds no configuration") as info:
    ss.parse_configs(space, ";;")
  assert "\n" not in str(info.value)
  with pytest.raises(errors.UsageError, match=r"'\[4,3,4\]'") as info:
    ss.parse_configs(space, "24;[4,3,4];1")
  assert "\n" not in str(info.value)


def test_conversions_reject_non_configs(space):
  with pytest.raises(ValueError, match="out of range"):
    ss.from_index(space, 37)
  with pytest.raises(ValueError, match="sum to 9"):
    ss.from_stages(space, (3, 3, 3))
  with pytest.raises(ValueError, match="has 9 digits"):
    ss.to_index(space, (0,) * 9)


def test_downsample_layers_and_divisors(space):
  config = ss.from_stages(space, (4, 3, 3))
  assert ss.downsample_layers(config) == (4, 7)
  assert ss.resolution_divisors(space, config) == (1, 1, 1, 1, 2, 2, 2, 4, 4, 4)
  assert ss.resolution_divisors(space, ss.from_index(space, 36)) == (
      1, 1, 1, 1, 1, 1, 1, 1, 2, 4)


def test_format_stages():
  assert ss.format_stages((4, 3, 3)) == "[4,3,3]"
  assert ss.to_code_string((0, 1)) == "0,1"


# Maxpool MACs per 32x32 image, 10 classes. By hand for [4,3,3]:
#   stem   32*32*3*16*9                                   =    442,368
#   b1-3   3 * 32*32*9*(16*16 + 16*16)                    = 14,155,776
#   b4     16*16*(9*(16*32 + 32*32) + 16*32)  (pooled)    =  3,670,016
#   b5-6   2 * 16*16*9*(32*32 + 32*32)                    =  9,437,184
#   b7     8*8*(9*(32*64 + 64*64) + 32*64)    (pooled)    =  3,670,016
#   b8-9   2 * 8*8*9*(64*64 + 64*64)                      =  9,437,184
#   dense  64*10                                          =        640
#   total                                                 = 40,813,184
# (An independent Keras build of the same network, counting conv and dense
# kernels times output positions, gives the same numbers for all 36.)
MAXPOOL_MACS = {
    (4, 3, 3): 40_813_184,
    (1, 1, 8): 18_596_480,
    (8, 1, 1): 149_340_800,
}
MAXPOOL_MACS_SUM = 1_764_973_056  # Over all 36 configurations.


@pytest.mark.parametrize("stages,expected", sorted(MAXPOOL_MACS.items()))
def test_macs_maxpool(space, stages, expected):
  config = ss.from_stages(space, stages)
  assert ss.macs(space, config, 32, "maxpool") == expected
  # Pooling is not counted, so average pooling costs the same.
  assert ss.macs(space, config, 32, "avgpool") == expected


def test_macs_maxpool_range_and_mean(space):
  all_macs = [ss.macs(space, c, 32, "maxpool") for c in space.configs]
  assert sum(all_macs) == MAXPOOL_MACS_SUM
  assert min(all_macs) == MAXPOOL_MACS[(1, 1, 8)]
  assert max(all_macs) == MAXPOOL_MACS[(8, 1, 1)]
  # The paper's figures: default 40.8 M, range 18.6..149.3 M, mean 49.0 M.
  assert round(MAXPOOL_MACS[(4, 3, 3)] / 1e6, 1) == 40.8
  assert round(MAXPOOL_MACS_SUM / 36 / 1e6, 1) == 49.0


def test_macs_conv(space):
  # [4,3,3] with stride-2 convs: a stride-2 3x3 conv has the same outputs
  # as a stride-1 conv on the pooled input, and blocks 4 and 7 already had a
  # 1x1 shortcut (16->32, 32->64), which now has stride 2 and still runs at
  # the output resolution: 16*16*16*32 = 131,072 and 8*8*32*64 = 131,072,
  # as with max-pooling. So the count equals the maxpool one, 40,813,184.
  assert ss.macs(space, ss.from_stages(space, (4, 3, 3)), 32,
                 "conv") == 40_813_184
  # [1,1,8] downsamples at blocks 1 and 2 whose widths match (16->16), so
  # "conv" adds two stride-2 1x1 shortcuts: 16*16*16*16 + 8*8*16*16
  # = 65,536 + 16,384 = 81,920 over maxpool.
  assert ss.macs(space, ss.from_stages(space, (1, 1, 8)), 32,
                 "conv") == 18_596_480 + 81_920


def test_macs_other_arguments(space):
  config = ss.from_stages(space, (4, 3, 3))
  # 100 classes add 64*90 MACs to the dense layer; the stem grows with
  # in_channels (32*32*16*9 per channel).
  assert ss.macs(space, config, 32, "maxpool", num_classes=100) == (
      40_813_184 + 64 * 90)
  assert ss.macs(space, config, 32, "maxpool", in_channels=1) == (
      40_813_184 - 2 * 32 * 32 * 16 * 9)
  # Odd sides round up ('same' padding): 33 -> 17 -> 9, so the sum above
  # becomes 33*33*432 + 3*33*33*4608 + 17*17*14336 + 2*17*17*18432
  # + 9*9*57344 + 2*9*9*73728 + 640.
  assert ss.macs(space, config, 33, "maxpool") == 46_911_024
  with pytest.raises(ValueError, match="diffstride"):
    ss.macs(space, config, 32, "diffstride")


def test_describe_is_json(space):
  description = json.loads(json.dumps(ss.describe(space)))
  assert description["name"] == "resnet20"
  assert description["default"] == [4, 3, 3]
  assert len(description["configs"]) == 36
  assert description["configs"][23] == {
      "index": 24,
      "stages": [4, 3, 3],
      "code": "0,0,0,0,1,0,0,1,0,0",
  }
