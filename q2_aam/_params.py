"""Action parameters built from the engine's option table (`aam.options`), the single definition of every
hyperparameter shared by the ``aam`` command line and this plugin.

Each `aam.options.Option` becomes a QIIME 2 primitive: ``int`` -> ``Int``, ``float`` -> ``Float`` (both with a
``Range`` from min/max), ``str`` -> ``Str`` (``% Choices`` when the option has choices), ``bool`` -> ``Bool``.
An option whose default is None becomes an optional parameter with default None. The help text becomes the
parameter description, with the CLI's ``--flag`` spellings turned into q2cli's ``--p-flag``.

`with_signature` gives an action function the explicit Python signature QIIME 2 reads (names, view types and
defaults), so the option parameters never have to be spelled out twice.
"""
import functools
import inspect
import re

from qiime2.plugin import Bool, Choices, Float, Int, Range, Str

from aam import options as O

# options that only make sense for one kind of target
REGRESSION_ONLY = frozenset({"normalize_targets", "log_transform_targets", "bounded_targets", "output_activation",
                             "learnable_output_scale"})
CLASSIFICATION_ONLY = frozenset({"class_weights"})

# what the option table cannot know: where plugin users give a metadata column name
PLUGIN_NOTES = {
    "group_column": " The column must be in --m-sample-metadata-file.",
}

# engine (CLI) spellings of inputs that are artifacts or metadata in the plugin
_INPUT_FLAGS = {
    "--tree": "--i-phylogeny",
    "--unifrac-matrix": "--i-distance-matrix",
    "--distance-matrix": "--i-distance-matrix",
    "--taxonomy": "--i-taxonomy",
    "--sequences": "--i-sequences",
    "--table": "--i-table",
    "--pretrained-encoder": "--i-pretrained",
    "--pretrained": "--i-pretrained",
    "--metadata": "--m-sample-metadata-file",
    "--model": "--i-model",
}


def _flag_pattern():
    flags = sorted({o.flag for o in O.OPTIONS} | set(_INPUT_FLAGS), key=len, reverse=True)
    # a flag the engine already labels as the aam CLI's ("--sequences x.fasta (CLI)", "(CLI: --flag ...)")
    # stays as it is
    return re.compile(r"(?<![\w-])(?<!CLI: )(" + "|".join(re.escape(f) for f in flags) +
                      r")(?![\w-])(?!(?:\s+[^\s(]+)?\s+\(CLI)")


_FLAGS = _flag_pattern()
# whole phrases of engine messages with a plugin spelling
_PHRASES = {"missing='ignore' (CLI: --missing-samples ignore)": "--p-missing-samples ignore"}


def q2_flags(text):
    """Rewrite the engine's CLI flags in `text` as q2cli's (``--freeze-base`` -> ``--p-freeze-base``)."""
    for phrase, replacement in _PHRASES.items():
        text = text.replace(phrase, replacement)

    def repl(match):
        flag = match.group(1)
        if flag in _INPUT_FLAGS:
            return _INPUT_FLAGS[flag]
        return "--p-" + flag[2:]
    return _FLAGS.sub(repl, text)


def _number(value, kind):
    return None if value is None else kind(value)


def qiime_type(option):
    """The QIIME 2 primitive type of an `aam.options.Option`."""
    if option.type is bool:
        return Bool
    if option.type is str:
        if option.choices:
            return Str % Choices(list(option.choices))
        return Str
    if option.type in (int, float):
        base = Int if option.type is int else Float
        if option.choices:
            return base % Choices(list(option.choices))
        if option.min is None and option.max is None:
            return base
        lo, hi = _number(option.min, option.type), _number(option.max, option.type)
        return base % Range(lo, hi, inclusive_start=lo is not None,
                            inclusive_end=hi is not None and not option.max_exclusive)
    raise TypeError(f"option {option.name!r} has unsupported type {option.type!r}")


def option_table(command, exclude=()):
    """The plugin options of `command` (not in `exclude`), in table order."""
    return [o for o in O.options_for(command, "plugin") if o.name not in exclude]


def parameters_for(command, exclude=()):
    """``(parameters, parameter_descriptions, python defaults)`` for the options of `command`."""
    params, descriptions, defaults = {}, {}, {}
    for option in option_table(command, exclude):
        params[option.name] = qiime_type(option)
        descriptions[option.name] = q2_flags(option.describe()) + PLUGIN_NOTES.get(option.name, "")
        defaults[option.name] = option.default
    return params, descriptions, defaults


def with_signature(function, options):
    """`function` with an explicit signature: its own named parameters, then one per option.

    Parameters
    ----------
    function : callable
        ``def f(table: biom.Table, ..., **options)``: its named parameters (with their view-type annotations and
        defaults) come first; the options reach it through ``**options``.
    options : list of aam.options.Option
        Each becomes a keyword parameter with the option's default and Python type.
    """
    own = inspect.signature(function)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in params}
    for option in options:
        if option.name in names:
            raise ValueError(f"option {option.name!r} clashes with an input or parameter of "
                             f"{function.__name__}")
        params.append(inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=option.default, annotation=option.type))
    signature = inspect.Signature(params, return_annotation=own.return_annotation)

    @functools.wraps(function)
    def action(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return function(**bound.arguments)

    del action.__wrapped__  # inspect must see the explicit signature, not the wrapped function's
    action.__signature__ = signature
    action.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not p.empty}
    if own.return_annotation is not inspect.Signature.empty:
        action.__annotations__["return"] = own.return_annotation
    return action
