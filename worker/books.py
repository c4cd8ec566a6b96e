"""The workers' ledger: every model request in the database, written before it is sent.

`before` writes the request down, reserves its most possible cost under the day's spending caps (all
taxonomies, and its own) and renews the claim of its documents, in one transaction: a cap that leaves
no room raises SpendCapReached and nothing is sent. `answered` records the usage, the cost and every
document's attempt, and settles the reservation; `failed` settles an error answer at nothing and a
missing answer at its estimate. The reconciler settles requests whose worker died (`sweep`).

A classify task's ledger defers its answers (`defer_answers`): an answer is written in the transaction
of the task's next write (the next request's `before`, a `failed`, or the task's record through
`flush(session)`), which comes as soon as the answer is parsed. On PostgreSQL each commit waits for
a WAL flush, and a task of four requests commits six times instead of ten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from classifiers.decision import AttemptRecord, PlannedRequest
from classifiers.providers import Completion
from core.config import Settings
from core.errors import ModelError, SpendCapReached
from core.vocab import Purpose, RequestState
from store import requests, spend
from store.db import session_scope
from store.models import NANO, utcnow

log = logging.getLogger("docsort.books")


def caps_for(settings: Settings, taxonomy: str) -> dict[str, int]:
    """The day's caps (nano-USD) that a request of taxonomy reserves under, by scope."""
    caps: dict[str, int] = {}
    if settings.spend.daily_cap_usd is not None:
        caps[spend.ALL] = round(settings.spend.daily_cap_usd * NANO)
    own = settings.spend.per_taxonomy_daily_cap_usd.get(taxonomy)
    if own is not None:
        caps[taxonomy] = round(own * NANO)
    return caps


def _scopes(taxonomy: str) -> list[str]:
    return [spend.ALL, taxonomy]


@dataclass
class DatabaseLedger:
    """The books of one task's requests for one taxonomy."""

    engine: Engine
    settings: Settings
    taxonomy: str
    claim_token: str | None = None
    purpose: Purpose | None = None  # audit: every request and attempt of this task is an audit's
    # When the documents' claims were taken or last renewed (time.monotonic(); None: unknown). A claim
    # renewed less than half the lease grace ago outlives the next request (at most its timeout_s),
    # so `before` renews only older ones: a task's back-to-back requests write their rows once.
    renewed_at: float | None = None
    # Answers wait for the task's next write instead of a commit of their own (see the module's doc).
    defer_answers: bool = False
    _owed: list[Callable[[Session], None]] = field(default_factory=list)

    def flush(self, session: Session | None = None) -> None:
        """Write the answers still owed: in session (the caller commits), else in a transaction now."""
        if not self._owed:
            return
        if session is None:
            with session_scope(self.engine) as own:
                self.flush(own)
            return
        owed, self._owed = self._owed, []
        for write in owed:
            write(session)

    def _renewal_due(self) -> bool:
        if self.renewed_at is None:
            return True
        return time.monotonic() - self.renewed_at >= self.settings.worker.lease_grace_s / 2

    def before(self, request: PlannedRequest) -> None:
        if self.purpose is not None:
            request = replace(request, purpose=self.purpose)
        caps = caps_for(self.settings, self.taxonomy) if request.reserve_nanousd else {}
        day = spend.today() if caps else None
        refused: str | None = None
        with session_scope(self.engine) as session:
            self.flush(session)  # first: an answer's settlement frees room under the caps
            if day is not None:  # all scopes or none: a refusal commits the answers owed, no more
                refused = spend.reserve(session=session, day=day, caps=caps, amount=request.reserve_nanousd)
            if refused is None:
                requests.add(
                    session=session,
                    request=request,
                    taxonomy=self.taxonomy,
                    claim_token=self.claim_token,
                    reserved_day=day,
                )
                if self.claim_token and self._renewal_due():
                    renewing = time.monotonic()  # taken before the rows' timestamp: errs early
                    requests.touch_claims(session=session, doc_ids=request.doc_ids, token=self.claim_token)
                    self.renewed_at = renewing
        if refused is not None:
            whose = "" if refused == spend.ALL else f" for {refused}"
            raise SpendCapReached(f"waiting: daily spending cap ${caps[refused] / NANO:.2f}{whose} reached")

    def answered(
        self,
        request: PlannedRequest,
        completion: Completion,
        cost_nanousd: int,
        attempts: list[AttemptRecord],
    ) -> None:
        if self.purpose is not None:
            for attempt in attempts:
                attempt.purpose = self.purpose

        def write(session: Session) -> None:
            was = requests.answer(
                session=session,
                request_id=request.id,
                input_tokens=completion.usage.input_tokens,
                cached_tokens=completion.usage.cached_tokens,
                output_tokens=completion.usage.output_tokens,
                cost_nanousd=cost_nanousd,
                provider_request_id=completion.request_id,
                attempts=attempts,
            )
            if was is None or was.reserved_day is None:
                return
            if was.was is RequestState.sent:
                spend.settle(
                    session=session,
                    day=was.reserved_day,
                    scopes=_scopes(was.taxonomy),
                    reserved=was.reserve_nanousd,
                    spent=cost_nanousd,
                )
            else:  # swept as unanswered (counted at its estimate, reservation released): correct it
                spend.add_spent(
                    session=session,
                    day=was.reserved_day,
                    scopes=_scopes(was.taxonomy),
                    amount=cost_nanousd - was.estimate_nanousd,
                )

        self._owed.append(write)
        if not self.defer_answers:
            self.flush()

    def failed(self, request: PlannedRequest, error: ModelError) -> None:
        with session_scope(self.engine) as session:
            self.flush(session)
            was = requests.fail(
                session=session, request_id=request.id, error=str(error), unanswered=error.unanswered
            )
            if was is not None and was.reserved_day is not None:
                spend.settle(
                    session=session,
                    day=was.reserved_day,
                    scopes=_scopes(was.taxonomy),
                    reserved=was.reserve_nanousd,
                    spent=was.estimate_nanousd if error.unanswered else 0,
                )


def flush_all(ledgers: Iterable[DatabaseLedger], session: Session | None = None) -> None:
    """Write every answer the ledgers still owe (in session, if given)."""
    for ledger in ledgers:
        ledger.flush(session)


def sweep(engine: Engine, settings: Settings) -> int:
    """Settle requests still `sent` past their tier's timeout and lease grace: counted unanswered."""
    grace = timedelta(seconds=settings.worker.lease_grace_s)
    cutoffs = {t.name: utcnow() - timedelta(seconds=t.timeout_s) - grace for t in settings.llm_tiers}
    with session_scope(engine) as session:
        rows = requests.overdue(session=session, cutoffs=cutoffs)
    for row in rows:
        with session_scope(engine) as session:
            was = requests.fail(
                session=session, request_id=row.id, error="no answer: its worker stopped", unanswered=True
            )
            if was is not None and was.reserved_day is not None:
                spend.settle(
                    session=session,
                    day=was.reserved_day,
                    scopes=_scopes(was.taxonomy),
                    reserved=was.reserve_nanousd,
                    spent=was.estimate_nanousd,
                )
    if rows:
        log.warning(
            "requests without an answer counted at their estimate", extra={"ids": [r.id for r in rows]}
        )
    return len(rows)
