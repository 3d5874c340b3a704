"""Listening events over HTTP: POST /events (a batch) and DELETE /users/{user_id}/events; logic in encore/events.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from encore import feature_names as fn
from encore.events import (
    Event,
    EventLog,
    EventRefused,
    EventRules,
    EventStoreUnavailable,
    check_events,
    check_size,
)
from encore.settings import EmbedderSettings
from encore.store import Store
from encore.track_table import TrackTable
from services.common.auth import ApiKey
from services.common.errors import COMMON_STATUS, ServiceError, error_responses
from services.common.patterns import TRACK_ID_PATTERN

log = logging.getLogger("encore.embedder.events")
router = APIRouter(tags=["events"])
ID_PATTERN = TRACK_ID_PATTERN  # event and user ids: the same store-key alphabet as track ids
CODES = COMMON_STATUS | {"invalid_event": 422, "unknown_track": 422, "batch_too_large": 413, "empty_batch": 422}
CODES |= {"store_unavailable": 503}
MAX_MS = 24 * 3600 * 1000


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Client-made id; a repeat is ignored and counted")
    user_id: str = Field(pattern=ID_PATTERN, examples=["u0007"])
    track_id: str = Field(pattern=TRACK_ID_PATTERN, description="Must be in the store", examples=["t00042"])
    type: Literal["play", "skip", "like", "dislike"]
    ms: int | None = Field(None, ge=0, le=MAX_MS, description="Milliseconds listened (labels: docs/events.md)")
    ts: AwareDatetime = Field(description="When it happened: ISO 8601 with a zone, or epoch seconds")

    def event(self) -> Event:
        return Event(self.id, self.user_id, self.track_id, self.type, self.ms, self.ts)


class EventBatch(BaseModel):
    """The documented body; the route reads `RawBatch` and checks events one by one, in order, so that a
    refusal names the first bad event whatever is wrong with it (shape, time or track)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {"id": "e1", "user_id": "u7", "track_id": "t42", "type": "play", "ms": 61000,
                         "ts": "2026-12-06T18:00:00Z"},
                    ]
                }
            ]
        },
    )  # fmt: skip
    events: list[EventIn] = Field(
        description="At most ENCORE_EMBEDDER_EVENTS_MAX_BATCH events; refused whole if one is bad"
    )


class RawBatch(BaseModel):
    """What the route parses first: each event is then checked as an `EventIn`, in order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=EventBatch.model_config["json_schema_extra"])
    events: list[dict[str, Any]] = Field(
        description="At most ENCORE_EMBEDDER_EVENTS_MAX_BATCH events; refused whole if one is bad",
        json_schema_extra={"items": EventIn.model_json_schema()},
    )


class EventsAccepted(BaseModel):
    accepted: int = Field(description="New events, durably written")
    duplicates: int = Field(description="Events whose id was seen before (or repeated in the batch): ignored")
    users: int = Field(description="Listeners whose real-time features were updated")


class EventsDeleted(BaseModel):
    user_id: str
    events: int = Field(description="Offline log rows removed")
    parts_rewritten: int
    had_features: bool = Field(description="Whether the listener had real-time features online")


class EventService:
    """The app's EventLog plus the track lookups it needs (an in-process TrackTable: known ids and vectors)."""

    def __init__(self, store: Store, settings: EmbedderSettings):
        rules = EventRules(
            max_batch=settings.events_max_batch,
            max_future_s=settings.events_max_future_s,
            retention_days=settings.events_retention_days,
            recent_n=settings.events_recent_n,
            compact_parts=settings.events_compact_parts,
        )
        # content never changes under a track id except by an overwrite upload; a day-old table is re-read whole
        self.tracks = TrackTable(store, max_age_s=86400.0, miss_ttl_s=1.0)
        self.log = EventLog(store, rules, self.embeddings)
        self._compactor = threading.Thread()

    def known(self, track_ids: list[str]) -> set[str]:
        self.tracks.refresh(track_ids)
        return {t for t in track_ids if t in self.tracks}

    def embeddings(self, track_ids: list[str]) -> dict[str, np.ndarray]:
        batch = self.tracks.lookup(track_ids, fields=["embedding"])
        present = batch.present[fn.TRACK_CONTENT]
        return {t: batch.columns["embedding"][i] for i, t in enumerate(batch.track_ids) if present[i]}

    def ingest(self, raw: list[dict[str, Any]]) -> Any:
        check_size(len(raw), self.log.rules)
        events: list[Event] = []
        for i, item in enumerate(raw):
            try:
                events.append(EventIn.model_validate(item).event())
            except ValidationError as error:
                check_events(events, self.log.rules, self.known)  # an earlier event may be bad in another way
                raise refusal_from_validation(error.errors(), index=i) from None
        result = self.log.ingest(events, self.known)
        if self.log.needs_compaction() and not self._compactor.is_alive():  # in the background, off the request
            self._compactor = threading.Thread(target=self._compact, name="events-compact", daemon=True)
            self._compactor.start()
        return result

    def _compact(self) -> None:
        try:
            self.log.compact()
        except Exception:  # the next batch tries again; nothing is lost (inputs stay until the merge is published)
            log.exception("event log compaction failed")


