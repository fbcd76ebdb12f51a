"""The project's own error type: a problem the user can fix (input, environment, a missing step).

Commands print it as one line and exit 2; any other exception is a bug and keeps its traceback. It subclasses
``ValueError`` because most of these are bad values.
"""


class UserError(ValueError):
    """A problem with the user's input or environment: reported as one line, exit code 2."""
