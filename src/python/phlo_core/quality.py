"""Data quality at ingestion: split a batch into rows a Pandera schema accepts and rows it
rejects, each rejected row carrying its reasons, so bad rows are kept for inspection instead of
failing or silently vanishing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors


class BatchRejectedError(ValueError):
    """The batch as a whole does not fit the schema (a missing column, a wrong type)."""


@dataclass(frozen=True)
class ValidationSplit:
    valid: pd.DataFrame
    rejected: pd.DataFrame  # the rejected rows plus a `reason` column


def split_by_schema(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> ValidationSplit:
    try:
        valid = schema.validate(frame, lazy=True)
        return ValidationSplit(
            valid=valid, rejected=frame.iloc[0:0].assign(reason=pd.Series(dtype="str"))
        )
    except SchemaErrors as errors:
        cases = errors.failure_cases
    row_cases = cases[cases["index"].notna()]
    if len(row_cases) < len(cases):
        whole = cases[cases["index"].isna()].iloc[0]
        raise BatchRejectedError(
            f"batch does not fit schema {schema.name}: {whole['column']}: {whole['check']}"
        ) from None
    reasons: dict[object, set[str]] = {}
    for case in row_cases.itertuples(index=False):
        reason = f"{case.column}: {case.check} (got {case.failure_case!r})"
        reasons.setdefault(case.index, set()).add(reason)
    bad_index = pd.Index(list(reasons), dtype=frame.index.dtype)
    rejected = frame.loc[bad_index].assign(reason=["; ".join(sorted(reasons[i])) for i in reasons])
    valid = schema.validate(frame.drop(index=bad_index), lazy=True)
    return ValidationSplit(valid=valid, rejected=rejected)


# pandas dtypes for the lakehouse's column types: nullable where the column may hold nulls.
_DTYPES = {
    "bigint": "Int64",
    "integer": "Int64",
    "double": "float64",
    "varchar": "str",
    "date": "object",
    "timestamptz": "datetime64[us, UTC]",
}


def typed_frame(records: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """Records as a frame with one column per entry of `columns` (name -> lakehouse type), each
    of the matching pandas dtype; a name a record lacks is null there."""
    return pd.DataFrame(
        {
            name: pd.Series([record.get(name) for record in records], dtype=_DTYPES[kind])
            for name, kind in columns.items()
        }
    )
