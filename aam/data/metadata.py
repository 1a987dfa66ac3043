"""Sample metadata: loading QIIME 2-style TSV files and pulling out training targets.

Metadata is kept as strings (object dtype) until a column is used, because a column's meaning depends on
how it is used: the same ``1``/``2`` values are a numeric target for a regressor and class labels for a
classifier. `numeric_target` and `categorical_target` do the conversion and report the samples that have no
value, so the caller can leave them out and say so.

This module never imports qiime2: a ``qiime2.Metadata`` is accepted through its ``to_dataframe()`` method.
"""
import csv
import math
import os

import numpy as np
import pandas as pd

from aam.errors import AAMInputError, preview, warn

#: Name given to the index of every loaded metadata frame.
INDEX_NAME = "sample_id"
#: the largest 32-bit float: the model computes in float32, so a target beyond it overflows
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Headers QIIME 2 accepts for the ID column. Those starting with '#' must be recognized here, otherwise the
# header line would be mistaken for a comment. Compared case-insensitively.
ID_HEADERS = frozenset(h.lower() for h in (
    "id", "sampleid", "sample id", "sample-id", "featureid", "feature id", "feature-id",
    "#SampleID", "#Sample ID", "#OTUID", "#OTU ID", "sample_name",
))

# pandas' default ``na_values`` of `pandas.read_csv`, spelled out so the rule does not depend on a private
# pandas name. Values are compared after stripping whitespace; the empty string is among them.
NA_VALUES = frozenset((
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
    "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
    # INSDC missing-value terms, as Qiita and EBI metadata spell them (QIIME 2 2023.5+ reads them as missing)
    "Missing: Not collected", "Missing: Not provided", "Missing: Restricted access", "not applicable",
    "missing", "not collected", "not provided", "restricted access",
))

_MISSING_MODES = ("error", "ignore")


# --------------------------------------------------------------------------------------------- loading

def load_metadata(source, name="metadata"):
    """Load sample metadata as a DataFrame of strings indexed by sample ID.

    Parameters
    ----------
    source : str, os.PathLike, pandas.DataFrame or qiime2.Metadata-like
        A QIIME 2-style TSV file (first column holds the sample IDs; a ``#q2:types`` directive row and other
        ``#`` comment lines are skipped), a DataFrame indexed by sample ID, or any object with a
        ``to_dataframe()`` method returning such a DataFrame (e.g. ``qiime2.Metadata``).
    name : str
        What to call the source in error messages (e.g. the CLI option it came from).

    Returns
    -------
    pandas.DataFrame
        Indexed by sample ID (str, index name ``'sample_id'``). Column names, IDs and string values are
        stripped of surrounding whitespace. Values read from a file are left as strings (object dtype) with
        missing values (empty cells and pandas' default NA spellings such as ``'NA'``) as NaN; a DataFrame's
        non-string values keep their types.

    Raises
    ------
    AAMInputError
        If the file does not exist or is malformed, or if sample IDs are empty or duplicated.
    """
    if isinstance(source, pd.DataFrame):
        md = _from_dataframe(source, name)
    elif hasattr(source, "to_dataframe"):
        # duck typing keeps qiime2 an optional dependency of the engine
        md = _from_dataframe(source.to_dataframe(), name)
    elif isinstance(source, (str, os.PathLike)):
        md = _read_tsv(os.fspath(source), name)
    else:
        raise TypeError(f"{name} must be a path, a pandas DataFrame or a qiime2.Metadata, "
                        f"not {type(source).__name__}")
    _check_ids(md, name)
    return md


def _read_tsv(path, name):
    """Parse a QIIME 2-style metadata TSV into a DataFrame of stripped strings (NaN for missing)."""
    if not os.path.exists(path):
        raise AAMInputError(f"{name} file {path!r} does not exist; check the path.")
    if os.path.isdir(path):
        raise AAMInputError(f"{name} {path!r} is a directory; give the metadata TSV file inside it.")
    # utf-8-sig drops the byte-order mark spreadsheet programs put in front of the header
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [[cell.strip() for cell in row] for row in csv.reader(fh, delimiter="\t")]
    header_at = _find_header(rows, path, name)
    header = _trim_header(rows[header_at], path, name)
    records = []
    for line_no, row in enumerate(rows[header_at + 1:], start=header_at + 2):
        if _is_blank(row) or row[0].startswith("#"):
            # '#q2:types' / '#q2:columns' directives and comments carry nothing we use
            continue
        records.append(_fit_row(row, len(header), line_no, path, name))
    if not records:
        raise AAMInputError(f"{name} file {path!r} has a header but no sample rows; add one row per sample.")
    md = pd.DataFrame(records, columns=header, dtype=object)
    md = md.set_index(header[0])
    md.index = pd.Index(md.index, dtype=object, name=INDEX_NAME)
    # strings only, so the NA spellings can be matched exactly (pandas' own rule, applied after stripping)
    return md.mask(md.isin(list(NA_VALUES)))


