"""Synthetic events of any size, inserted in bulk (for the demo, the tests and the benchmarks)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared.models import events as m

BATCH = 5000


def _bulk(session: Session, model: type, rows: list[dict]) -> None:
    for start in range(0, len(rows), BATCH):
        session.execute(insert(model), rows[start:start + BATCH])


def _bulk_ids(session: Session, model: type, rows: list[dict], event_id: int) -> list[int]:
    """Insert ``rows`` (all of event ``event_id``) and return the ids of that event's ``model`` rows, in order."""
    _bulk(session, model, rows)
    session.flush()
    return list(session.scalars(select(model.id).where(model.event_id == event_id).order_by(model.id)))


def create_synthetic_event(session: Session, *, sessions: int, owner_user_id: int | None = None,
                           seed: int = 7, media_base_url: str | None = None) -> int:
    """Create an event with ``sessions`` sessions (and proportionate speakers, tracks, rooms); returns its id.

    ``media_base_url`` gives speakers photos and sponsors logos under that URL (for media tests).
    """
    rnd = random.Random(seed)
    start = datetime(2027, 3, 18, 9, 0)
    event = m.Event(name=f"Synthetic Conference {sessions}", timezone="Asia/Singapore", start_time=start,
                    end_time=start + timedelta(days=3), location_name="Science Centre, Singapore",
                    latitude=1.333, longitude=103.736, description="A generated event. " * 5, privacy="public",
                    organizer_name="Generator", type="Conference", topic="Science & Technology", state="Published",
                    email="team@example.org")
    session.add(event)
    session.flush()
    eid = event.id
    session.add(m.EventCopyright(event_id=eid, holder="Generator", licence="CC BY 4.0", year=2027))
    session.add_all([m.SocialLink(event_id=eid, name=n, link=f"https://example.org/{n.lower()}")
                     for n in ("Twitter", "GitHub")])
    session.add(m.CustomForm(event_id=eid, session_form='{"title":{"require":1,"include":1}}',
                             speaker_form='{"name":{"require":1,"include":1}}'))
    if owner_user_id is not None:
        session.add(m.EventRole(user_id=owner_user_id, event_id=eid, role=m.ROLE_ORGANIZER))

    n_tracks, n_rooms = max(1, min(40, sessions // 25)), max(1, min(60, sessions // 20))
    tracks = [m.Track(event_id=eid, name=f"Track {i}", color=f"#{rnd.randrange(1 << 24):06x}",
                      font_color="#ffffff", description=f"About track {i}") for i in range(n_tracks)]
    rooms = [m.Microlocation(event_id=eid, name=f"Room {i}", floor=i % 5) for i in range(n_rooms)]
    types = [m.SessionType(event_id=eid, name=name, length=length)
             for name, length in (("Talk", "00:30"), ("Workshop", "02:00"), ("Keynote", "00:45"))]
    sponsors = [m.Sponsor(event_id=eid, name=f"Sponsor {i}", level=str(i % 3), sponsor_type="Gold",
                          url="https://example.org", description="Supports us",
                          logo=f"{media_base_url}/sponsor{i}.png" if media_base_url else None) for i in range(5)]
    session.add_all(tracks + rooms + types + sponsors)
    session.flush()

    n_speakers = max(1, sessions // 2)
    speaker_rows = [
        {"event_id": eid, "name": f"Speaker {i} {rnd.choice(['Dang', 'Behling', 'Ng', 'Müller', 'Ivanova'])}",
         "email": f"speaker{i}@example.org", "organisation": f"Org {i % 97}", "country": "Singapore",
         "short_biography": "Builds open hardware. " * 3, "long_biography": "Long biography text. " * 12,
         "website": f"https://speaker{i}.example.org", "twitter": f"https://twitter.com/s{i}",
         "photo": f"{media_base_url}/photo{i}.jpg" if media_base_url else None}
        for i in range(n_speakers)
    ]
    speaker_ids = _bulk_ids(session, m.Speaker, speaker_rows, eid)

    session_rows = []
    for i in range(sessions):
        begin = start + timedelta(minutes=30 * (i % 40))
        session_rows.append({
            "event_id": eid, "title": f"Session {i}: open source in practice",
            "short_abstract": "A short abstract. " * 4, "long_abstract": "A long abstract with details. " * 25,
            "start_time": begin, "end_time": begin + timedelta(minutes=30), "language": "English",
            "track_id": tracks[i % n_tracks].id, "microlocation_id": rooms[i % n_rooms].id,
            "session_type_id": types[i % len(types)].id, "state": "accepted", "comments": "",
        })
    session_ids = _bulk_ids(session, m.Session, session_rows, eid)
    links = []
    for i, sid in enumerate(session_ids):
        first = speaker_ids[i % len(speaker_ids)]
        links.append({"session_id": sid, "speaker_id": first, "position": 0})
        second = speaker_ids[(i * 7 + 3) % len(speaker_ids)]
        if second != first:
            links.append({"session_id": sid, "speaker_id": second, "position": 1})
    _bulk(session, m.SessionSpeaker, links)
    return eid
