"""Calibrations: a fitted confidence map and threshold per taxonomy and tier (docsort calibrate)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from store.models import Calibration


def latest_calibration(*, session: Session, taxonomy: str, tier: str) -> Calibration | None:
    """The newest calibration for a taxonomy and tier."""
    query = (
        select(Calibration)
        .where(Calibration.taxonomy == taxonomy, col(Calibration.tier) == tier)
        .order_by(col(Calibration.id).desc())
        .limit(1)
    )
    return session.exec(query).first()


def add_calibration(*, session: Session, calibration: Calibration) -> Calibration:
    """Store a calibration; workers use the newest one for its taxonomy and tier from then on."""
    session.add(calibration)
    session.flush()
    return calibration
