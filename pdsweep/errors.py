"""The one exception type users see: a problem with their input, and how to fix it."""

from __future__ import annotations


class PdsweepError(ValueError):
    """Bad input from the user: a flag, a config value, a space file, a budget.

    The message is one line that names the problem and what to do instead. The CLI prints it
    and exits with code 2, without a traceback. It subclasses ``ValueError`` so that library
    callers who catch ``ValueError`` keep working.
    """
