"""`qiime aam feature-importance` (a pipeline) and `qiime aam summarize-importance` (its page).

The engine (`aam.api.feature_importance`) measures permutation importance per feature group (a taxon at a rank,
or features whose abundances correlate) for every member of the model and for their blend. Two artifacts carry
it, one row per feature (a group's score given to each of its features):

- ``FeatureData[Importance]`` (q2-sample-classifier's type): one column, the blended importance. Its ``heatmap``
  ranks features by the sum of an artifact's columns, so this artifact holds nothing else: an interval bound, a
  p-value or a group number summed into the ranking would pick the wrong features without a word.
- ``FeatureData[AAMImportance]``: every figure as a numeric column (the format of FeatureData[Importance], which
  requires numbers): the group's number (1 = most important), the blended importance with its 95% interval,
  p-value and Benjamini-Hochberg q-value, whether it is called important, its direction, the group's size,
  whether the training table had the feature, and each member's importance, interval and q-value. `qiime metadata
  tabulate` shows it; `summarize-importance` draws it.

Nothing here imports torch when QIIME 2 loads the plugin: the engine is imported when an action runs.
"""
import os

import biom
import numpy as np
import pandas as pd

from aam.errors import AAMInputError

from q2_aam._methods import _log, _options, _plugin_errors, _sequences
from q2_aam._visualizers import _figure, _fmt, _render, _table_html

#: the blend's name in the engine's importance table (`aam.interpret.importance.BLEND`)
BLEND = "prediction"
#: columns every importance-details artifact has (the member and direction columns vary with the model)
DETAIL_COLUMNS = ("group", "importance", "low", "high", "p_value", "q_value", "important", "group_size", "unseen")
#: the prefix of a classifier's direction columns: ``direction_<class>`` is 1 for the class the group favours
DIRECTION_PREFIX = "direction_"
#: groups drawn in the page's figure (all are in its tables)
FIGURE_GROUPS = 30


# --- the engine's table as the two artifacts ------------------------------------------------------------------------

def _direction_columns(group_rows, class_labels):
    """Numeric direction of one group: ``direction`` (+1 rises with the group's abundance, -1 falls, 0 flat) for
    a regressor; one ``direction_<class>`` 0/1 column per class for a classifier (1: the class whose probability
    rises most with the group)."""
    direction = group_rows["direction"].iloc[0]
    if class_labels is None:
        return {"direction": {"+": 1.0, "-": -1.0}.get(direction, 0.0)}
    return {DIRECTION_PREFIX + label: float(direction == label) for label in class_labels}


def _member_columns(group_rows):
    """Each member's importance, interval and q-value (the blend's are the main columns)."""
    out = {}
    for row in group_rows[group_rows["member"] != BLEND].itertuples():
        out.update({f"{row.member}_importance": row.importance, f"{row.member}_low": row.low,
                    f"{row.member}_high": row.high, f"{row.member}_q_value": row.q_value})
    return out


def importance_artifacts(table, class_labels):
    """The engine's importance table as (FeatureData[Importance] frame, FeatureData[AAMImportance] frame).

    Parameters
    ----------
    table : pd.DataFrame
        `aam.api.feature_importance`'s result: one row per (group, member).
    class_labels : list of str or None
        The classifier's classes (None for a regressor).

    Returns
    -------
    (pd.DataFrame, pd.DataFrame)
        Both indexed by feature ID, features of the most important group first.
    """
    blended = table[table["member"] == BLEND].sort_values("importance", ascending=False, kind="stable")
    rows = []
    for number, blend in enumerate(blended.itertuples(), start=1):
        group_rows = table[table["group"] == blend.group]
        shared = {"group": float(number), "importance": blend.importance, "low": blend.low, "high": blend.high,
                  "p_value": blend.p_value, "q_value": blend.q_value, "important": float(bool(blend.important)),
                  **_direction_columns(group_rows, class_labels), "group_size": float(blend.n_features)}
        members = _member_columns(group_rows)
        unseen = set(blend.unseen_ids)
        for feature in blend.feature_ids:
            rows.append({"feature-id": str(feature), **shared, "unseen": float(feature in unseen), **members})
    details = pd.DataFrame(rows).set_index("feature-id").astype(float)
    importance = details[["importance"]].copy()
    return importance, details


