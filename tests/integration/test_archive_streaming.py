"""Export memory does not grow with the event: records are streamed and merge-joined, not loaded at once."""

from __future__ import annotations

import tracemalloc

import sqlalchemy as sa

from shared.archive import iter_file_text
from shared.db import make_engine
from shared.models.events import Event, Microlocation, Session, SessionSpeaker, SessionType, Speaker, Track

SESSIONS = 6000
ABSTRACT = "An abstract that is long enough to make every record weigh about two kilobytes. " * 25


def populate(conn) -> int:
    event_id = conn.execute(sa.insert(Event.__table__).values(name="Big").returning(Event.__table__.c.id)).scalar()
    conn.execute(sa.insert(Track.__table__), [{"event_id": event_id, "name": f"T{i}"} for i in range(5)])
    conn.execute(sa.insert(SessionType.__table__), [{"event_id": event_id, "name": "Talk", "length": "00:30"}])
    conn.execute(sa.insert(Microlocation.__table__), [{"event_id": event_id, "name": "Room"}])
    track_ids = conn.execute(sa.select(Track.id).where(Track.event_id == event_id)).scalars().all()
    conn.execute(
        sa.insert(Speaker.__table__), [{"event_id": event_id, "name": f"Speaker {i}"} for i in range(SESSIONS // 2)]
    )
    speaker_ids = conn.execute(sa.select(Speaker.id).where(Speaker.event_id == event_id)).scalars().all()
    conn.execute(
        sa.insert(Session.__table__),
        [
            # Reverse archive order so that file order differs from id order.
            {
                "event_id": event_id,
                "title": f"S{i}",
                "long_abstract": ABSTRACT,
                "archive_order": SESSIONS - i,
                "track_id": track_ids[i % len(track_ids)],
            }
            for i in range(SESSIONS)
        ],
    )
    session_ids = conn.execute(sa.select(Session.id).where(Session.event_id == event_id)).scalars().all()
    conn.execute(
        sa.insert(SessionSpeaker.__table__),
        [{"session_id": s, "speaker_id": speaker_ids[n // 2], "position": 0} for n, s in enumerate(session_ids)],
    )
    return event_id


def peak_while_exporting(conn, event_id: int, file: str) -> tuple[int, int]:
    size = 0
    tracemalloc.start()
    try:
        for chunk in iter_file_text(conn, event_id, file):
            size += len(chunk)
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_export_memory_stays_flat(database_url):
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            event_id = populate(conn)
            peak, size = peak_while_exporting(conn, event_id, "sessions")
            assert size > 12_000_000
            assert peak < size / 4, (peak, size)
            peak, size = peak_while_exporting(conn, event_id, "speakers")
            assert peak < 3_000_000, (peak, size)
            conn.rollback()
    finally:
        engine.dispose()
