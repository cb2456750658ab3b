"""Record counts of one event, per archive file (the gateway shows them, the exporter reports progress with them)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import events as models

_COUNTED = {
    "microlocations": models.Microlocation,
    "sessions": models.Session,
    "speakers": models.Speaker,
    "sponsors": models.Sponsor,
    "tracks": models.Track,
    "session_types": models.SessionType,
    "forms": models.CustomForm,
    "social_links": models.SocialLink,
}


def record_counts(session: Session, event_id: int) -> dict[str, int]:
    counts = {}
    for name, model in _COUNTED.items():
        counts[name] = session.scalar(select(func.count()).select_from(model).where(model.event_id == event_id))
    return counts
