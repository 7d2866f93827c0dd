"""Keyset pagination and the taken-date filter, as statement fragments shared by listing and search."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from services.catalog.models import ImageRow

# When a photo was taken: its EXIF date, else its upload time (so every image sorts somewhere).
TAKEN = sql.SQL("coalesce(i.taken_at, i.created_at)")
_TAKEN_AFTER = sql.SQL("{} >= %(taken_after)s").format(TAKEN)
_TAKEN_BEFORE = sql.SQL("{} < %(taken_before)s").format(TAKEN)


@dataclass(frozen=True)
class TakenFilter:
    """Taken-date bounds ([after, before)) and order ("" keeps the default order)."""

    after: datetime | None = None
    before: datetime | None = None
    # "newest" or "oldest" first by taken date; "" for the default order.
    order: str = ""

    def conditions(self, params: dict[str, Any]) -> list[sql.Composable]:
        found: list[sql.Composable] = []
        if self.after is not None:
            found.append(_TAKEN_AFTER)
            params["taken_after"] = self.after
        if self.before is not None:
            found.append(_TAKEN_BEFORE)
            params["taken_before"] = self.before
        return found

    @property
    def needs_image(self) -> bool:
        return bool(self.after or self.before or self.order)


# No bounds, default order.
ANY_TIME = TakenFilter()


def taken_key(row: ImageRow) -> str:
    return (row.taken_at or row.created_at).isoformat()


def _direction(order: str) -> tuple[str, str]:
    """(SQL direction, keyset comparison) of an order: descending unless oldest first."""
    return ("ASC", ">") if order == "oldest" else ("DESC", "<")


def order_by(key: Sequence[sql.Composable], order: str) -> sql.Composable:
    direction = sql.SQL(_direction(order)[0])
    return sql.SQL(", ").join(sql.SQL("{} {}").format(part, direction) for part in key)


def after(key: Sequence[sql.Composable], cursor: Sequence[Any], order: str, params: dict[str, Any]) -> sql.Composable:
    """The keyset condition: rows strictly after `cursor` in this order."""
    casts = ["real", "bigint"] if not order and len(key) == 2 else ["timestamptz", "bigint"]
    casts = casts[-len(key) :]
    values = []
    for index, (value, cast) in enumerate(zip(cursor, casts, strict=True)):
        params[f"c{index}"] = value
        values.append(sql.SQL("{}::{}").format(sql.Placeholder(f"c{index}"), sql.SQL(cast)))
    return sql.SQL("({}) {} ({})").format(
        sql.SQL(", ").join(key), sql.SQL(_direction(order)[1]), sql.SQL(", ").join(values)
    )
