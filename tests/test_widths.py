"""Width search: units read off the forward pass, the threshold search, inheritance, and
the command end to end (resume, export)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mixnas_tf import spaces
from mixnas_tf.methods import standalone
from mixnas_tf.methods import width_search
from mixnas_tf.methods import widths
from mixnas_tf.nn import network

R20 = spaces.get_space("resnet20")
DEFAULT = spaces.from_stages(R20, (4, 3, 3))


def _widened(space, config, mult=2):
  wide, inner = width_search.widened(space, mult)
  wide_space = spaces.with_widths(space, wide, inner)
  return network.SwitchableResNet(space=wide_space, configs=[config], batchnorm="standard")


def _random_importances(struct, seed=0):
  rng = np.random.default_rng(seed)
  return {name: rng.random(u.channels) for name, u in struct.units.items()}


def test_units_of_resnet20_and_resnet50():
  struct = widths.structure(_widened(R20, DEFAULT))
  units = {n: (u.channels, u.prunable, len(u.bns), u.layers) for n, u in struct.units.items()}
  # Residual streams: the stem and blocks 1-3, blocks 4-6 (with block 4's projection),
  # blocks 7-9 (read by the classifier: kept whole); one inner unit per block.
  assert units["stream0"] == (32, True, 4, (0, 1, 2, 3))
  assert units["stream4"] == (64, True, 4, (4, 5, 6))
  assert units["stream7"] == (128, False, 4, (7, 8, 9))
  assert [units[f"inner{i}"][0] for i in range(1, 10)] == [32] * 3 + [64] * 3 + [128] * 3
  assert len(units) == 12 and struct.classifier_unit == "stream7"
  r50 = spaces.get_space("resnet50")
  struct = widths.structure(network.SwitchableResNet(
      space="resnet50", configs=[spaces.from_stages(r50, r50.default)]))
  streams = {n: u.layers for n, u in struct.units.items() if n.startswith("stream")}
  # Every block of ResNet50's first stage has a projection (64 -> 256 at block 1).
  assert streams == {"stream0": (0,), "stream1": (1, 2, 3), "stream4": (4, 5, 6, 7),
                     "stream8": tuple(range(8, 14)), "stream14": (14, 15, 16)}
  # A bottleneck's 1x1 and 3x3 outputs: two units, each with its own BatchNorm, tied to one
  # count (one inner width per block).
  assert struct.units["inner5"].bns == ("block5/bn1",)
  assert struct.units["inner5b"].bns == ("block5/bn2",)
  assert ("inner5", "inner5b") in struct.tied and len(struct.tied) == 16
  assert struct.layer_inner[5] == "inner5"


def test_tied_units_keep_one_count_each_its_own_channels():
  r50 = spaces.get_space("resnet50")
  config = spaces.from_stages(r50, r50.default)
  model = network.SwitchableResNet(space=r50, configs=[config])
  struct = widths.structure(model)
  imp = _random_importances(struct, 3)
  width = struct.units["inner5"].channels
  imp["inner5"] = np.linspace(1.0, 0.0, width)  # Channel 0 the most important ...
  imp["inner5b"] = np.linspace(0.0, 1.0, width)  # ... and here the least.
  masks = widths.keep_masks(struct, imp, 0.75, min_keep=0.1)
  # Both keep the channels whose rank-wise mean (here the same sorted values) reaches 0.75.
  count = int(np.sum(np.linspace(1.0, 0.0, width) >= 0.75))
  np.testing.assert_array_equal(np.flatnonzero(masks["inner5"]), np.arange(count))
  np.testing.assert_array_equal(np.flatnonzero(masks["inner5b"]),
                                np.arange(width - count, width))
  assert all(masks[a].sum() == masks[b].sum() for a, b in struct.tied)
  # The pruned network has that inner width, and inherits each unit's own channels: the
  # 3x3 reads the 1x1's kept channels and writes its own.
  pruned = network.SwitchableResNet(space=widths.pruned_space(r50, struct, masks),
                                    configs=[config])
  assert pruned.space.inner_widths[5] == count
  widths.inherit(pruned, model, struct, masks)
  np.testing.assert_array_equal(
      pruned.block5.conv2.kernel.numpy()[0],
      model.block5.conv2.kernel.numpy()[0][:, :, np.flatnonzero(masks["inner5"])][
          :, :, :, np.flatnonzero(masks["inner5b"])])


RATIOS = [0.2, 0.25, 0.3, 0.4, 0.5, 0.6]


def _shrink_resnet20(ratio):
  model = _widened(R20, DEFAULT)
  struct = widths.structure(model)
  imp = _random_importances(struct)
  full = widths.macs_of(model.space, DEFAULT, 32, "maxpool", 10)
  shrunk = widths.shrink(model.space, struct, imp, DEFAULT, target_macs=ratio * full,
                         image_size=32, downsample="maxpool", num_classes=10)
  return model, struct, imp, full, shrunk


@pytest.mark.parametrize("ratio", RATIOS)
def test_the_threshold_search_hits_the_target(ratio):
  model, struct, imp, full, shrunk = _shrink_resnet20(ratio)
  above, below = shrunk.bracket
  assert below < ratio * full <= above
  # Within 0.1 %, or else one channel costs more than that and the nearer side was taken.
  gap = (above - below) / (ratio * full)
  assert abs(shrunk.ratio - 1) <= max(1e-3, gap / 2), (shrunk.ratio, gap)
  assert shrunk.macs == widths.macs_of(shrunk.space, DEFAULT, 32, "maxpool", 10)
  # The kept counts are the space's widths, and every unit keeps >= 10 %.
  counts = {n: int(m.sum()) for n, m in shrunk.masks.items()}
  assert shrunk.space.widths[5] == counts["stream4"]
  assert shrunk.space.inner_widths[8] == counts["inner8"]
  assert all(c >= 0.1 * struct.units[n].channels for n, c in counts.items())
  assert counts["stream7"] == 128  # Not pruned.
  with pytest.raises(ValueError, match="outside what pruning can reach"):
    widths.shrink(model.space, struct, imp, DEFAULT, target_macs=2 * full, image_size=32,
                  downsample="maxpool", num_classes=10)


def test_most_targets_are_hit_within_a_tenth_of_a_percent():
  hits = [abs(_shrink_resnet20(r)[-1].ratio - 1) <= 1e-3 for r in RATIOS]
  assert sum(hits) >= 4, hits


@pytest.mark.parametrize("name,op", [("resnet20", "maxpool"), ("resnet18", "conv"),
                                     ("resnet50", "conv")])
def test_pruned_networks_run_and_their_macs_are_their_keras_layers(name, op):
  """Residual additions match after pruning (the network runs), and the pruned MACs
  equal a count over the exported model's own Keras layers."""
  space = spaces.get_space(name)
  config = spaces.from_stages(space, space.default)
  model = network.SwitchableResNet(space=space, configs=[config], downsample=op)
  struct = widths.structure(model)
  full = widths.macs_of(space, config, 32, op, 10)
  shrunk = widths.shrink(space, struct, _random_importances(struct, 1), config,
                         target_macs=0.5 * full, image_size=32, downsample=op,
                         num_classes=10, prune_last=True)
  pruned = network.SwitchableResNet(space=shrunk.space, configs=[config], downsample=op,
                                    num_classes=10)
  x = tf.zeros((2, 32, 32, 3), tf.uint8)
  assert pruned(x).shape == (2, 10)
  exported = pruned.to_functional(config, 0, image_size=32)
  total = 0
  for layer in exported.layers:
    if isinstance(layer, keras.layers.Conv2D):
      _, h, w, filters = layer.output.shape
      total += h * w * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1] \
          * filters
    elif isinstance(layer, keras.layers.Dense):
      total += layer.input.shape[-1] * layer.units
  assert total == shrunk.macs == pruned.costs(config)["macs"]
  assert pruned.get_config()["space"]["widths"] == list(shrunk.space.widths)


