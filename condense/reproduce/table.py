"""The paper's values as a table: the shipped copy (package data) and user tables, validated.

One row per value read off the paper's figures (by eye, about +-0.03). Columns
(:data:`TABLE_COLUMNS`): ``id`` (unique, e.g. ``gpt2-xl@wikipedia``), ``family``, ``model`` (exact
hub id; empty where the paper's model is not on the hub), ``revision`` (empty: the default branch),
``size``, ``dataset`` (a ``--corpus`` preset: ``wikipedia`` = WikiText-103, ``pubmed``, ``imdb``,
``squad``), ``convention`` (``paper``), ``num_texts`` (100), ``max_length`` (512), ``init``
(``pretrained``, or ``random`` for a checkpoint at initialisation), ``spearman``, ``kendall`` (empty
where the paper gives none), ``read_tolerance`` (0.03), ``finding`` (1-5 of PAPER.md), ``source``
(the figure), ``auto_match`` (false: compared only when a run is paired with the row by hand) and
``note``. A user table needs ``id``, ``model``, ``dataset`` and ``spearman``; the rest default.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd

from condense.errors import CondenseError

__all__ = ["TABLE_COLUMNS", "REQUIRED_COLUMNS", "SHIPPED_TABLE", "paper_table", "read_table"]

TABLE_COLUMNS = ("id", "family", "model", "revision", "size", "dataset", "convention", "num_texts", "max_length",
                 "init", "spearman", "kendall", "read_tolerance", "finding", "source", "auto_match", "note")
REQUIRED_COLUMNS = ("id", "model", "dataset", "spearman")
SHIPPED_TABLE = "paper_values.csv"
_DEFAULTS = {"family": "", "revision": "", "size": "", "convention": "paper", "num_texts": 100, "max_length": 512,
             "init": "pretrained", "kendall": "", "read_tolerance": 0.03, "finding": "", "source": "",
             "auto_match": "true", "note": ""}
_TRUE, _FALSE = ("true", "yes", "1", ""), ("false", "no", "0")


def paper_table() -> pd.DataFrame:
    """The paper's values shipped with condense (``condense/reproduce/paper_values.csv``), validated."""
    with resources.as_file(resources.files("condense.reproduce") / SHIPPED_TABLE) as path:
        return read_table(path)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read and validate a CSV table of paper values (columns as the shipped one, see the module doc).

    Returns a DataFrame with every column of :data:`TABLE_COLUMNS` (missing optional ones filled
    with their defaults), ``spearman``/``kendall`` as floats (``kendall`` NaN where absent) and
    ``auto_match`` as bool. CondenseError (one line naming the file, row and value) when it is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise CondenseError(f"table {str(path)!r} is not a file; give a CSV with columns {', '.join(REQUIRED_COLUMNS)}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise CondenseError(f"cannot read table {str(path)!r} as CSV ({type(err).__name__}: {_first_line(err)})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise CondenseError(f"table {str(path)!r} lacks column(s) {', '.join(missing)}; "
                            f"it needs {', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(_DEFAULTS)})")
    if raw.empty:
        raise CondenseError(f"table {str(path)!r} has no rows")
    table = raw.assign(**{c: str(v) for c, v in _DEFAULTS.items() if c not in raw.columns})
    table = table[list(TABLE_COLUMNS)].apply(lambda col: col.str.strip())

    def where(n: int) -> str:
        return f"table {str(path)!r} row {n + 2}"  # row 1 of the file is the header

    for n, row in table.iterrows():
        if not row["id"]:
            raise CondenseError(f"{where(n)} has an empty id; give every row a unique id such as gpt2@wikipedia")
        if not row["dataset"]:
            raise CondenseError(f"{where(n)} ({row['id']}) has an empty dataset; give a corpus preset such as wikipedia")
    duplicated = table["id"][table["id"].duplicated()]
    if len(duplicated):
        raise CondenseError(f"table {str(path)!r} lists id {duplicated.iloc[0]!r} twice; ids must be unique")
    out = table.copy()
    out["spearman"] = [_correlation(v, "spearman", where(n), required=True) for n, v in table["spearman"].items()]
    out["kendall"] = [_correlation(v, "kendall", where(n), required=False) for n, v in table["kendall"].items()]
    out["read_tolerance"] = [_number(v, "read_tolerance", where(n), minimum=0.0) for n, v in table["read_tolerance"].items()]
    for col in ("num_texts", "max_length"):
        out[col] = [int(_number(v, col, where(n), minimum=1.0, integer=True)) for n, v in table[col].items()]
    out["auto_match"] = [_flag(v, where(n)) for n, v in table["auto_match"].items()]
    for n, value in table["convention"].items():
        if value not in ("paper", "pooled"):
            raise CondenseError(f"{where(n)}: bad convention {value!r}; use paper or pooled")
    for n, value in table["init"].items():
        if value not in ("pretrained", "random"):
            raise CondenseError(f"{where(n)}: bad init {value!r}; use pretrained or random")
    return out.reset_index(drop=True)


def _correlation(text: str, column: str, where: str, required: bool) -> float:
    if not text:
        if required:
            raise CondenseError(f"{where}: empty {column}; give a number in [-1, 1]")
        return math.nan
    value = _number(text, column, where)
    if not -1.0 <= value <= 1.0:
        raise CondenseError(f"{where}: {column} {text!r} is outside [-1, 1]")
    return value


def _number(text: str, column: str, where: str, minimum: float | None = None, integer: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CondenseError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or (minimum is not None and value < minimum) or (integer and value != int(value)):
        kind = "an integer" if integer else "a finite number"
        raise CondenseError(f"{where}: bad {column} {text!r}; give {kind}" + (f" >= {minimum:g}" if minimum is not None else ""))
    return value


def _flag(text: str, where: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise CondenseError(f"{where}: bad auto_match {text!r}; use true or false")


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:200]
