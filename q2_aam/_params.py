"""Action parameters built from the engine's option table (`aam.options`), the single definition of every
hyperparameter shared by the ``aam`` command line and this plugin.

Each `aam.options.Option` becomes a QIIME 2 primitive: ``int`` -> ``Int``, ``float`` -> ``Float`` (both with a
``Range`` from min/max), ``str`` -> ``Str`` (``% Choices`` when the option has choices), ``bool`` -> ``Bool``.
An option whose default is None becomes an optional parameter with default None. The help text becomes the
parameter description, with the options and inputs it names spelled as q2cli spells them (`Q2`).

`with_signature` gives an action function the explicit Python signature QIIME 2 reads (names, view types and
defaults), so the option parameters never have to be spelled out twice.
"""
import functools
import inspect

from qiime2.plugin import Bool, Choices, Float, Int, Range, Str

from aam import options as O
from aam.errors import Spelling, render

# options that only make sense for one kind of target
REGRESSION_ONLY = frozenset({"normalize_targets", "log_transform_targets", "bounded_targets", "output_activation",
                             "learnable_output_scale"})
CLASSIFICATION_ONLY = frozenset({"class_weights"})

# what the option table cannot know: where plugin users give a metadata column name
PLUGIN_NOTES = {
    "group_column": " The column must be in --m-sample-metadata-file.",
}

#: how q2cli spells what engine messages name: options are --p-<name>; the engine's inputs are these artifacts,
#: metadata or actions of this plugin
Q2 = Spelling(lambda name: "--p-" + name.replace("_", "-"), {
    "table": "--i-table",
    "sequences": "--i-sequences (FeatureData[Sequence])",
    "tree": "--i-phylogeny (Phylogeny[Rooted])",
    "distance_matrix": "--i-distance-matrix (DistanceMatrix)",
    "distance_ids": "--i-distance-matrix (a DistanceMatrix artifact names its samples)",
    "taxonomy": "--i-taxonomy (FeatureData[Taxonomy])",
    "metadata": "--m-sample-metadata-file",
    "metadata_column": "--m-metadata-column",
    "pretrained": "--i-pretrained",
    "model": "--i-model",
    "classifier": "`qiime aam fit-classifier`",
    "out_dim": "the number of classes",
    "categorical_columns": "--p-categorical-columns",
})


def q2_render(text):
    """An engine message or help text with its ``{opt:...}`` / ``{input:...}`` names in q2cli's spelling."""
    return render(text, Q2)


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
        descriptions[option.name] = q2_render(option.help) + PLUGIN_NOTES.get(option.name, "")
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


def pipeline_with_signature(function, options):
    """A pipeline's `function` as a plain function whose own parameters are its named ones, then one per option.

    QIIME 2 rebuilds a pipeline's public signature from the function's source-level parameters (it drops ``ctx``
    from them and copies the function's attributes, so an explicit ``__signature__`` as `with_signature` sets
    would bring ``ctx`` back), and refuses annotations on pipelines. So the function is written out with every
    parameter by name, as the ``decorator`` package QIIME 2 uses does it.

    Parameters
    ----------
    function : callable
        ``def f(ctx, model, ..., **options)`` without annotations.
    options : list of aam.options.Option
        Each becomes a keyword parameter with the option's default.
    """
    own = [p for p in inspect.signature(function).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = [p.name for p in own]
    clash = [o.name for o in options if o.name in names]
    if clash:
        raise ValueError(f"option(s) {clash} clash with parameters of {function.__name__}")
    defaults = {p.name: p.default for p in own if p.default is not inspect.Parameter.empty}
    defaults.update({o.name: o.default for o in options})
    names += [o.name for o in options]
    listed = ", ".join(f"{n}=_defaults[{n!r}]" if n in defaults else n for n in names)
    passed = ", ".join(f"{n}={n}" for n in names)
    namespace = {"_function": function, "_defaults": defaults}
    exec(f"def {function.__name__}({listed}):\n    return _function({passed})\n", namespace)   # names: identifiers
    action = namespace[function.__name__]
    action.__doc__, action.__module__ = function.__doc__, function.__module__
    return action