def feature_importance(ctx, model, table, metadata, sequences=None, taxonomy=None, group_column=None, **options):
    from aam import api
    from aam.checkpoint import Checkpoint

    checkpoint = model.view(Checkpoint)
    record = checkpoint.record
    seqs = None if sequences is None else _sequences(sequences.view(pd.Series))
    lineages = None if taxonomy is None else taxonomy.view(pd.DataFrame)
    with _plugin_errors():
        measured = api.feature_importance(checkpoint, table.view(biom.Table), metadata.to_dataframe(),
                                          sequences=seqs, taxonomy=lineages, group_column=group_column, log=_log,
                                          **_options(options))
    importance, details = importance_artifacts(measured, record.target.class_labels if record.is_classifier
                                               else None)
    importance = ctx.make_artifact("FeatureData[Importance]", importance)
    details = ctx.make_artifact("FeatureData[AAMImportance]", details)
    summarize = ctx.get_action("aam", "summarize_importance")
    visualization, = summarize(details=details, taxonomy=taxonomy)
    return importance, details, visualization


# --- summarize-importance -------------------------------------------------------------------------------------------

def _check_details(details):
    absent = [c for c in DETAIL_COLUMNS if c not in details.columns]
    if absent:
        raise AAMInputError(f"--i-details lacks the column(s) {', '.join(absent)}: it was not made by `qiime aam "
                            "feature-importance` (its details output). Pass that artifact.")


def _lineage_label(features, lineages):
    """A group's label: the lineage its features share (from the taxonomy), else its first feature's ID."""
    if lineages is not None:
        parts = [[p.strip() for p in str(lineages[f]).split(";")] for f in features if f in lineages.index]
        if parts:
            shared = []
            for level in zip(*parts):
                if len(set(level)) > 1 or not level[0] or level[0].endswith("__"):
                    break
                shared.append(level[0])
            if shared:
                return "; ".join(shared)
    more = len(features) - 1
    return features[0] + (f" (+{more} correlated)" if more else "")


def _direction_text(row, details):
    """What the group's direction columns say, in words."""
    if "direction" in details.columns:
        return {1.0: "prediction rises with it", -1.0: "prediction falls with it"}.get(row["direction"], "none")
    favoured = [c[len(DIRECTION_PREFIX):] for c in details.columns if c.startswith(DIRECTION_PREFIX) and row[c] == 1]
    return f"favours {favoured[0]}" if favoured else "none"


def _members(details):
    return [c[:-len("_importance")] for c in details.columns if c.endswith("_importance")]


def _group_table(details, lineages):
    """One row per group, most important first: label, features, blended and member importances, direction."""
    rows = []
    for number, part in details.groupby("group", sort=True):
        first = part.iloc[0]
        features = list(part.index)
        unseen = [f for f in features if part.loc[f, "unseen"] == 1]
        row = {"rank": int(number), "group": _lineage_label(features, lineages), "features": len(features),
               "importance": first["importance"], "95% low": first["low"], "95% high": first["high"],
               "q-value": first["q_value"], "important": bool(first["important"]),
               "direction": _direction_text(first, details),
               "never in the training table": ", ".join(unseen) if unseen else ""}
        for member in _members(details):
            row[f"{member} importance"] = first[f"{member}_importance"]
            row[f"{member} 95% interval"] = f"[{_fmt(first[f'{member}_low'])}, {_fmt(first[f'{member}_high'])}]"
        rows.append(row)
    return pd.DataFrame(rows)