def get_events(request: Request) -> EventService:
    return request.app.state.events


EventsDep = Annotated[EventService, Depends(get_events)]


def refusal(error: EventRefused) -> ServiceError:
    where = {} if error.index is None else {"index": error.index, "field": error.field}
    prefix = "" if error.index is None else f"events[{error.index}].{error.field}: "
    return ServiceError(CODES[error.code], error.code, prefix + error.message, **where)


def refusal_from_validation(errors: Sequence[Any], index: int | None = None) -> ServiceError:
    """A pydantic error list for POST /events (or for its event `index`) as one refusal naming the first bad
    event (index, field)."""
    first = errors[0]
    loc = [x for x in first.get("loc", ()) if x != "body"]
    if index is not None:
        loc = ["events", index, *loc]
    if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
        field = str(loc[2])[:32] if len(loc) > 2 else "event"
        message = f"events[{loc[1]}].{field}: {str(first.get('msg', 'invalid'))[:200]}"
        return ServiceError(422, "invalid_event", message, index=loc[1], field=field)
    where = ".".join(str(x)[:32] for x in loc) or "body"
    return ServiceError(422, "invalid_request", f"{where}: {str(first.get('msg', 'invalid'))[:200]}")


def unavailable(error: EventStoreUnavailable) -> ServiceError:
    message = f"{error}; nothing was acknowledged: retry the same batch"
    return ServiceError(503, "store_unavailable", message, headers={"Retry-After": "1"})


@router.post(
    "/events",
    summary="Record a batch of listening events (idempotent by event id; refused whole when one is bad)",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 413, 422, 503, codes=CODES),
)
async def post_events(batch: RawBatch, events: EventsDep) -> EventsAccepted:
    try:
        result = await run_in_threadpool(events.ingest, batch.events)
    except EventRefused as error:
        raise refusal(error) from error
    except EventStoreUnavailable as error:
        raise unavailable(error) from error
    return EventsAccepted(accepted=result.accepted, duplicates=result.duplicates, users=result.users)


@router.delete(
    "/users/{user_id}/events",
    summary="Remove a listener's events and real-time features, online and offline",
    dependencies=[ApiKey],
    responses=error_responses(401, 403, 422, 503, codes=CODES),
)
async def delete_user_events(
    user_id: Annotated[str, Path(pattern=ID_PATTERN, examples=["u0007"])], events: EventsDep
) -> EventsDeleted:
    try:
        result = await run_in_threadpool(events.log.delete_user, user_id)
    except EventStoreUnavailable as error:
        raise unavailable(error) from error
    return EventsDeleted(
        user_id=user_id, events=result.events, parts_rewritten=result.parts_rewritten, had_features=result.had_features
    )
