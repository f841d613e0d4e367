"""How offending input values are echoed back in error messages: short, as the user wrote them."""
from __future__ import annotations

import numpy as np
import pandas as pd

from genctr.errors import describe

MAX_SHOWN = 40  # characters of one value's repr; three examples stay well under 200 characters
N_EXAMPLES = 3


def show(value: object) -> str:
    """A value as the user wrote it (numpy scalars as plain Python values), cut to ``MAX_SHOWN``."""
    return describe(value, MAX_SHOWN)


def row_examples(col: pd.Series, bad: np.ndarray | pd.Series) -> str:
    """``row 5: 369.5; row 9: 'x'`` for the first offending rows (positions from 0, as read)."""
    rows = np.flatnonzero(np.asarray(bad, dtype=bool))[:N_EXAMPLES]
    return "; ".join(f"row {int(i)}: {show(col.iloc[int(i)])}" for i in rows)
