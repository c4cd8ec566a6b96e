"""Bearer API keys: the dependency every /v1 route carries when settings.api.require_auth is true."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import SessionDep
from core.errors import Unauthorized
from store.keys import verify_key

log = logging.getLogger("docsort.api")

# Declares the scheme in the OpenAPI schema; the check itself is below, so that every failure
# (no header, another scheme, a wrong or revoked key) gets the same 401 problem.
bearer = HTTPBearer(auto_error=False, description="An API key from `docsort keys create`")

# One message for every failure: it says what is needed, never whether a key exists or was revoked.
REJECTED = "a valid API key is required: send 'Authorization: Bearer <key>'"


def require_api_key(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> int:
    """The id of the caller's live API key, or Unauthorized (401)."""
    row = verify_key(session=session, key=credentials.credentials) if credentials else None
    if row is None or row.id is None:
        client = request.client.host if request.client else "?"
        log.warning("rejected a request without a valid API key", extra={"client": client})
        raise Unauthorized(REJECTED)
    request.state.api_key_id = row.id
    return row.id
