"""The one exception the library raises for problems a user can fix.

The CLI turns an :class:`LmcliError` into a single red line on stderr and a non-zero exit;
anything else escaping the library is a bug and keeps its traceback.
"""


class LmcliError(Exception):
    """A problem with the user's input, files or flags, described in one line."""

    exit_code: int = 1


class UsageError(LmcliError):
    """An impossible flag value or combination."""

    exit_code = 2
