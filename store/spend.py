"""Daily spend per scope ("*": every taxonomy; or one taxonomy's name), with reservations for caps.

A request reserves its most possible cost in one guarded UPDATE per scope (`spent + reserved + amount
<= cap`), in the transaction that writes it down; its answer settles the reservation into spent. Rows
of a UTC day are created on first use from what the ledger already holds for that day, so turning a
cap on mid-day counts the spend before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from core.vocab import RequestState
from store.db import insert_or_skip
from store.models import ModelRequest, SpendDay

ALL = "*"


def today() -> date:
    """The current UTC day."""
    return datetime.now(UTC).date()


def _ensure(session: Session, day: date, scope: str) -> None:
    """The day's row for scope, created from the ledger's spend on that day if missing."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    query = select(func.coalesce(func.sum(ModelRequest.cost_nanousd), 0)).where(
        col(ModelRequest.created_at) >= start,
        col(ModelRequest.state).in_([RequestState.answered, RequestState.unanswered]),
    )
    if scope != ALL:
        query = query.where(col(ModelRequest.taxonomy) == scope)
    spent = int(session.exec(query).one())
    values = {"day": day, "scope": scope, "spent_nanousd": spent, "reserved_nanousd": 0}
    session.execute(insert_or_skip(session, SpendDay).values(values))


def reserve(*, session: Session, day: date, caps: Mapping[str, int], amount: int) -> str | None:
    """Reserve amount under every scope's cap (nano-USD) for day: all or none; the scope that refused,
    or None."""
    reserved: list[str] = []
    for scope, cap in sorted(caps.items()):
        _ensure(session, day, scope)
        moved = session.execute(
            update(SpendDay)
            .where(
                col(SpendDay.day) == day,
                col(SpendDay.scope) == scope,
                col(SpendDay.spent_nanousd) + col(SpendDay.reserved_nanousd) + amount <= cap,
            )
            .values(reserved_nanousd=col(SpendDay.reserved_nanousd) + amount)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            settle(session=session, day=day, scopes=reserved, reserved=amount, spent=0)  # undone
            return scope
        reserved.append(scope)
    return None


def settle(*, session: Session, day: date, scopes: list[str], reserved: int, spent: int) -> None:
    """Turn a reservation into what was spent (0 for an error answer)."""
    for scope in scopes:
        _ensure(session, day, scope)
        session.execute(
            update(SpendDay)
            .where(col(SpendDay.day) == day, col(SpendDay.scope) == scope)
            .values(
                reserved_nanousd=func.max(col(SpendDay.reserved_nanousd) - reserved, 0)
                if session.get_bind().dialect.name == "sqlite"
                else func.greatest(col(SpendDay.reserved_nanousd) - reserved, 0),
                spent_nanousd=col(SpendDay.spent_nanousd) + spent,
            )
        )


def add_spent(*, session: Session, day: date, scopes: list[str], amount: int) -> None:
    """Correct what a day spent (a late answer replacing the estimate it was counted at)."""
    settle(session=session, day=day, scopes=scopes, reserved=0, spent=amount)


def state(*, session: Session, day: date) -> dict[str, dict[str, int]]:
    """Each scope's spent and reserved nano-USD on day."""
    rows = session.exec(select(SpendDay).where(col(SpendDay.day) == day))
    return {r.scope: {"spent_nanousd": r.spent_nanousd, "reserved_nanousd": r.reserved_nanousd} for r in rows}
