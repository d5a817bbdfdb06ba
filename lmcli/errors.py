"""The exceptions the library raises for problems a user can fix.

The CLI turns an :class:`LmcliError` into a single red line on stderr and a non-zero exit;
anything else escaping the library is a bug and keeps its traceback. The library names
settings by their names (``lr``, ``hidden_dim``), never by command-line flags: a
:class:`SettingError` marks them, and the CLI shows each as its flag (``--lr``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A setting's mark, or a doubled brace: the escape for text that is not a template.
_SETTING = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)\}")


def escape(text: str) -> str:
    """``text`` (a path, a library's message) made safe to put into a template."""
    return text.replace("{", "{{").replace("}", "}}")


class LmcliError(Exception):
    """A problem with the user's input, files or flags, described in one line. Made with
    ``template=``, the message marks settings as ``{name}``: ``"lower {lr} or {clip}"``."""

    exit_code: int = 1

    def __init__(self, message: str = "", *, template: str | None = None) -> None:
        self.template = template
        super().__init__(self.render(lambda name: name) if template is not None else message)

    def render(self, show: Callable[[str], str]) -> str:
        """The message with each marked setting shown by ``show(name)`` (a flag, say)."""
        if self.template is None:
            return str(self)
        return _SETTING.sub(lambda match: show(match[1]) if match[1] else match[0][0], self.template)


class UsageError(LmcliError):
    """An impossible flag value or combination."""

    exit_code = 2


class SettingError(UsageError):
    """A setting out of its range, or settings that contradict each other. The message is a
    template in which ``{name}`` marks a setting: ``"{lr} must be positive, got 0"``."""

    def __init__(self, template: str) -> None:
        super().__init__(template=template)


class InputError(SettingError):
    """Input that cannot be used as the settings stand (text that does not decode, a corpus
    too small for one batch): a problem with the input, so the exit code of any bad input,
    followed by the settings that would help, marked as in a :class:`SettingError`. The
    ``fact`` is plain text, never a template, so a file name with braces stays as it is."""

    exit_code = LmcliError.exit_code

    def __init__(self, fact: str, advice: str) -> None:
        self.fact = fact
        super().__init__(advice)

    def render(self, show: Callable[[str], str]) -> str:
        return f"{self.fact}; {super().render(show)}"
