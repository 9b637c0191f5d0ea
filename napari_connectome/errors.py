"""One exception type for problems the user can fix.

The CLI turns a :class:`UserInputError` into its message and exit code 2; the GUI shows it as a
notification. Anything else is a bug and keeps its traceback.
"""


class UserInputError(ValueError):
    """Bad input (missing file, wrong format, bad option): the message says what is wrong and what
    to do.
    """
