"""Public feeds' logic on a real database: who is published, a render per change (not per request), validators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api_gateway.feeds import _content_type, _render
from shared.models import events as m
from shared.schedule.feeds import FeedCache, FeedNotFound, is_published, not_modified
from tests.support import schedule_checks as checks
from tools.synthetic import create_synthetic_event


@pytest.fixture
def db(sqlite_factory):
    return sqlite_factory


@pytest.fixture
def event_id(db) -> int:
    with db() as session:
        eid = create_synthetic_event(session, sessions=40)  # state "Published", privacy "public"
        session.commit()
    return eid


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("record", "published"), [
    ({"state": "Published", "privacy": "public"}, True),
    ({"state": "completed"}, True),
    ({"state": "Draft", "privacy": "public"}, False),
    ({"state": None}, False),
    ({"state": "published", "privacy": "private"}, False),
    ({"state": "Published", "schedule_published_on": None}, False),
    ({"state": "Published", "schedule_published_on": "2016-03-18T00:00:00"}, True),
])
def test_published(record, published):
    assert is_published(record) is published


def test_a_feed_is_rendered_once_while_nothing_changes(db, event_id):
    clock = Clock()
    cache = FeedCache(_render, _content_type, recheck=60, clock=clock)
    with db() as session:
        first = cache.get(session, event_id, "xml")
        for _ in range(20):
            assert cache.get(session, event_id, "xml") is first
    assert cache.renders == 1
    checks.check_frab_xml(first.body)
    assert first.content_type == "application/xml"


def test_an_added_session_is_seen_at_once(db, event_id):
    cache = FeedCache(_render, _content_type, clock=Clock())
    with db() as session:
        before = cache.get(session, event_id, "json")
        session.add(m.Session(event_id=event_id, title="Late addition", state="accepted",
                              start_time=datetime(2027, 3, 19, 10), end_time=datetime(2027, 3, 19, 11)))
        session.commit()
        after = cache.get(session, event_id, "json")
    assert after.etag != before.etag and b"Late addition" in after.body
    assert cache.renders == 2


def test_an_edit_in_place_is_seen_after_the_recheck_and_an_unchanged_render_keeps_its_validators(db, event_id):
    clock = Clock()
    cache = FeedCache(_render, _content_type, recheck=60, clock=clock)
    with db() as session:
        first = cache.get(session, event_id, "ics")
        clock.now += 61
        same = cache.get(session, event_id, "ics")  # re-rendered, same bytes: same ETag and Last-Modified
        assert cache.renders == 2 and same is first
        talk = session.query(m.Session).filter_by(event_id=event_id).first()
        talk.title = "Edited title"
        session.commit()
        assert cache.get(session, event_id, "ics") is first  # within the recheck window
        clock.now += 61
        edited = cache.get(session, event_id, "ics")
    assert edited.etag != first.etag and b"Edited title" in edited.body
    checks.check_ical(edited.body)


def test_the_cache_is_bounded_by_bytes_least_recently_used_first(db, event_id):
    clock = Clock()
    probe = FeedCache(_render, _content_type, clock=clock)
    with db() as session:
        xml_size = len(probe.get(session, event_id, "xml").body)
        cache = FeedCache(_render, _content_type, clock=clock, max_bytes=xml_size + 10)
        cache.get(session, event_id, "xml")
        cache.get(session, event_id, "json")  # both do not fit: the older (xml) goes
        cache.get(session, event_id, "json")
        assert cache.renders == 2
        cache.get(session, event_id, "xml")
    assert cache.renders == 3


def test_unpublished_and_missing_events_have_no_feed(db, event_id):
    cache = FeedCache(_render, _content_type, clock=Clock())
    with db() as session:
        cache.get(session, event_id, "xml")
        session.get(m.Event, event_id).state = "Draft"
        session.commit()
        with pytest.raises(FeedNotFound):  # the state is part of the stamp: unpublishing takes effect at once
            cache.get(session, event_id, "xml")
        with pytest.raises(FeedNotFound):
            cache.get(session, 424242, "xml")


def test_conditional_requests():
    from shared.schedule.feeds import Feed

    modified = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    feed = Feed(b"x", '"abc"', modified, "application/xml")
    assert not_modified(feed, '"abc"', None)
    assert not_modified(feed, 'W/"abc", "other"', None)
    assert not_modified(feed, "*", None)
    assert not not_modified(feed, '"other"', modified)  # If-None-Match wins over If-Modified-Since
    assert not_modified(feed, None, modified)
    assert not_modified(feed, None, modified.replace(tzinfo=None) + timedelta(hours=1))
    assert not not_modified(feed, None, modified - timedelta(seconds=1))
    assert not not_modified(feed, None, None)
