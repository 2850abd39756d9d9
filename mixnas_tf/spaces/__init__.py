"""Search spaces: which layers of a network may halve the resolution, as plain data.

`get_space("resnet20" | "resnet18" | "resnet50")`; a `Config` is one choice of the
downsampling layers (a 0/1 tuple per layer that knows its space: `.id`, `.label`,
`.stages`, `.index`). See spec.py for the notations and library.py for the spaces.
"""

from mixnas_tf import errors
from mixnas_tf.spaces.library import SPACES
from mixnas_tf.spaces.spec import BLOCKS
from mixnas_tf.spaces.spec import Config
from mixnas_tf.spaces.spec import SearchSpace
from mixnas_tf.spaces.spec import check_code
from mixnas_tf.spaces.spec import describe
from mixnas_tf.spaces.spec import downsample_layers
from mixnas_tf.spaces.spec import format_stages
from mixnas_tf.spaces.spec import from_index
from mixnas_tf.spaces.spec import from_stages
from mixnas_tf.spaces.spec import parse_config
from mixnas_tf.spaces.spec import parse_configs
from mixnas_tf.spaces.spec import to_code_string
from mixnas_tf.spaces.spec import to_index
from mixnas_tf.spaces.spec import to_stages
from mixnas_tf.spaces.spec import with_widths

__all__ = ["BLOCKS", "Config", "SPACES", "SearchSpace", "check_code", "describe",
           "downsample_layers", "format_stages", "from_index", "from_stages", "get_space",
           "parse_config", "parse_configs", "to_code_string", "to_index", "to_stages",
           "with_widths"]


def get_space(name) -> SearchSpace:
  """The registered search space called `name` (a SearchSpace, or the dict of one, is
  returned as it is); errors.UsageError if there is none."""
  if isinstance(name, SearchSpace):
    return name
  if isinstance(name, dict):
    return SearchSpace.from_dict(name)
  try:
    return SPACES[name]
  except KeyError:
    raise errors.UsageError(
        f"unknown search space {name!r}; known: {', '.join(sorted(SPACES))}") from None
