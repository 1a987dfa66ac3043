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


def with_signature(function, options, annotate=True):
    """`function` with an explicit signature: its own named parameters, then one per option.

    Parameters
    ----------
    function : callable
        ``def f(table: biom.Table, ..., **options)``: its named parameters (with their view-type annotations and
        defaults) come first; the options reach it through ``**options``.
    options : list of aam.options.Option
        Each becomes a keyword parameter with the option's default and Python type.
    annotate : bool
        Annotate the option parameters with their Python types. False for a QIIME 2 pipeline, which takes no
        annotations and gets a function whose parameters are spelled out (`_spelled_out`).
    """
    own = inspect.signature(function)
    params = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in params}
    for option in options:
        if option.name in names:
            raise ValueError(f"option {option.name!r} clashes with an input or parameter of "
                             f"{function.__name__}")
        params.append(inspect.Parameter(option.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=option.default,
                                        annotation=option.type if annotate else inspect.Parameter.empty))
    signature = inspect.Signature(params, return_annotation=own.return_annotation)
    if not annotate:
        return _spelled_out(function, signature)

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


def _spelled_out(function, signature):
    """A function with `signature` written out as its own parameter list, calling `function` by keyword.

    QIIME 2 gives a pipeline its public signature by dropping the first parameter (``ctx``) from the text of the
    function's signature (`decorator.FunctionMaker`), which also copies the function's attributes: a
    ``__signature__`` attribute, as `with_signature` sets on methods, would come back with ``ctx`` in it.
    """
    defaults, spelled = {}, []
    for i, param in enumerate(signature.parameters.values()):
        if param.default is inspect.Parameter.empty:
            spelled.append(param.name)
        else:
            defaults[f"_default_{i}"] = param.default
            spelled.append(f"{param.name}=_default_{i}")
    names = list(signature.parameters)
    if not all(name.isidentifier() for name in names + [function.__name__]):
        raise ValueError(f"parameters of {function.__name__} must be Python names: {names}")
    source = (f"def {function.__name__}({', '.join(spelled)}):\n"
              f"    return _function({', '.join(f'{n}={n}' for n in names)})\n")
    namespace = {"_function": function, **defaults}
    exec(source, namespace)  # the text is built from Python names only (checked above)
    made = namespace[function.__name__]
    made.__doc__, made.__module__ = function.__doc__, function.__module__
    return made
