"""The one exception type for mistakes a user can make and fix."""


class RejoinderError(ValueError):
    """A problem with the user's input, named with the input and the fix.

    The CLI prints the message alone (no traceback) and exits with status 2.
    """