def _find_header(rows, path, name):
    """Index of the header row: the first non-blank row that is not a comment (or is a '#SampleID' header)."""
    for i, row in enumerate(rows):
        if _is_blank(row):
            continue
        first = row[0]
        if not first.startswith("#") or first.lower() in ID_HEADERS:
            return i
    raise AAMInputError(f"{name} file {path!r} is empty (no header row); the first line must name the "
                        "sample ID column (e.g. 'sample-id') followed by the metadata columns.")


def _trim_header(header, path, name):
    """Validate the header row: a named ID column, no empty or repeated column names."""
    # trailing empty cells come from spreadsheet exports and name no column
    while header and header[-1] == "":
        header = header[:-1]
    if not header or header[0] == "":
        raise AAMInputError(f"{name} file {path!r}: the first header cell is empty; name the sample ID "
                            "column (e.g. 'sample-id').")
    empty = [i + 1 for i, h in enumerate(header) if h == ""]
    if empty:
        raise AAMInputError(f"{name} file {path!r}: header column(s) {preview(empty)} have no name; name "
                            "them or delete those columns.")
    seen, repeated = set(), []
    for h in header:
        if h in seen:
            repeated.append(h)
        seen.add(h)
    if repeated:
        raise AAMInputError(f"{name} file {path!r}: column name(s) {preview(repeated)} appear more than "
                            "once; rename them so each column is unique.")
    return header


def _fit_row(row, width, line_no, path, name):
    """Pad a short row with empty cells; reject a row with values beyond the header."""
    if len(row) > width:
        extra = [c for c in row[width:] if c != ""]
        if extra:
            raise AAMInputError(f"{name} file {path!r} line {line_no} (sample {row[0]!r}) has {len(row)} "
                                f"cells but the header names {width} columns; remove the extra values or "
                                "add column names.")
        row = row[:width]
    return row + [""] * (width - len(row))


def _is_blank(row):
    return all(cell == "" for cell in row)


def _from_dataframe(df, name):
    """Copy a DataFrame indexed by sample ID, stripping names and string values, NA spellings -> NaN."""
    md = df.copy()
    md.columns = [str(c).strip() for c in md.columns]
    repeated = md.columns[md.columns.duplicated()].unique()
    if len(repeated):
        raise AAMInputError(f"{name}: column name(s) {preview(repeated)} appear more than once (after "
                            "stripping whitespace); rename them so each column is unique.")
    md.index = pd.Index([_strip_id(i) for i in md.index], dtype=object, name=INDEX_NAME)
    for col in md.columns:
        if md[col].dtype == object:
            md[col] = md[col].map(_strip_value)
    return md


