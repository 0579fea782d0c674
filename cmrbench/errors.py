"""The base class of every error a user can cause (bad grid, data, name, store, plugin)."""


class CmrbenchError(Exception):
    """An error in the user's input or environment, with a message that says what to fix.

    The CLI prints these as one line; any other exception is a bug and shows its traceback.
    Subclasses keep their standard base too (``ValueError``, ``KeyError``), so callers that
    catch those still work.
    """