def test_inherited_weights_are_the_kept_channels():
  source = _widened(R20, DEFAULT)
  struct = widths.structure(source)
  imp = _random_importances(struct, 2)
  # Keeping everything reproduces the source network exactly.
  everything = widths.keep_masks(struct, imp, -np.inf, 0.1)
  same = network.SwitchableResNet(space=widths.pruned_space(source.space, struct, everything),
                                  configs=[DEFAULT])
  widths.inherit(same, source, struct, everything)
  x = tf.constant(np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)), tf.uint8)
  np.testing.assert_allclose(same(x).numpy(), source(x).numpy(), rtol=1e-5, atol=1e-5)
  # Pruned: every kernel is the kept rows and columns of the source's.
  masks = widths.keep_masks(struct, imp, 0.5, 0.1)
  pruned = network.SwitchableResNet(space=widths.pruned_space(source.space, struct, masks),
                                    configs=[DEFAULT])
  widths.inherit(pruned, source, struct, masks)
  kept_in, kept_out = np.flatnonzero(masks["inner5"]), np.flatnonzero(masks["stream4"])
  np.testing.assert_array_equal(
      pruned.block5.conv2.kernel.numpy()[0],
      source.block5.conv2.kernel.numpy()[0][:, :, kept_in][:, :, :, kept_out])
  np.testing.assert_array_equal(pruned.block4.proj_bn.gamma.numpy()[0],
                                source.block4.proj_bn.gamma.numpy()[0][kept_out])


