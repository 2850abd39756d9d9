"""The exception types that the command-line tools turn into a one-line error."""

import re


class UsageError(Exception):
  """Bad input from a user: the message is one line saying what was wrong and what is accepted.

  Entry points catch it, print `error: <message>` to stderr and exit with status 2,
  without a traceback and without touching existing results.
  """


class RunError(Exception):
  """A run that cannot go on for a reason outside the user's flags: training diverged (a
  non-finite loss) or a checkpoint could not be written (disk full, file-size limit).

  Entry points print `error: <message>` and exit with status 1. The last good checkpoint
  is kept and no results are written, so the run resumes once the cause is removed.
  """


# Messages of OS and TensorFlow file errors that mean "no room to write".
NO_SPACE = ("No space left", "File too large", "Disk quota exceeded")


def is_no_space(error: BaseException) -> bool:
  return any(s in str(error) for s in NO_SPACE)


def one_line(text: object, limit: int = 200) -> str:
  """First line of `text`, shortened: UsageError messages are one line."""
  # TF wraps op errors in "{{function_node ...}}" and "[Op:...] name:": noise
  # to a user.
  text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(text))
  text = re.sub(r"\s*\[Op:[^\]]*\]( name:[^\n]*)?", "", text)
  lines = text.strip().splitlines()
  line = lines[0].strip() if lines else ""
  return line if len(line) <= limit else line[:limit - 3] + "..."
