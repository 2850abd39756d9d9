"""An independent oracle: the reference's ResNet20 balanced mixture, in PyTorch, on the CPU.

Written from ../shared/docs/ALGORITHM.md and the published behaviour of the reference code
(mehravehj/Balanced-Mixture-of-SuperNets, `resnet20/Balanced Mixture`), without any code of
mixnas_tf: M SuperNets as M separate `nn.Module`s, each with its own `torch.optim.SGD` and
`CosineAnnealingLR` stepped once per epoch; BatchNorm without affine parameters or running
statistics (batch statistics in training and evaluation); a 2x2 max-pool on the input of a
downsampling layer; PyTorch's default initialisation (the reference sets none). Per epoch the
score matrix W is balanced by iterative proportional fitting (threshold 1e-4 on
KL(marginal || uniform)); per step a configuration is drawn uniformly, a SuperNet from
p(m | c) = softmax(T W[c]) re-divided by the epoch's marginals, one SGD step is taken on it,
one validation batch is forwarded and W[c, m] <- 0.9 W[c, m] + 0.1 accuracy. At the end
every (configuration, SuperNet) pair is evaluated on the whole search-validation split.

Deliberate, documented differences from the reference script (none changes the method):
- `--epochs=E` runs E epochs (the reference runs E + 1 with a cosine over E + 1); the
  temperature rises linearly from 1 at the first epoch to T_max at the last, as there.
- The split comes from `export_split.py` (mixnas_tf's seeded split) so that the oracle and
  `python -m mixnas_tf.train` see the same images; augmentation (4-pixel zero-padded crop,
  horizontal flip) and normalisation are done here, on tensors.
- The final evaluation covers every validation image once, in one fixed shuffled order,
  the last batch completed with real images (masked), like mixnas_tf; the reference drops
  the last partial batch.
- `--init=he` replaces PyTorch's default initialisation of the convolutions by He-normal
  (fan-in), the Keras `he_normal` that mixnas_tf's convolutions use: a diagnostic switch.

Requires `torch` (not a dependency of mixnas_tf): e.g. `pip install torch
--index-url https://download.pytorch.org/whl/cpu` (measured here with 2.14.1).

Usage (from the repository root):
    python experiments/oracle/export_split.py --seed=0 --out=runs/oracle/split_seed0.npz
    python experiments/oracle/mixture_torch.py --split=runs/oracle/split_seed0.npz \
        --num_models=4 --epochs=20 --seed=0 --workdir=runs/oracle/k4_seed0

Writes WORKDIR/results.json (per configuration: index, stages, accuracy_per_model,
assigned model, estimated accuracy assigned / max; the score matrix, the assignment, the
per-epoch history) and WORKDIR/ranking.csv (`index,stages,estimated_accuracy` in percent,
readable by `python -m mixnas_tf.rank --estimate=WORKDIR/ranking.csv:estimated_accuracy`).
Resumes from WORKDIR/checkpoint.pt (written every epoch) when run again.
"""

import argparse
import csv
import itertools
import json
import math
import os
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

WIDTHS = (16, 16, 16, 16, 32, 32, 32, 64, 64, 64)  # Layer 0 (stem) .. 9.


def all_configs():
  """The 36 configurations in the reference's order: 0/1 tuples of length 10."""
  configs = []
  for positions in itertools.combinations(range(1, 10), 2):
    configs.append(tuple(1 if i in positions else 0 for i in range(10)))
  return configs


def stages(config):
  """[a,b,c]: layers (stem included) at full, 1/2 and 1/4 resolution."""
  p1, p2 = [i for i, d in enumerate(config) if d]
  return (p1, p2 - p1, 10 - p2)


def parse_configs(text):
  configs = all_configs()
  if text == "all":
    return configs
  by_stages = {stages(c): c for c in configs}
  chosen = []
  for item in text.split(";"):
    key = tuple(int(v) for v in item.strip(" []").split(","))
    if key not in by_stages:
      raise SystemExit(f"error: {item!r} is not a configuration [a,b,c] of ResNet20")
    chosen.append(by_stages[key])
  return chosen