def test_width_search_end_to_end_resumes_and_exports(tiny_folder, tmp_path):
  base = standalone.StandaloneConfig(
      dataset=f"folder:{tiny_folder}", config="4,3,3", epochs=3, batch_size=16,
      eval_batch_size=16, jit_compile=False, progress=False, holdout_fraction=0.25,
      gamma_l1=1e-4)  # What the command line's --gamma_l1 puts into base.
  wcfg = width_search.WidthConfig(base=base, width_mult=2, flops_ratio=0.3, search_epochs=1,
                                  inherit=True, gamma_l1=1e-4)
  workdir = str(tmp_path / "w")
  summary = width_search.run_widths(wcfg, workdir)
  info = json.loads(open(os.path.join(workdir, "widths.json")).read())
  # The l1 penalty shapes the search phase only; the pruned network trains without it.
  stage_flags = {stage: json.loads(open(os.path.join(workdir, stage, "flags.json")).read())
                 for stage in ("search", "final")}
  assert stage_flags["search"]["gamma_l1"] == 1e-4
  assert stage_flags["final"]["gamma_l1"] == 0.0
  assert abs(summary["macs_over_target"] - 1) <= 1e-3
  assert summary["widths"] == info["widths"]["pruned"]
  assert summary["search_epochs"] == 1 and summary["final_epochs"] == 2
  assert os.path.getsize(os.path.join(workdir, "widths.png")) > 1000
  # Resume after the final stage was lost: the search stage is read back, not retrained,
  # and gives the same widths.
  search_metrics = os.path.join(workdir, "search", "metrics.json")
  stamp = os.stat(search_metrics).st_mtime_ns
  os.remove(os.path.join(workdir, "summary.json"))
  os.remove(os.path.join(workdir, "widths.json"))
  again = width_search.run_widths(wcfg, workdir)
  assert os.stat(search_metrics).st_mtime_ns == stamp
  assert again["widths"] == summary["widths"]
  assert json.loads(open(os.path.join(workdir, "widths.json")).read())["keep"] == info["keep"]
  # The export loads without mixnas_tf.
  script = (f"import sys, keras\nm = keras.models.load_model("
            f"{os.path.join(summary['export'], 'model.keras')!r})\n"
            "assert 'mixnas_tf' not in sys.modules\nprint(m.output_shape)")
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert out.returncode == 0 and "(None, 3)" in out.stdout, out.stderr[-2000:]


def test_the_command_line_inherits_a_searchs_settings_unless_given(tmp_path):
  # retrain's rule (methods/retraining.resolve): the search's dataset is used unless the
  # command line names one. Both folders are missing, so the error says which was used.
  search = tmp_path / "search"
  search.mkdir()
  space = spaces.get_space("resnet20")
  (search / "results.json").write_text(json.dumps({
      "space": "resnet20", "dataset": "folder:/searched/x",
      "best": {"index": 27, "stages": list(spaces.to_stages(space, spaces.from_index(space, 27))),
               "estimated_accuracy": 0.5}, "ranking": [27, 24]}))
  (search / "flags.json").write_text(json.dumps({
      "dataset": "folder:/searched/x", "tfds_data_dir": None, "image_size": 0,
      "space": "resnet20", "downsample": "avgpool", "epochs": 100}))
  for extra, used in (([], "/searched/x"), (["--dataset=folder:/given/y"], "/given/y")):
    out = subprocess.run([sys.executable, "-m", "mixnas_tf.widths", f"--from_search={search}",
                          f"--workdir={tmp_path / used.replace('/', '_')}", "--epochs=2",
                          *extra],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset folder {used} does not exist"), out.stderr[-2000:]
