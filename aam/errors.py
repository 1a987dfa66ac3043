"""Errors and warnings raised by the aam engine, and how each front end spells the options they name.

Every problem with user input (a file, a table, a sample, a feature, a metadata column, an option) is raised as
`AAMInputError`. The message itself has to say what is wrong, where, and how to fix it, so it often names an
option or an input. The engine never spells those the way one front end does: a message names them with
placeholders, ``{opt:epochs}`` for the option ``epochs`` and ``{input:tree}`` for the input ``tree``, and each
front end renders them in its own spelling: the ``aam`` command line as ``--epochs`` / ``--tree`` (`CLI`, also
what ``str(error)`` shows), the QIIME 2 plugin as ``--p-epochs`` / ``--i-phylogeny``.
"""
import re
import warnings

# '{opt:name}' or '{input:name}'
_PLACEHOLDER = re.compile(r"\{(opt|input):([A-Za-z_]+)\}")

# the aam command line's flag for each engine input (options are spelled --name-with-dashes)
CLI_INPUTS = {
    "table": "--table",
    "sequences": "--sequences",
    "tree": "--tree",
    "distance_matrix": "--unifrac-matrix",
    "distance_ids": "--unifrac-ids",
    "taxonomy": "--taxonomy",
    "metadata": "--metadata",
    "metadata_column": "--metadata-column",
    "pretrained": "--pretrained-encoder",
    "model": "--model",
    "classifier": "--classifier",
    "out_dim": "--out-dim",
    "categorical_columns": "--categorical-columns",
}


class Spelling:
    """How a front end writes the options and inputs that messages name.

    Parameters
    ----------
    option : callable
        ``option(name) -> str``, e.g. ``'epochs' -> '--epochs'``.
    inputs : dict of str -> str
        Spelling of each input; an input not listed falls back to `option`.
    """

    def __init__(self, option, inputs):
        self.option = option
        self.inputs = dict(inputs)

    def __call__(self, kind, name):
        if kind == "input" and name in self.inputs:
            return self.inputs[name]
        return self.option(name)


CLI = Spelling(lambda name: "--" + name.replace("_", "-"), CLI_INPUTS)


def render(template, spelling=CLI):
    """`template` with every ``{opt:name}`` / ``{input:name}`` replaced by `spelling`'s flag."""
    return _PLACEHOLDER.sub(lambda m: spelling(m.group(1), m.group(2)), str(template))


class _Templated:
    """Mixin of the engine's errors and warnings: a message template rendered per front end."""

    def __init__(self, template):
        self.template = str(template)
        super().__init__(render(self.template))

    def render(self, spelling=CLI):
        """The message in `spelling` (the CLI's by default, which is also ``str(self)``)."""
        return render(self.template, spelling)


class AAMInputError(_Templated, ValueError):
    """Bad input from the user: the message names the file, sample, feature, column or option and the fix."""


class AAMTrainingError(_Templated, RuntimeError):
    """Training cannot continue (for example, repeated non-finite losses); the message names the cause."""


class AAMWarning(_Templated, UserWarning):
    """Something the user should know about a run that still goes ahead (an option ignored, a fallback)."""


def warn(template, stacklevel=2):
    """Issue an `AAMWarning` whose message may name options as ``{opt:name}`` (see `render`)."""
    warnings.warn(AAMWarning(template), stacklevel=stacklevel + 1)


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
