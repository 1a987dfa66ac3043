"""Numeric covariates: metadata columns (age, BMI, ...) given to the model as numbers beside its reads.

Each column is centred on its training median and divided by its training standard deviation (1 when it does
not vary). A missing value is replaced by the training median (0 after centring), the same at fit and at
predict time; when some training samples lacked a value, a second input (1 = missing) lets the model learn what a
missing value means. A column every training sample had gets no such input: a model cannot learn from a
constant, so a value missing at prediction time is read as the training median alone. The fitted encoder is
plain JSON stored in the model record, so prediction scales new samples exactly as training did.
"""
from dataclasses import dataclass
from typing import List

import numpy as np
import pandas as pd

from aam.errors import AAMInputError, preview


@dataclass(frozen=True)
class NumericColumn:
    """One encoded column: its training median and scale, and whether it has a missing-value input."""

    name: str
    center: float
    scale: float
    indicator: bool

    @property
    def width(self):
        return 2 if self.indicator else 1


def _values(md, column, where):
    """The column as floats (NaN where missing); text that is not a number is refused, naming a sample."""
    if column not in md.columns:
        raise AAMInputError(f"{where}: the metadata has no column {column!r}; available columns: "
                            f"{preview(md.columns, 10)}. Names are case-sensitive.")
    raw = md[column]
    values = pd.to_numeric(raw.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    bad = raw.index[values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")]
    if len(bad):
        raise AAMInputError(f"{where}: column {column!r} is not numeric (sample {bad[0]!r} has {raw[bad[0]]!r}); "
                            "pass categorical columns as categorical covariates.")
    infinite = values.index[np.isinf(values.to_numpy(dtype=float))]
    if len(infinite):
        raise AAMInputError(f"{where}: column {column!r} holds infinite values (samples {preview(infinite)}).")
    return values.astype(float)


@dataclass(frozen=True)
class NumericEncoder:
    """Numeric covariates -> model inputs [N, width] (float32), fitted on the training samples."""

    columns: List[NumericColumn]

    @classmethod
    def fit(cls, md, names, where="{opt:numeric_columns}"):
        """Fit on the training samples' metadata `md` (rows: training samples only)."""
        columns = []
        for name in names:
            values = _values(md, name, where)
            seen = values.dropna()
            if seen.empty:
                raise AAMInputError(f"{where}: no training sample has a value for {name!r}; fill it in or drop "
                                    "the column.")
            spread = float(seen.std(ddof=0))
            columns.append(NumericColumn(name, float(seen.median()), spread if spread > 0 else 1.0,
                                         bool(values.isna().any())))
        return cls(columns)

    @property
    def names(self):
        return [c.name for c in self.columns]

    @property
    def width(self):
        """Inputs per sample: one per column, plus one per column with a missing-value input."""
        return sum(c.width for c in self.columns)

    def transform(self, md, where="{opt:numeric_columns}"):
        """[N, width] float32 inputs of the samples of `md`, in its row order (missing values as at fit)."""
        parts = []
        for column in self.columns:
            if column.name in md.columns:
                values = _values(md, column.name, where).to_numpy()
            else:
                values = np.full(len(md), np.nan)
            missing = np.isnan(values)
            parts.append(np.where(missing, 0.0, (values - column.center) / column.scale))
            if column.indicator:
                parts.append(missing.astype(float))
        if not parts:
            return np.zeros((len(md), 0), dtype=np.float32)
        return np.stack(parts, axis=1).astype(np.float32)

    def to_dict(self):
        return {"columns": [{"name": c.name, "center": c.center, "scale": c.scale, "indicator": c.indicator}
                            for c in self.columns]}

    @classmethod
    def from_dict(cls, d):
        try:
            columns = [NumericColumn(str(c["name"]), float(c["center"]), float(c["scale"]), bool(c["indicator"]))
                       for c in d["columns"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AAMInputError(f"malformed numeric covariate description ({exc}); the model file may be damaged, "
                                "retrain or use another model.") from exc
        if not all(np.isfinite(c.center) and np.isfinite(c.scale) and c.scale > 0 for c in columns):
            raise AAMInputError("a numeric covariate's stored centre or scale is not a finite positive number; the "
                                "model file was altered.")
        return cls(columns)
