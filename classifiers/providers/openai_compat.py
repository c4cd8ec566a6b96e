"""OpenAI-compatible endpoints: OpenAI itself (and Azure, vLLM) and llama.cpp's server."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx2  # the HTTP library of the openai client (a fork of httpx)
import openai
import pydantic
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from classifiers.confidence import TokenLogprob
from classifiers.costs import Usage
from classifiers.providers.base import Completion
from classifiers.taxonomy import strict_schema
from core.errors import (
    InvalidAnswer,
    PermanentModelError,
    RateLimited,
    TransientModelError,
)
from core.tiers import ModelTier


def _retry_after(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIModel:
    """An OpenAI-style endpoint; the transport decides how the schema is forced."""

    def __init__(self, tier: ModelTier, http_client: httpx2.Client | None = None) -> None:
        self.tier = tier
        self._client = openai.OpenAI(
            base_url=tier.base_url,
            api_key=tier.api_key.get_secret_value(),
            timeout=tier.timeout_s,
            # docsort retries (worker/tasks.py), so that every try is in the books: never the client.
            max_retries=0,
            http_client=http_client,
        )

    @property
    def gives_logprobs(self) -> bool:
        # OpenAI returns no logprobs for tool-call arguments.
        return self.tier.top_logprobs > 0 and self.tier.transport != "tools"

    def _label_only(self, labels: list[str]) -> dict[str, Any]:
        """Request fields that bind a bare-label answer (OpenAI has no grammar: parse and check)."""
        return {}

    def _format(self, answer_model: type[BaseModel]) -> dict[str, Any]:
        """Request fields that force answer_model's schema."""
        schema = strict_schema(answer_model)
        name = answer_model.__name__
        description = (answer_model.__doc__ or "").strip()
        if self.tier.transport == "tools":
            return {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": name,
                            "description": description,
                            "parameters": schema,
                            "strict": True,
                        },
                    }
                ],
                "tool_choice": {"type": "function", "function": {"name": name}},
            }
        if self.tier.transport == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": True},
                }
            }
        return {"response_format": {"type": "json_object", "schema": schema}}

    def complete(
        self,
        *,
        system: str,
        user: str,
        answer_model: type[BaseModel],
        max_tokens: int,
        labels: list[str] | None = None,
        request_id: str = "",
    ) -> Completion:
        """Ask once, mapping the client's errors onto docsort's tree."""
        body = self.request_body(
            system=system, user=user, answer_model=answer_model, max_tokens=max_tokens, labels=labels
        )
        started = time.monotonic()
        try:
            # The body as the Batch API's lines carry it, posted as is: chat.completions.create would
            # walk it again through the client's type transforms (8% of a worker's time in a profile).
            response = self._client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletion,
                options={"headers": {"X-Client-Request-Id": request_id}} if request_id else {},
            )
        except openai.RateLimitError as exc:
            raise RateLimited(str(exc), retry_after=_retry_after(exc.response)) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            # Refused or not connected in time: never sent. Otherwise it may have been billed.
            sent = not isinstance(exc.__cause__, httpx2.ConnectError | httpx2.ConnectTimeout)
            raise TransientModelError(f"{type(exc).__name__}: {exc}", unanswered=sent) from exc
        except openai.InternalServerError as exc:
            raise TransientModelError(f"HTTP {exc.status_code}: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409) or exc.status_code >= 500:
                raise TransientModelError(f"HTTP {exc.status_code}: {exc}") from exc
            raise PermanentModelError(f"HTTP {exc.status_code}: {exc}") from exc
        except (openai.APIResponseValidationError, ValueError, pydantic.ValidationError) as exc:
            # A 200 whose body does not parse (truncated JSON, say): billed, usage unknown.
            raise InvalidAnswer(
                f"unreadable response: {type(exc).__name__}: {exc}"[:500], unanswered=True
            ) from exc
        latency_ms = int((time.monotonic() - started) * 1000)
        return self._completion(response, latency_ms)

    def _kwargs(self, answer_model: type[BaseModel], labels: list[str] | None) -> dict[str, Any]:
        """The request fields that force the answer's form and ask for logprobs."""
        if self.tier.transport == "label_only":
            kwargs: dict[str, Any] = self._label_only(labels or [])
        else:
            kwargs = self._format(answer_model)
        if self.gives_logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = self.tier.top_logprobs
        return kwargs

    def request_body(
        self,
        *,
        system: str,
        user: str,
        answer_model: type[BaseModel],
        max_tokens: int,
        labels: list[str] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of the chat request complete() sends (a Batch API line's body)."""
        kwargs = self._kwargs(answer_model, labels)
        body: dict[str, Any] = {
            "model": self.tier.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        body.update(kwargs.pop("extra_body", {}))
        body.update(kwargs)
        return body

    def completion_from(self, body: dict[str, Any], latency_ms: int = 0) -> Completion:
        """A chat completion's JSON (a Batch API output line's body) as a Completion; InvalidAnswer if unreadable."""
        try:
            response = ChatCompletion.model_validate(body)
        except pydantic.ValidationError as exc:
            raise InvalidAnswer(f"unreadable response: {exc}"[:500], unanswered=True) from exc
        return self._completion(response, latency_ms)

    def _completion(self, response: Any, latency_ms: int) -> Completion:
        usage = Usage()
        if getattr(response, "usage", None) is not None:
            details = getattr(response.usage, "prompt_tokens_details", None)
            usage = Usage(
                input_tokens=response.usage.prompt_tokens or 0,
                cached_tokens=(getattr(details, "cached_tokens", 0) or 0) if details else 0,
                output_tokens=response.usage.completion_tokens or 0,
            )
        request_id = getattr(response, "id", None) or uuid.uuid4().hex
        choice = response.choices[0] if getattr(response, "choices", None) else None
        message = getattr(choice, "message", None)
        text = ""  # no answer at all still costs its tokens; the cascade re-asks
        if message is not None and self.tier.transport == "tools" and message.tool_calls:
            text = message.tool_calls[0].function.arguments or ""
        elif message is not None:
            text = message.content or ""
        logprobs = None
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if content:
            logprobs = [
                TokenLogprob(
                    token=item.token,
                    logprob=item.logprob,
                    top=[(alt.token, alt.logprob) for alt in (item.top_logprobs or [])],
                )
                for item in content
            ]
        return Completion(
            text=text,
            logprobs=logprobs,
            usage=usage,
            latency_ms=latency_ms,
            request_id=str(request_id)[:64],
            model=str(getattr(response, "model", None) or self.tier.model),
        )


class LlamaCppModel(OpenAIModel):
    """llama-cpp-python's server: no json_schema (HTTP 500) and no strict; json_object+schema works."""

    @property
    def gives_logprobs(self) -> bool:
        return self.tier.top_logprobs > 0 and self.tier.transport in {"json_object", "label_only"}

    def _label_only(self, labels: list[str]) -> dict[str, Any]:
        # A GBNF grammar whose only sentences are the labels.
        alternatives = " | ".join(json.dumps(label) for label in labels)
        return {"extra_body": {"grammar": f"root ::= {alternatives}"}}

    def _format(self, answer_model: type[BaseModel]) -> dict[str, Any]:
        if self.tier.transport == "json_schema":
            return {"response_format": {"type": "json_object", "schema": strict_schema(answer_model)}}
        fields = super()._format(answer_model)
        for tool in fields.get("tools", []):
            tool["function"].pop("strict", None)
        return fields
