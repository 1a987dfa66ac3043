"""Categorical covariates: metadata columns encoded as integer indices for embedding layers.

Index 0 of every column is reserved for "unknown": missing values, and categories never seen while fitting
(a new site or batch at prediction time). The encoder is fitted on the training samples only, so validation
samples with a category absent from training are treated exactly as unseen samples would be later. The
fitted encoder is plain JSON (`to_dict` / `from_dict`) and is stored in the model checkpoint, so prediction
uses the same category -> index mapping as training.
"""
import warnings
from dataclasses import dataclass, field

import numpy as np

from aam.data.metadata import as_label
from aam.errors import AAMInputError, preview

#: Index of missing and unseen categories in every column.
UNKNOWN = 0


@dataclass
class CategoricalColumnConfig:
    """One encoded column.

    Parameters
    ----------
    name : str
        Metadata column name.
    categories : list of str
        Known categories in index order; ``categories[i]`` is encoded as ``i + 1``.
    embed_dim : int, optional
        Embedding width for this column; None lets the model choose.
    """

    name: str
    categories: list = field(default_factory=list)
    embed_dim: int = None

    @property
    def cardinality(self):
        """Number of indices the embedding needs: the categories plus the unknown index 0."""
        return len(self.categories) + 1

    def to_dict(self):
        return {"name": self.name, "categories": list(self.categories), "embed_dim": self.embed_dim}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(name=str(d["name"]), categories=[str(c) for c in d["categories"]],
                       embed_dim=None if d.get("embed_dim") is None else int(d["embed_dim"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AAMInputError(f"malformed categorical column description {d!r} ({exc}); the model "
                                "checkpoint may be damaged, retrain or use another model.") from exc


@dataclass
class CategoricalSchema:
    """The encoded columns, in the order of the encoder's output columns.

    Parameters
    ----------
    columns : list of CategoricalColumnConfig
    """

    columns: list = field(default_factory=list)

    @property
    def names(self):
        """Column names in output order."""
        return [c.name for c in self.columns]

    def cardinalities(self):
        """Embedding sizes by column name, in output order.

        Returns
        -------
        dict of str to int
        """
        return {c.name: c.cardinality for c in self.columns}

    def to_dict(self):
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict) or not isinstance(d.get("columns"), list):
            raise AAMInputError(f"malformed categorical schema {d!r}: expected {{'columns': [...]}}; the model "
                                "checkpoint may be damaged, retrain or use another model.")
        return cls(columns=[CategoricalColumnConfig.from_dict(c) for c in d["columns"]])


class CategoricalEncoder:
    """Encode metadata columns as int64 indices, 0 for missing or unseen values.

    Examples
    --------
    >>> import pandas as pd
    >>> md = pd.DataFrame({"site": ["gut", "palm", None]}, index=["a", "b", "c"])
    >>> enc = CategoricalEncoder().fit(md, ["site"])
    >>> enc.transform(md).ravel().tolist()
    [1, 2, 0]
    >>> enc.get_cardinalities()
    {'site': 3}
    """

    def __init__(self):
        self._schema = None
        self._index = None  # per column: category -> index, rebuilt from the schema

    # ------------------------------------------------------------------------------------------- fitting

    def fit(self, md, columns, embed_dims=None):
        """Learn the categories of `columns` from `md` (the training samples only).

        Parameters
        ----------
        md : pandas.DataFrame
            Metadata of the training samples.
        columns : list of str
            Columns to encode, in output order.
        embed_dims : dict of str to int, optional
            Embedding width per column, stored in the schema for the model.

        Returns
        -------
        CategoricalEncoder
            self

        Raises
        ------
        AAMInputError
            If a column is absent from `md`, listed twice, or has no value in any training sample.
        """
        columns = [columns] if isinstance(columns, str) else list(columns)
        if not columns:
            raise AAMInputError("no categorical columns given; name at least one metadata column.")
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise AAMInputError(f"categorical column(s) {preview(repeated)} are listed more than once; list "
                                "each column once.")
        absent = [c for c in columns if c not in md.columns]
        if absent:
            raise AAMInputError(f"categorical column(s) {preview(absent)} are not in the metadata; available "
                                f"columns: {preview(md.columns, 10)}.")
        embed_dims = embed_dims or {}
        configs = []
        for name in columns:
            categories = _categories(md[name])
            if not categories:
                raise AAMInputError(f"categorical column {name!r} has no values in the {len(md)} training "
                                    "sample(s); fill it in or drop it from the categorical columns.")
            configs.append(CategoricalColumnConfig(name, categories, embed_dims.get(name)))
        self._set_schema(CategoricalSchema(configs))
        return self

    def transform(self, md):
        """Encode the rows of `md`.

        Parameters
        ----------
        md : pandas.DataFrame
            Metadata of the samples to encode, rows in the wanted order.

        Returns
        -------
        numpy.ndarray
            int64, shape ``(len(md), n_columns)``, columns in fitted order; 0 marks missing or unseen values.
            A fitted column absent from `md` is encoded as all 0, with a warning.

        Raises
        ------
        AAMInputError
            If the encoder is not fitted.
        """
        self._check_fitted()
        out = np.full((len(md), len(self._schema.columns)), UNKNOWN, dtype=np.int64)
        for j, col in enumerate(self._schema.columns):
            if col.name not in md.columns:
                # prediction metadata may lack a covariate; unknown is what the model saw for missing values
                warnings.warn(f"categorical column {col.name!r} is not in the metadata; all samples are "
                              "encoded as unknown for it", stacklevel=2)
                continue
            out[:, j] = _encode(md[col.name], self._index[j])
        return out

    def fit_transform(self, md, columns, embed_dims=None):
        """`fit` then `transform` the same rows.

        Returns
        -------
        numpy.ndarray
        """
        return self.fit(md, columns, embed_dims).transform(md)

    # ------------------------------------------------------------------------------------------- inspection

    @property
    def is_fitted(self):
        return self._schema is not None

    @property
    def schema(self):
        """CategoricalSchema"""
        self._check_fitted()
        return self._schema

    @property
    def columns(self):
        """Encoded column names in output order (list of str)."""
        return self.schema.names

    def get_cardinalities(self):
        """Embedding sizes by column name (categories + 1 for unknown), in output order.

        Returns
        -------
        dict of str to int
        """
        return self.schema.cardinalities()

    # ------------------------------------------------------------------------------------------- JSON

    def to_dict(self):
        """JSON-serializable description of the fitted encoder.

        Returns
        -------
        dict
        """
        return self.schema.to_dict()

    @classmethod
    def from_dict(cls, d):
        """Rebuild an encoder written by `to_dict`.

        Parameters
        ----------
        d : dict

        Returns
        -------
        CategoricalEncoder
        """
        enc = cls()
        enc._set_schema(CategoricalSchema.from_dict(d))
        return enc

    # ------------------------------------------------------------------------------------------- helpers

    def _set_schema(self, schema):
        self._schema = schema
        self._index = [{c: i + 1 for i, c in enumerate(col.categories)} for col in schema.columns]

    def _check_fitted(self):
        if self._schema is None:
            raise AAMInputError("the categorical encoder is not fitted; call fit() on the training metadata "
                                "(or load it with from_dict()) before transform().")

    def __repr__(self):
        if self._schema is None:
            return "CategoricalEncoder(unfitted)"
        return f"CategoricalEncoder({self.get_cardinalities()})"


def _categories(values):
    """Sorted distinct labels of the non-missing values; sorted so the mapping does not depend on row order."""
    return sorted({as_label(v) for v in values.to_numpy()[values.notna().to_numpy()]})


def _encode(values, index):
    """Indices of `values` under `index`, 0 for missing or unseen."""
    codes = np.full(len(values), UNKNOWN, dtype=np.int64)
    present = values.notna().to_numpy()
    codes[present] = [index.get(as_label(v), UNKNOWN) for v in values.to_numpy()[present]]
    return codes
