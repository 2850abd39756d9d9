"""The one exception type that the command-line tools turn into a one-line error."""


class UsageError(Exception):
  """Bad input from a user: the message is one line saying what was wrong and what is accepted.

  Entry points catch it, print `error: <message>` to stderr and exit with status 2,
  without a traceback and without touching existing results.
  """
