"""The base class of every error a user can cause (the CLI shows its message, not a traceback)."""


class CmrbenchError(Exception):
    """A user-facing error: a bad grid, dataset, option, plugin folder or store.

    The message names the file, the value and what was expected; the CLI prints it and
    exits with status 1. Any other exception is a bug and keeps its traceback.
    """