def _short_label(label, limit=50):
    """A lineage's last two ranks (the whole lineage is in the table), cut to `limit` characters."""
    parts = label.split("; ")
    short = "; ".join(parts[-2:])
    return short if len(short) <= limit else "..." + short[-(limit - 3):]


def _shown_groups(groups):
    """The group table as the page shows it: the blend's interval in one column, numbers formatted, yes / no."""
    shown = groups.copy()
    interval = [f"[{_fmt(lo)}, {_fmt(hi)}]" for lo, hi in zip(shown.pop("95% low"), shown.pop("95% high"))]
    shown.insert(shown.columns.get_loc("importance") + 1, "95% interval", interval)
    shown["important"] = shown["important"].map(_fmt)
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(_fmt)
    return shown


def _importance_figure(groups, members):
    """The most important groups: the blend's importance with its 95% interval, and each member's importance."""
    from matplotlib.figure import Figure
    shown = groups.head(FIGURE_GROUPS).iloc[::-1]
    y = np.arange(len(shown))
    fig = Figure(figsize=(8, 1.2 + 0.32 * len(shown)), layout="constrained")
    ax = fig.subplots()
    est = shown["importance"].to_numpy(float)
    low, high = shown["95% low"].to_numpy(float), shown["95% high"].to_numpy(float)
    err = np.vstack([np.clip(est - low, 0, None), np.clip(high - est, 0, None)])
    colors = ["#c0392b" if flag else "#34495e" for flag in shown["important"]]
    ax.errorbar(est, y, xerr=np.nan_to_num(err), fmt="none", ecolor="#7f8c8d", capsize=3, zorder=1)
    ax.scatter(est, y, c=colors, s=36, zorder=3, label="blend (red: important)")
    markers = ["^", "s", "D", "v"]
    for k, member in enumerate(members):
        # open and larger than the blend's dot, so a member equal to the blend still shows around it
        ax.scatter(shown[f"{member} importance"].to_numpy(float), y, marker=markers[k % len(markers)], s=70,
                   facecolors="none", edgecolors=f"C{k}", linewidths=1.2, zorder=4, label=member)
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, [_short_label(g) for g in shown["group"]], fontsize=8)
    ax.set_xlabel("importance (mean increase of the loss when permuted)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def summarize_importance(output_dir: str, details: pd.DataFrame, taxonomy: pd.DataFrame = None) -> None:
    _check_details(details)
    details = details.copy()
    details.index = details.index.astype(str)
    lineages = None
    if taxonomy is not None:
        lineages = taxonomy["Taxon"].copy()
        lineages.index = lineages.index.astype(str)
    groups = _group_table(details, lineages)
    members = _members(details)
    figures = [_figure(_importance_figure(groups, members), output_dir, "importance", "Most important groups",
                       "Each row is a feature group, most important first: the blended model's importance (dot) "
                       "with its 95% interval (bar) and each member's own importance (open markers). Red: called "
                       "important (interval above 0 and q-value below 0.05).")]
    per_feature = details.copy()
    if lineages is not None:
        per_feature.insert(0, "taxon", [lineages.get(f, "") for f in per_feature.index])
    per_feature.to_csv(os.path.join(output_dir, "importance-per-feature.tsv"), sep="\t")
    groups.to_csv(os.path.join(output_dir, "importance-per-group.tsv"), sep="\t", index=False)
    unseen = details.index[details["unseen"] == 1]
    context_table = _shown_groups(groups)
    context = {
        "title": "Feature importance",
        "n_groups": len(groups),
        "n_features": len(details),
        "n_important": int(groups["important"].sum()),
        "members": members,
        "unseen": list(unseen),
        "labelled": lineages is not None,
        "groups": _table_html(context_table, index=False),
        "figures": figures,
        "downloads": [("importance-per-group.tsv", "one row per group, as in the table above (TSV)"),
                      ("importance-per-feature.tsv", "one row per feature: its group's figures (TSV)")],
    }
    _render("importance", output_dir, context)