def _strip_id(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _strip_value(value):
    # the same missing-value rule as for files, so a DataFrame and its TSV export load alike
    if isinstance(value, str):
        value = value.strip()
        return np.nan if value in NA_VALUES else value
    return value


def _check_ids(md, name):
    """Every sample needs a non-empty, unique ID, or rows could not be matched to the table."""
    if len(md.index) == 0:
        raise AAMInputError(f"{name} has no samples; add one row per sample.")
    empty = md.index == ""
    if empty.any():
        raise AAMInputError(f"{name} has {int(empty.sum())} row(s) with an empty sample ID; fill in the ID "
                            "column or delete those rows.")
    dup = md.index[md.index.duplicated()].unique()
    if len(dup):
        raise AAMInputError(f"{name} lists sample ID(s) {preview(dup)} more than once; keep one row per "
                            "sample.")


# --------------------------------------------------------------------------------------------- selection

def select_samples(md, sample_ids, missing="error"):
    """Rows of `md` for `sample_ids`, in that order.

    Parameters
    ----------
    md : pandas.DataFrame
        Metadata from `load_metadata`.
    sample_ids : sequence of str
        The samples wanted (typically the table's samples).
    missing : {'error', 'ignore'}
        What to do with samples that have no metadata row: raise, or leave them out.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    AAMInputError
        If ``missing='error'`` and some samples have no metadata row.
    """
    if missing not in _MISSING_MODES:
        raise ValueError(f"missing must be one of {_MISSING_MODES}, not {missing!r}")
    wanted = [str(s) for s in sample_ids]
    present = set(md.index)
    absent = [s for s in wanted if s not in present]
    if absent and missing == "error":
        raise AAMInputError(f"{len(absent)} of {len(wanted)} sample(s) have no row in the metadata: "
                            f"{preview(absent)}. Add them to the metadata file, or leave them out with "
                            "{opt:missing_samples} ignore.")
    return md.loc[[s for s in wanted if s in present]]


# --------------------------------------------------------------------------------------------- targets

def numeric_target(md, column):
    """A metadata column as a float regression target.

    Parameters
    ----------
    md : pandas.DataFrame
        Metadata from `load_metadata` (possibly subset with `select_samples`).
    column : str
        The column to use.

    Returns
    -------
    values : pandas.Series
        float64, indexed by sample ID, for the samples that have a value.
    dropped : list of str
        Samples without a value (empty or NA), in `md` order.

    Raises
    ------
    AAMInputError
        If the column does not exist, holds non-numeric values, or holds infinite values.
    """
    raw = _column(md, column)
    missing = raw.isna()
    present = raw[~missing]
    values = pd.to_numeric(present.map(_strip_value), errors="coerce")
    bad = values.isna()
    if bad.any():
        shown = [f"{s!r}: {v!r}" for s, v in present[bad].items()]
        raise AAMInputError(
            f"metadata column {column!r} must be numeric for a regression target, but "
            f"{int(bad.sum())} sample(s) have non-numeric values ({', '.join(shown[:5])}"
            f"{f' and {len(shown) - 5} more' if len(shown) > 5 else ''}). Fix those values, or if "
            f"{column!r} is categorical, train a classifier instead ({{input:classifier}}).")
    values = values.astype(np.float64)
    inf = ~np.isfinite(values.to_numpy())
    if inf.any():
        raise AAMInputError(f"metadata column {column!r} has infinite values for sample(s) "
                            f"{preview(values.index[inf])}; replace them with finite numbers or leave the "
                            "cells empty to drop those samples.")
    huge = np.abs(values.to_numpy()) >= FLOAT32_MAX
    if huge.any():
        raise AAMInputError(f"metadata column {column!r} has values beyond what the model computes with (32-bit "
                            f"floats hold at most {FLOAT32_MAX:.1e}) for sample(s) {preview(values.index[huge])}; "
                            "rescale the column (e.g. other units) or fix those values.")
    if len(values) > 1 and values.nunique() == 1:
        warn(f"metadata column {column!r} has the same value ({values.iloc[0]:g}) for every sample; a regressor "
             "can learn nothing from it but that constant.")
    values.name = column
    values.index.name = INDEX_NAME
    return values, [str(s) for s in raw.index[missing]]


def categorical_target(md, column):
    """A metadata column as class labels (strings).

    Parameters
    ----------
    md : pandas.DataFrame
        Metadata from `load_metadata` (possibly subset with `select_samples`).
    column : str
        The column to use.

    Returns
    -------
    labels : pandas.Series
        str labels indexed by sample ID, for the samples that have a value. Numeric-looking values keep
        their text (``'1'``, ``'2'``); whole-number floats from a DataFrame are written without ``.0`` so
        they match what the same values read from a file would give.
    dropped : list of str
        Samples without a value (empty or NA), in `md` order.

    Raises
    ------
    AAMInputError
        If the column does not exist.
    """
    raw = _column(md, column)
    missing = raw.isna()
    labels = raw[~missing].map(as_label).astype(object)
    counts = labels.value_counts()
    single = sorted(str(c) for c in counts.index[counts == 1])
    if single:
        warn(f"metadata column {column!r}: class(es) {preview(single)} have a single sample; such a class cannot be "
             "both learned and validated, and its predictions rest on one example. Add samples or merge classes.")
    labels.name = column
    labels.index.name = INDEX_NAME
    return labels, [str(s) for s in raw.index[missing]]


def as_label(value):
    """The string label of a non-missing metadata value.

    Shared with the categorical encoder so a value is spelled the same way at fit and at transform time.

    Parameters
    ----------
    value : object

    Returns
    -------
    str
    """
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        # 3.0 from a numeric DataFrame column means the category '3' of a TSV file
        return str(int(value))
    return str(value).strip()


def _column(md, column):
    if column not in md.columns:
        raise AAMInputError(f"metadata has no column {column!r}; available columns: "
                            f"{preview(md.columns, 10)}. Check the spelling (names are case-sensitive).")
    return md[column]
