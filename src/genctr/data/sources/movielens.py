"""MovieLens (ml-latest-small layout) -> canonical events.

Every rating is an impression; a rating >= 4 is a click. The category is the movie's genre
combination ("combo", ~950 values) or its first listed genre ("first", ~20 values). With the
behaviour log on, every rating is also a behaviour (event_type "rating"): sequences then hold
every movie a user rated, not only the clicked ones; the impressions are the same either way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genctr.data.behaviours import conform_behaviours
from genctr.data.schema import conform_events
from genctr.errors import DataValidationError

CLICK_THRESHOLD = 4.0
EVENT_TYPE = "rating"  # the behaviour-log type of every rating


def bundled_path() -> Path:
    """The MovieLens copy shipped with the repository (``datasets/movielens-latest-small``)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "datasets" / "movielens-latest-small"
        if (candidate / "ratings.csv").exists():
            return candidate
    raise DataValidationError("bundled MovieLens data not found; pass data.path explicitly")


def category_ids(genres: pd.Series, how: str) -> pd.Series:
    """Map genre strings to stable integer ids (sorted distinct values, starting at 1)."""
    key = genres.str.split("|").str[0] if how == "first" else genres
    codes, _ = pd.factorize(key, sort=True)
    return pd.Series(codes.astype("int64") + 1, index=genres.index)


def load_movielens(path: str | Path | None = None, category: str = "combo") -> pd.DataFrame:
    """Canonical events of the MovieLens copy at ``path`` (default: the bundled one)."""
    return movielens_source(path, category)[0]


def movielens_source(path: str | Path | None = None, category: str = "combo",
                     behaviour_log: bool = False) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(events, log)``: the log (every rating, ``genctr.data.behaviours``) only with ``behaviour_log``."""
    df = _ratings(Path(path) if path else bundled_path(), category)
    events = pd.DataFrame(
        {
            "request_id": np.arange(len(df), dtype="int64"),
            "user_id": df["userId"],
            "item_id": df["movieId"],
            "category_id": df["category_id"].astype("int64"),
            "event_time": df["timestamp"],
            "clicked": (df["rating"] >= CLICK_THRESHOLD).astype("int8"),
            "price": np.ones(len(df)),
        }
    )
    events = conform_events(events, source="movielens")
    if not behaviour_log:
        return events, None
    log = pd.DataFrame({"user_id": df["userId"], "item_id": df["movieId"],
                        "category_id": df["category_id"].astype("int64"), "event_time": df["timestamp"],
                        "event_type": EVENT_TYPE})
    return events, conform_behaviours(log, source="movielens")


def _ratings(root: Path, category: str) -> pd.DataFrame:
    """ratings.csv joined with each movie's category id (0 for a movie missing from movies.csv)."""
    ratings_f, movies_f = root / "ratings.csv", root / "movies.csv"
    for f in (ratings_f, movies_f):
        if not f.exists():
            raise DataValidationError(f"MovieLens: {f} not found (expected ratings.csv and movies.csv)")
    ratings = pd.read_csv(ratings_f)
    movies = pd.read_csv(movies_f)
    for need, frame, name in (
        ({"userId", "movieId", "rating", "timestamp"}, ratings, "ratings.csv"),
        ({"movieId", "genres"}, movies, "movies.csv"),
    ):
        if not need <= set(frame.columns):
            raise DataValidationError(f"MovieLens: {name} lacks columns {sorted(need - set(frame.columns))}")
    movies = movies.assign(category_id=category_ids(movies["genres"].fillna("(no genres listed)"), category))
    df = ratings.merge(movies[["movieId", "category_id"]], on="movieId", how="left")
    if df["category_id"].isna().any():
        df["category_id"] = df["category_id"].fillna(0)
    return df