# --- The network (the reference's ResNet20 SuperNet) ------------------------------------

def _bn(channels):
  return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


class Block(nn.Module):
  """Basic residual block; 1x1 conv + BN on the shortcut when the widths differ."""

  def __init__(self, cin, cout):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    self.bn1 = _bn(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.bn2 = _bn(cout)
    self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _bn(cout))
                 if cin != cout else None)

  def forward(self, x):
    h = F.relu(self.bn1(self.conv1(x)))
    h = self.bn2(self.conv2(h))
    return F.relu(h + (x if self.proj is None else self.proj(x)))


class SuperNet(nn.Module):
  """ResNet20 whose layer i max-pools its input when config[i] == 1."""

  def __init__(self, num_classes=10, init="torch"):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, padding=1, bias=False),
                              _bn(WIDTHS[0]), nn.ReLU())
    self.blocks = nn.ModuleList(Block(WIDTHS[i - 1], WIDTHS[i]) for i in range(1, 10))
    self.fc = nn.Linear(WIDTHS[-1], num_classes)
    if init == "he":
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

  def forward(self, x, config):
    x = self.stem(x)
    for i, block in enumerate(self.blocks, start=1):
      if config[i]:
        x = F.max_pool2d(x, 2)
      x = block(x)
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- Balancing (ALGORITHM.md; the reference's train_valid / model_prob_calculator) -------

def balance_marginals(scores, temperature, threshold=1e-4):
  """The marginals the epoch divides by: [n, M] float64 (n may be 0)."""
  prob = torch.softmax(scores.double() * temperature, dim=1)
  m = prob.shape[1]
  marginals = []
  marginal = prob.mean(0)
  while abs(float((marginal * (marginal * m).log()).sum())) > threshold:
    marginals.append(marginal)
    prob = prob / marginal
    prob = prob / prob.sum(1, keepdim=True)
    marginal = prob.mean(0)
  return marginals


def conditional(scores, temperature, marginals):
  """p(m | c) [C, M] from the current scores with the epoch's divisions re-applied."""
  prob = torch.softmax(scores.double() * temperature, dim=1)
  for marginal in marginals:
    prob = prob / marginal
    prob = prob / prob.sum(1, keepdim=True)
  return prob


# --- Data --------------------------------------------------------------------------------

class Data:
  def __init__(self, path):
    arrays = np.load(path)
    self.train_x = torch.from_numpy(arrays["train_images"]).permute(0, 3, 1, 2).contiguous()
    self.train_y = torch.from_numpy(arrays["train_labels"])
    self.val_x = torch.from_numpy(arrays["val_images"]).permute(0, 3, 1, 2).contiguous()
    self.val_y = torch.from_numpy(arrays["val_labels"])
    self.mean = torch.tensor(arrays["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    self.std = torch.tensor(arrays["std"], dtype=torch.float32).view(1, 3, 1, 1)
    self.num_classes = int(max(self.train_y.max(), self.val_y.max())) + 1

  def normalise(self, x):
    return (x.float() / 255.0 - self.mean) / self.std

  def augment(self, x, gen):
    """Random crop of 32 from 4-pixel zero padding, and a horizontal flip, per image."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (b,), generator=gen)
    dx = torch.randint(0, 9, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None])  # [B, H]
    cols = dx[:, None] + torch.arange(w)[None]
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # [B, W]
    idx_b = torch.arange(b)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)

  def train_epoch(self, batch_size, gen):
    order = torch.randperm(len(self.train_y), generator=gen)
    for k in range(len(order) // batch_size):
      idx = order[k * batch_size:(k + 1) * batch_size]
      yield self.normalise(self.augment(self.train_x[idx], gen)), self.train_y[idx]

  def val_stream(self, batch_size, gen):
    while True:
      order = torch.randperm(len(self.val_y), generator=gen)
      for k in range(len(order) // batch_size):
        idx = order[k * batch_size:(k + 1) * batch_size]
        yield self.normalise(self.val_x[idx]), self.val_y[idx]

  def val_eval(self, batch_size, size=0):
    """Every validation image once (or the first `size` of the fixed order), in full
    batches, the last one completed with real images under mask 0."""
    order = torch.randperm(len(self.val_y), generator=torch.Generator().manual_seed(20230611))
    if size:
      order = order[:size]
    n = len(order)
    batches = math.ceil(n / batch_size)
    positions = torch.arange(batches * batch_size)
    idx, mask = order[positions % n], positions < n
    for k in range(batches):
      sl = slice(k * batch_size, (k + 1) * batch_size)
      yield self.normalise(self.val_x[idx[sl]]), self.val_y[idx[sl]], mask[sl]


# --- The search ---------------------------------------------------------------------------

def evaluate_all(nets, configs, data, batch_size, size=0):
  acc = np.zeros((len(configs), len(nets)))
  with torch.no_grad():
    for m, net in enumerate(nets):
      net.eval()
      for c, config in enumerate(configs):
        correct = count = 0
        for x, y, mask in data.val_eval(batch_size, size):
          pred = net(x, config).argmax(1)
          correct += int(((pred == y) & mask).sum())
          count += int(mask.sum())
        acc[c, m] = correct / count
  return acc


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--split", required=True, help=".npz from export_split.py")
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--configs", default="all", help='"all" or "4,3,3;5,3,2;..."')
  parser.add_argument("--num_models", type=int, default=4)
  parser.add_argument("--epochs", type=int, default=100)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--eval_batch_size", type=int, default=256)
  parser.add_argument("--eval_size", type=int, default=0,
                      help="final evaluation on the first N images of its fixed shuffled "
                           "order of the search-validation split (0: all of them)")
  parser.add_argument("--learning_rate", type=float, default=0.1)
  parser.add_argument("--min_learning_rate", type=float, default=0.001)
  parser.add_argument("--momentum", type=float, default=0.9)
  parser.add_argument("--weight_decay", type=float, default=0.0)
  parser.add_argument("--max_temperature", type=float, default=100.0)
  parser.add_argument("--ema_decay", type=float, default=0.9)
  parser.add_argument("--init", choices=("torch", "he"), default="torch")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "args.json"), "w") as f:
    json.dump(vars(args), f, indent=1)

  configs = parse_configs(args.configs)
  index = {c: i + 1 for i, c in enumerate(all_configs())}
  data = Data(args.split)
  if not 0 <= args.eval_size <= len(data.val_y):
    raise SystemExit(f"error: --eval_size must be in 0..{len(data.val_y)} (the "
                     f"search-validation images; 0: all). Received: {args.eval_size}")
  torch.manual_seed(args.seed)
  nets = [SuperNet(data.num_classes, args.init) for _ in range(args.num_models)]
  optims = [torch.optim.SGD(n.parameters(), lr=args.learning_rate, momentum=args.momentum,
                            weight_decay=args.weight_decay) for n in nets]
  scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, args.epochs,
                                                       eta_min=args.min_learning_rate)
            for o in optims]
  scores = torch.ones(len(configs), args.num_models, dtype=torch.float64)
  gen = torch.Generator().manual_seed(args.seed)
  val_gen = torch.Generator().manual_seed(args.seed + 1)
  history, start_epoch, elapsed = [], 0, 0.0
  ckpt_path = os.path.join(args.workdir, "checkpoint.pt")
  if os.path.exists(ckpt_path):
    ckpt = torch.load(ckpt_path, weights_only=False)
    for net, o, s, state in zip(nets, optims, scheds, ckpt["nets"]):
      net.load_state_dict(state["net"]); o.load_state_dict(state["optim"])
      s.load_state_dict(state["sched"])
    scores, history, start_epoch = ckpt["scores"], ckpt["history"], ckpt["epoch"]
    gen.set_state(ckpt["gen"]); val_gen.set_state(ckpt["val_gen"])
    elapsed = ckpt["elapsed"]
    print(f"resumed at epoch {start_epoch}", flush=True)
  val_iter = data.val_stream(args.batch_size, val_gen)
  t0 = time.time() - elapsed
  temps = [1.0 + (args.max_temperature - 1.0) * e / max(args.epochs - 1, 1)
           for e in range(args.epochs)]
  marginals = []
  for epoch in range(start_epoch, args.epochs):
    temperature = temps[epoch]
    marginals = balance_marginals(scores, temperature)
    counts = np.zeros(args.num_models, int)
    losses = np.zeros(args.num_models)
    for x, y in data.train_epoch(args.batch_size, gen):
      c = int(torch.randint(len(configs), (1,), generator=gen))
      p = conditional(scores, temperature, marginals)[c]
      m = int(torch.multinomial(p.float(), 1, generator=gen))
      net, opt = nets[m], optims[m]
      net.train()
      opt.zero_grad()
      loss = F.cross_entropy(net(x, configs[c]), y)
      loss.backward()
      opt.step()
      counts[m] += 1
      losses[m] += float(loss.detach())
      net.eval()
      vx, vy = next(val_iter)
      with torch.no_grad():
        acc = float((net(vx, configs[c]).argmax(1) == vy).float().mean())
      scores[c, m] = args.ema_decay * scores[c, m] + (1 - args.ema_decay) * acc
    for s in scheds:
      s.step()
    history.append({"epoch": epoch, "temperature": temperature,
                    "steps_per_model": counts.tolist(),
                    "train_loss_per_model": (losses / np.maximum(counts, 1)).tolist(),
                    "elapsed_s": time.time() - t0})
    done = epoch + 1
    eta = (time.time() - t0) / (done - start_epoch + 1e-9) * (args.epochs - done) \
        if done > start_epoch else 0
    print(f"epoch {done}/{args.epochs} T={temperature:.1f} steps/model={counts.tolist()} "
          f"loss/model={np.round(losses / np.maximum(counts, 1), 3).tolist()} "
          f"elapsed {time.time() - t0:.0f}s eta {eta:.0f}s", flush=True)
    tmp = ckpt_path + ".tmp"
    torch.save({"nets": [{"net": n.state_dict(), "optim": o.state_dict(),
                          "sched": s.state_dict()} for n, o, s in zip(nets, optims, scheds)],
                "scores": scores, "history": history, "epoch": done,
                "gen": gen.get_state(), "val_gen": val_gen.get_state(),
                "elapsed": time.time() - t0}, tmp)
    os.replace(tmp, ckpt_path)

  final_t = temps[-1]
  marginals = balance_marginals(scores, final_t) if start_epoch >= args.epochs else marginals
  assignment = conditional(scores, final_t, marginals).numpy()
  t_eval = time.time()
  acc = evaluate_all(nets, configs, data, args.eval_batch_size, args.eval_size)
  records = []
  for c, config in enumerate(configs):
    m = int(np.argmax(assignment[c]))
    records.append({"index": index[config], "stages": list(stages(config)),
                    "accuracy_per_model": acc[c].tolist(), "model": m,
                    "estimated_accuracy": float(acc[c, m]),
                    "estimated_accuracy_max": float(acc[c].max())})
  results = {"oracle": "mixture_torch", "args": vars(args), "configs": records,
             "scores": scores.tolist(), "assignment": assignment.tolist(),
             "history": history, "train_seconds": history[-1]["elapsed_s"] if history else 0,
             "eval_seconds": time.time() - t_eval,
             "eval_images": args.eval_size or len(data.val_y)}
  tmp = os.path.join(args.workdir, "results.json.tmp")
  with open(tmp, "w") as f:
    json.dump(results, f, indent=1)
  os.replace(tmp, os.path.join(args.workdir, "results.json"))
  with open(os.path.join(args.workdir, "ranking.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["index", "stages", "estimated_accuracy", "estimated_accuracy_max"])
    for r in sorted(records, key=lambda r: -r["estimated_accuracy"]):
      w.writerow([r["index"], "[{},{},{}]".format(*r["stages"]),
                  f"{100 * r['estimated_accuracy']:.2f}",
                  f"{100 * r['estimated_accuracy_max']:.2f}"])
  means = acc.mean(0)
  print("mean accuracy per SuperNet over configurations:", np.round(means, 4).tolist())
  print(f"wrote {args.workdir}/results.json", flush=True)


if __name__ == "__main__":
  main()
