"""The downsampling ops: how a block halves the resolution. One registry for every command.

Each op is plain data that a block's forward pass reads (blocks.py), so every op works in
every block type and every space:
  - "maxpool" / "avgpool" (`kind="pool"`): a 2x2 stride-2 pool of the block's input, so
    both branches see the pooled tensor (the reference ResNet20);
  - "conv" (`kind="stride"`): the block's strided conv (a basic block's first 3x3, a
    bottleneck's 3x3: v1.5) has stride 2; the shortcut is the block's projection at
    stride 2 where it has one, else the parameter-free strided identity x[:, ::2, ::2]
    (the reference ResNet18/50);
  - "diffstride" (`kind="learned"`): the strided conv runs at stride 1 and a learnable-
    stride DiffStride layer resizes its output and the shortcut (google-research's
    diffstride; see nn/diffstride.py).
"""

import dataclasses

from mixnas_tf import errors


@dataclasses.dataclass(frozen=True)
class DownsampleOp:
  """A downsampling op.

  Attributes:
    name: registry name (the --downsample value).
    kind: "pool", "stride" or "learned" (see the module docstring).
    pool: "max" or "avg" for kind "pool".
    fixed: halves by exactly 2 (and so has standard Keras layers for export).
    help: one line for flags and errors.
  """
  name: str
  kind: str
  pool: str | None
  fixed: bool
  help: str


OPS: dict[str, DownsampleOp] = {op.name: op for op in (
    DownsampleOp("maxpool", "pool", "max", True,
                 "2x2 max-pool of the block input (reference ResNet20)"),
    DownsampleOp("conv", "stride", None, True,
                 "stride-2 conv; projection at stride 2 or strided-identity shortcut "
                 "(reference ResNet18/50)"),
    DownsampleOp("avgpool", "pool", "avg", True, "2x2 average pool of the block input"),
    DownsampleOp("diffstride", "learned", None, False,
                 "learnable strides (DiffStride, stand-alone training only)"),
)}
FIXED = tuple(name for name, op in OPS.items() if op.fixed)
ALL = tuple(OPS)


def get(name: str) -> DownsampleOp:
  """The op called `name`; ValueError naming the accepted ones otherwise."""
  try:
    return OPS[name]
  except KeyError:
    raise ValueError(f"downsample must be one of {', '.join(ALL)}. "
                     f"Received: downsample={name!r}") from None


def check_fixed(name: str, flag: str = "--downsample") -> None:
  """errors.UsageError unless `name` is a fixed op (what a search or an export needs)."""
  if name not in FIXED:
    raise errors.UsageError(f"{flag} must be one of {', '.join(FIXED)} (received {name})")
