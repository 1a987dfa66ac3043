"""Errors raised by the aam engine.

Every problem with user input (a file, a table, a sample, a feature, a metadata column) is raised as
`AAMInputError`. The CLI prints its message without a traceback and the QIIME 2 plugin passes it on
as the action's error, so the message itself has to say what is wrong, where, and how to fix it.
"""


class AAMInputError(ValueError):
    """Bad input from the user: the message names the file, sample, feature or column and the fix."""


class AAMTrainingError(RuntimeError):
    """Training cannot continue (for example, repeated non-finite losses); the message names the cause."""


def preview(items, limit=5):
    """Format up to `limit` items for an error message, e.g. "'a', 'b', 'c' and 7 more".

    Parameters
    ----------
    items : iterable of object
        The offending IDs (samples, features, values).
    limit : int
        How many to show before summarizing the rest as a count.

    Returns
    -------
    str
    """
    items = list(items)
    shown = ", ".join(repr(str(i)) for i in items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown
