"""The console's pages: log in, the review queue (one document at a time, keyboard first), bulk accept,
and the dashboard. Answers go through the same review path as the API (store/reviews.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.console import plots, session
from api.console.session import ConsoleDep, ConsoleSession
from api.deps import SessionDep, SettingsDep
from core.errors import Conflict, InvalidInput, Unauthorized
from store import audits, console, keys, quality, reviews, rollup, spend, taxonomies
from store.models import NANO, Document

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))  # autoescapes .html
FOLD_CHARS = 2000  # longer texts are folded: the rest behind a <details>
QUEUE_FILTERS = ("queue", "taxonomy", "import_id", "tier", "order")


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    state: ConsoleSession | None = getattr(request.state, "console", None)
    response = templates.TemplateResponse(
        request, name, {"csrf": state.csrf if state else "", **context}, status_code=status
    )
    fresh = getattr(request.state, "console_new", None) or getattr(request.state, "console_update", None)
    if fresh is not None:
        session.write(response, request, fresh, request.app.state.settings.api.session_hours * 3600)
    return response


def _redirect(request: Request, url: str, update: ConsoleSession | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    fresh = update or getattr(request.state, "console_new", None)
    if fresh is not None:
        session.write(response, request, fresh, request.app.state.settings.api.session_hours * 3600)
    return response


# --- login ---------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The login form: an API key (from `docsort keys create`)."""
    pre = session.new(0)  # carries the CSRF token of the login form itself
    request.state.console_new = pre
    request.state.console = pre
    return _render(
        request, "login.html", {"require_auth": settings.api.require_auth, "error": None, "hide_nav": True}
    )


@router.post("/login", response_model=None)
def login(
    request: Request,
    settings: SettingsDep,
    db: SessionDep,
    key: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Check the key; on success, a session cookie and the review queue."""
    pre = session.read(request, settings.api.session_hours * 3600)
    session.check_csrf(pre or session.new(0), csrf)
    row = keys.verify_key(session=db, key=key.strip())
    if row is None or row.id is None:
        request.state.console = pre
        context = {"require_auth": True, "error": "That key is not valid.", "hide_nav": True}
        return _render(request, "login.html", context, 401)
    return _redirect(request, "/console/review", session.new(row.id))


@router.post("/logout")
def logout(request: Request, current: ConsoleDep, csrf: Annotated[str, Form()] = "") -> RedirectResponse:
    """End the session."""
    session.check_csrf(current, csrf)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/console")
    return response


def _session_or_login(request: Request, settings: SettingsDep, db: SessionDep) -> ConsoleSession | None:
    try:
        return session.current(request, settings, db)
    except Unauthorized:
        return None


# --- the review queue -----------------------------------------------------------------------------


@router.get("", response_model=None)
def home() -> RedirectResponse:
    return RedirectResponse("/console/review", status_code=303)


@router.get("/review", response_model=None)
def review_page(
    request: Request,
    settings: SettingsDep,
    db: SessionDep,
    queue: Annotated[console.Queue, Query()] = "needs_review",
    taxonomy: Annotated[str | None, Query(max_length=64)] = None,
    import_id: Annotated[int | None, Query(ge=1)] = None,
    tier: Annotated[str | None, Query(max_length=32)] = None,
    order: Annotated[console.Order, Query()] = "oldest",
    after: Annotated[str | None, Query(max_length=64, pattern=r"^(none|[0-9.e+-]+:)?\d+$")] = None,
    doc: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """One document waiting for a person, its text and each tier's suggestion; keys pick the answer."""
    current = _session_or_login(request, settings, db)
    if current is None:
        return RedirectResponse("/console/login", status_code=303)
    filters = {"queue": queue, "taxonomy": taxonomy, "import_id": import_id, "tier": tier, "order": order}
    if doc is not None:
        documents = console.documents_by_id(session=db, ids=[doc])
        page = console.Page(documents=documents, next_cursor=None)
    else:
        page = console.review_queue(
            session=db,
            queue=queue,
            taxonomy=taxonomy,
            import_id=import_id,
            tier=tier,
            order=order,
            after=after,
            limit=1,
        )
    context: dict[str, Any] = {
        "filters": filters,
        "query": urlencode({k: v for k, v in filters.items() if v is not None}),
        "tiers": [t.name for t in settings.models],
        "taxonomy_names": taxonomies.names(session=db),
        "document": None,
        "backlog": console.backlog(session=db, taxonomy=taxonomy or settings.default_taxonomy.name),
        "can_undo": current.last_review is not None,
    }
    if page.documents:
        document = page.documents[0]
        context.update(_document_context(db, document))
        skip = urlencode(
            {**{k: v for k, v in filters.items() if v is not None}, "after": page.next_cursor or ""}
        )
        context["skip_url"] = f"/console/review?{skip}" if page.next_cursor else None
    return _render(request, "review.html", context)


def _document_context(db: SessionDep, document: Document) -> dict[str, Any]:
    """A document, its labels sorted by the best score any tier gave them, and each tier's suggestion."""
    tax = taxonomies.to_runtime(
        taxonomies.require(session=db, name=document.taxonomy, version=document.taxonomy_version)
    )
    by_label: dict[str, list[dict[str, Any]]] = {name: [] for name in tax.label_names}
    for attempt in console.suggestions(session=db, document_id=document.id or 0):
        for name in attempt.labels if attempt.labels is not None else [attempt.label]:
            if name in by_label:
                by_label[name].append(
                    {
                        "tier": attempt.tier,
                        "confidence": attempt.confidence,
                        "audit": attempt.purpose == "audit",
                    }
                )
    best = {
        name: max((s["confidence"] or 0.0 for s in tips), default=-1.0) for name, tips in by_label.items()
    }
    ordered = sorted(tax.label_names, key=lambda name: (-best[name], tax.label_names.index(name)))
    text = document.text
    return {
        "document": document,
        "labels": [{"name": name, "suggestions": by_label[name]} for name in ordered],
        "multi_label": tax.multi_label,
        "head": text[:FOLD_CHARS],
        "rest": text[FOLD_CHARS:],
    }


def _filters_query(form: dict[str, Any]) -> str:
    return urlencode({k: v for k in QUEUE_FILTERS if (v := form.get(k))})


@router.post("/review/{document_id}", response_model=None)
async def review_answer(
    document_id: int, request: Request, settings: SettingsDep, db: SessionDep, current: ConsoleDep
) -> Response:
    """A person's answer: the same review path as POST /v1/documents/{id}/review."""
    form = await request.form()
    session.check_csrf(current, str(form.get("csrf", "")))
    document = console.documents_by_id(session=db, ids=[document_id])
    if not document:
        raise InvalidInput(f"document {document_id} does not exist")
    tax = taxonomies.to_runtime(taxonomies.require(session=db, name=document[0].taxonomy))
    typed = str(form.get("label_text", "")).strip()
    if tax.multi_label:
        labels: list[str] | None = sorted(
            {str(v) for v in form.getlist("labels")} | ({typed} if typed else set())
        )
        label = None
    else:
        label, labels = (typed or str(form.get("label", "")) or None), None
    reviews.review(session=db, document_id=document_id, label=label, labels=labels, by=_by(current))
    db.commit()
    return _redirect(
        request, f"/console/review?{_filters_query(dict(form))}", current.with_last_review(document_id)
    )


@router.post("/review-undo", response_model=None)
async def review_undo(request: Request, db: SessionDep, current: ConsoleDep) -> Response:
    """Undo this session's last answer: the document, its labels to learn from and its audit as they were."""
    form = await request.form()
    session.check_csrf(current, str(form.get("csrf", "")))
    if current.last_review is None:
        raise Conflict("nothing to undo in this session")
    reviews.undo(session=db, document_id=current.last_review)
    db.commit()
    query = urlencode({**{k: v for k in QUEUE_FILTERS if (v := form.get(k))}, "doc": current.last_review})
    return _redirect(request, f"/console/review?{query}", current.with_last_review(None))


def _by(current: ConsoleSession) -> str:
    return f"console key {current.key_id}" if current.key_id else "console"


# --- bulk accept ----------------------------------------------------------------------------------


@router.get("/bulk", response_model=None)
def bulk_page(
    request: Request,
    settings: SettingsDep,
    db: SessionDep,
    taxonomy: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(max_length=32)] = None,
    min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.9,
    accepted: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Documents needing review whose suggestion is at least a confidence: the count, then a confirmation."""
    if _session_or_login(request, settings, db) is None:
        return RedirectResponse("/console/login", status_code=303)
    count, ids = console.bulk_candidates(
        session=db, taxonomy=taxonomy, tier=tier, min_confidence=min_confidence
    )
    shown = console.documents_by_id(session=db, ids=ids[:50])
    return _render(
        request,
        "bulk.html",
        {
            "filters": {"taxonomy": taxonomy, "tier": tier, "min_confidence": min_confidence},
            "count": count,
            "shown": shown,
            "accepted": accepted,
            "tiers": [t.name for t in settings.models],
            "taxonomy_names": taxonomies.names(session=db),
        },
    )


@router.post("/bulk", response_model=None)
def bulk_accept(
    request: Request,
    db: SessionDep,
    current: ConsoleDep,
    expected: Annotated[int, Form(ge=0)],
    min_confidence: Annotated[float, Form(ge=0, le=1)],
    taxonomy: Annotated[str, Form(max_length=64)] = "",
    tier: Annotated[str, Form(max_length=32)] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Accept every suggestion in the confirmed list; refused if the list changed since it was shown."""
    session.check_csrf(current, csrf)
    count, ids = console.bulk_candidates(
        session=db, taxonomy=taxonomy or None, tier=tier or None, min_confidence=min_confidence
    )
    if count != expected:
        raise Conflict(f"the list changed ({count} documents now, {expected} confirmed): review it again")
    accepted = reviews.bulk_accept(session=db, document_ids=ids, by=_by(current))
    db.commit()
    query = urlencode(
        {"taxonomy": taxonomy, "tier": tier, "min_confidence": min_confidence, "accepted": accepted}
    )
    return _redirect(request, f"/console/bulk?{query}")


# --- dashboard ------------------------------------------------------------------------------------


@router.get("/dashboard", response_model=None)
def dashboard(
    request: Request,
    settings: SettingsDep,
    db: SessionDep,
    taxonomy: Annotated[str | None, Query(max_length=64)] = None,
    days: Annotated[int, Query(ge=1, le=365)] = 30,
) -> Response:
    """Per taxonomy: documents by status and tier, cost per 1,000 documents over time and the saving against
    all-large, the review backlog, and each tier's audited agreement."""
    if _session_or_login(request, settings, db) is None:
        return RedirectResponse("/console/login", status_code=303)
    name = taxonomy or settings.default_taxonomy.name
    counts, as_of = rollup.counts(session=db, taxonomy=name)  # the roll-up's snapshot, not a scan
    report = quality.report(session=db, settings=settings, taxonomy=name, counts=counts)
    series = rollup.series(session=db, taxonomy=name, days=days, today=spend.today())
    points = [
        {
            "day": row.day,
            "per_1k": row.cost_nanousd / NANO * 1000 / row.documents if row.documents else None,
            "baseline_per_1k": row.baseline_nanousd / NANO * 1000 / row.documents if row.documents else None,
            "documents": row.documents,
        }
        for row in series
    ]
    cost = sum(r.cost_nanousd for r in series)
    baseline = sum(r.baseline_nanousd for r in series)
    return _render(
        request,
        "dashboard.html",
        {
            "taxonomy": name,
            "taxonomy_names": taxonomies.names(session=db),
            "counts": counts,
            "as_of": as_of,
            "tiers": [t.name for t in settings.models],
            "backlog": console.backlog(session=db, taxonomy=name),
            "quality": report,
            "days": days,
            "cost_usd": cost / NANO,
            "baseline_usd": baseline / NANO,
            "saving_pct": 100 * (baseline - cost) / baseline if baseline else None,
            "documents": sum(r.documents for r in series),
            "chart": plots.cost_chart(points),
            "changes": audits.in_force(session=db, taxonomy=name),
        },
    )
