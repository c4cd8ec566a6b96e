"""docsort's exceptions, one tree for the API, the workers and the classifiers.

    DocsortError
    ├── InputError                 the caller sent something wrong (4xx)
    │   ├── NotFound               404
    │   ├── Forbidden              403 (allowed callers, not allowed this)
    │   ├── Conflict               409
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   └── InvalidInput           422
    ├── Unauthorized               401
    ├── Unavailable                a dependency is down (503, Retry-After)
    ├── ConfigError                the settings name something that does not exist (refused at start)
    ├── SpendCapReached            a spending cap leaves no room for a request: its documents wait
    └── ModelError                 a model endpoint misbehaved (unanswered: it may have billed)
        ├── TransientModelError    worth retrying: 429, 5xx, timeout, refused connection
        │   └── RateLimited        429, with the endpoint's Retry-After
        ├── PermanentModelError    retrying cannot help: 400, 401, 404, bad configuration
        └── InvalidAnswer          the answer broke the schema or was unreadable; re-ask, then escalate

HTTP status lives in api/errors.py and retry-or-not in worker/retry.py, each in one place.
"""

from __future__ import annotations


class DocsortError(Exception):
    """Base of everything docsort raises on purpose."""


class InputError(DocsortError):
    """The caller sent something wrong."""


class NotFound(InputError):
    """No such resource."""


class Forbidden(InputError):
    """Not allowed by this deployment's settings, whoever asks."""


class Conflict(InputError):
    """The request conflicts with current state."""


class PayloadTooLarge(InputError):
    """Over a configured size limit."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class UnsupportedMediaType(InputError):
    """A content type docsort does not read."""


class InvalidInput(InputError):
    """Well-formed but unacceptable input."""


class Unauthorized(DocsortError):
    """Missing or wrong credentials."""


class Unavailable(DocsortError):
    """A dependency (database, broker, model) does not answer."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(DocsortError):
    """Settings that cannot work: an unknown tier kind, say."""


class ModelError(DocsortError):
    """A model endpoint failed or answered badly; unanswered: the request may have been billed, though no
    usable answer came (a time-out, a dropped connection, an unreadable body)."""

    def __init__(self, message: str, *, unanswered: bool = False) -> None:
        super().__init__(message)
        self.unanswered = unanswered


class TransientModelError(ModelError):
    """A failure that a later try may not see."""


class RateLimited(TransientModelError):
    """HTTP 429; retry_after is what the endpoint asked for, if anything."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)  # a 429 is an answer: not billed
        self.retry_after = retry_after


class PermanentModelError(ModelError):
    """A failure that retrying cannot fix."""


class SpendCapReached(DocsortError):
    """A daily spending cap leaves no room for the next request; documents wait with this reason."""


class InvalidAnswer(ModelError):
    """The model's answer did not fit the schema."""
