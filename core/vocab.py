"""docsort's vocabulary: one string enum per concept, and the one mapping between them.

A document has a `Status` (where it is in its life) and a `current_tier` (the tier it waits for or is
being classified by); once answered, `answered_by` names the tier whose answer is its label. A tier's
pass over a document ends in an `Outcome`, which is also what each attempt records; `status_after`
turns an outcome into the document's next status.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Where a document is in its life."""

    queued = "queued"  # stored, waiting for the first tier
    classifying = "classifying"  # claimed by a worker at current_tier
    escalated = "escalated"  # waiting for a later tier (or waiting again, with a status_reason)
    batched = "batched"  # in a provider's Batch API shard at current_tier (the reconciler leaves it)
    done = "done"
    needs_review = "needs_review"
    failed = "failed"


FINAL = frozenset({Status.done, Status.needs_review, Status.failed})
WAITING = frozenset({Status.queued, Status.escalated})


class Outcome(enum.StrEnum):
    """What a tier made of one document (a decision), or of one try at it (an attempt)."""

    accepted = "accepted"  # confident enough: the answer is the label
    escalated = "escalated"  # handed to the next tier
    review = "review"  # the last tier was unsure: a person decides
    invalid = "invalid"  # attempts only: no valid answer came back from this try
    held = "held"  # decisions only: not asked (a spending cap); waits at the same tier


def status_after(outcome: Outcome, *, has_next: bool, first_tier: bool) -> Status:
    """The document's status after a tier's outcome (escalating past the last tier is a review)."""
    if outcome is Outcome.accepted:
        return Status.done
    if outcome is Outcome.escalated and has_next:
        return Status.escalated
    if outcome is Outcome.held:
        return Status.queued if first_tier else Status.escalated
    return Status.needs_review


class RequestState(enum.StrEnum):
    """Where a model request is in the books (classifiers/ledger.py)."""

    sent = "sent"  # written down, sent; no answer yet
    answered = "answered"  # its usage and cost are recorded, with each document's attempt
    failed = "failed"  # an error answer (429, 5xx, 4xx): providers do not bill those
    unanswered = "unanswered"  # no usable answer (time-out, dropped, unreadable, killed): estimated


class AuditStatus(enum.StrEnum):
    """An audit of an accepted answer: waiting for its auditor, settled, or without a valid answer."""

    pending = "pending"
    done = "done"
    failed = "failed"


class ShardStatus(enum.StrEnum):
    """A Batch API shard: written down, its file uploaded, its batch submitted, its answers read."""

    created = "created"
    uploaded = "uploaded"
    submitted = "submitted"
    ingested = "ingested"


class Purpose(enum.StrEnum):
    """Why a model request was made: to classify (and re-ask), or to audit another tier's answer."""

    classify = "classify"
    reask = "reask"
    audit = "audit"


class ImportStatus(enum.StrEnum):
    """An import's state: stored ones (listing, listed, failed) and the two shown once listed."""

    listing = "listing"  # pages are being listed and stored
    listed = "listed"  # every page is stored (stored only; shown as classifying or done)
    classifying = "classifying"  # shown: listed, documents still in the cascade
    done = "done"  # shown: listed, every document final
    failed = "failed"  # listing stopped on an error (ImportJob.error); resumable


class Origin(enum.StrEnum):
    """Where a label to learn from came from (besides these: the name of the LLM tier that gave it)."""

    gold = "gold"  # uploaded as truth
    review = "review"  # a person's answer on a document
    audit = "audit"  # the last tier's answer when it audited a lower tier's (a model's label)
    bulk_accept = "bulk_accept"  # a person accepted a model's suggestion in bulk (not a person's label)


PERSON_GIVEN = frozenset({Origin.gold, Origin.review})  # labels a person gave, not a model
