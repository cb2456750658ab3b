"""Shared schedule helpers: GUIDs, slugs, XML-safe text, conference days and durations."""

from __future__ import annotations

import re
from datetime import date, datetime, time

import pytest

from shared.schedule import days, identity, xmltext

EVENT = {"id": 7, "identifier": "fossasia16", "name": "FOSSASIA 2016", "timezone": "Asia/Singapore"}


def test_guid_is_stable_and_distinct_per_kind_and_id():
    a = identity.record_guid(EVENT, "session", {"id": 1, "title": "old"})
    assert a == identity.record_guid(EVENT, "session", {"id": 1, "title": "edited"})
    assert a != identity.record_guid(EVENT, "speaker", {"id": 1})
    assert a != identity.record_guid(EVENT, "session", {"id": 2})
    assert a != identity.record_guid({**EVENT, "identifier": "other"}, "session", {"id": 1})
    assert identity.is_guid(a)


def test_guid_kept_from_x_schedule_and_invalid_one_ignored():
    own = "EC04B6EF-F85F-47B0-A799-0DA8C33BFA61"
    assert identity.record_guid(EVENT, "session", {"id": 1, "x-schedule": {"guid": own}}) == own.lower()
    bad = identity.record_guid(EVENT, "session", {"id": 1, "x-schedule": {"guid": "nope"}})
    assert bad == identity.record_guid(EVENT, "session", {"id": 1})
    with pytest.raises(ValueError):
        identity.record_guid(EVENT, "talk", {"id": 1})


@pytest.mark.parametrize("title", ["Héllo wörld", "", "!!!", "a" * 500, "日本語", None])
def test_slugs_match_the_xsd_patterns(title):
    slug = identity.session_slug(EVENT, {"id": 12, "title": title})
    assert re.fullmatch(r"[a-z0-9_]{4,}-[a-z0-9\-_]{4,}", slug)
    assert re.fullmatch(r"[a-z][a-z0-9-]+", identity.track_slug({"id": 3, "name": title}))
    assert re.fullmatch(r"[a-z0-9_-]{4,}", identity.acronym({"id": 1, "name": title}))


def test_xml_text_strips_what_xml_forbids():
    assert xmltext.xml_text("a\x06b\x00c\ud800d\ufffee\tf\ng\x7f\x85") == "abcde\tf\ng\x85"
    assert xmltext.xml_text(None) == ""
    assert xmltext.forbidden_count("\x06\x07ok") == 2
    assert xmltext.calendar_text("a\r\nb\x7fc\x1b") == "a\nbc"


def test_durations():
    assert days.format_duration(90) == "01:30"
    assert days.format_duration(-5) == "00:00"
    assert days.format_duration(10_000) == "99:59"
    assert days.parse_duration("01:30") == 90
    assert days.parse_duration("1:30:45") == 91
    with pytest.raises(days.BadTime):
        days.parse_duration("1h30")


def test_conference_day_uses_day_change_and_local_dates():
    assert days.conference_date(datetime(2016, 3, 19, 1, 30)) == date(2016, 3, 18)
    assert days.conference_date(datetime(2016, 3, 19, 4, 0)) == date(2016, 3, 19)
    assert days.conference_date(datetime(2016, 3, 19, 1, 30), time(0, 0)) == date(2016, 3, 19)
    tz = days.zone("Europe/Berlin")
    [first, second] = days.conference_days(date(2015, 3, 28), date(2015, 3, 29), tz)
    assert days.iso_local(first.start) == "2015-03-28T04:00:00+01:00"
    assert days.iso_local(second.start) == "2015-03-29T04:00:00+02:00"  # after the DST switch
    assert (first.index, second.index) == (1, 2)


def test_day_change_parsing_and_unknown_zone():
    assert days.parse_day_change(None) == time(4, 0)
    assert days.parse_day_change("06:30") == time(6, 30)
    with pytest.raises(days.BadTime):
        days.parse_day_change("25:00")
    assert days.event_day_change({"x-schedule": {"day_change": "garbage"}}) == time(4, 0)
    assert days.zone_name(days.zone("Not/AZone")) == "UTC"
    assert days.zone_name(days.zone("../../etc/passwd")) == "UTC"


@pytest.mark.parametrize(("name", "kind"), [("Lightning Talk", "LIGHTNING_TALK"), ("Talk", "TALK"),
                                            ("Workshop", "WORKSHOP"), ("Panel", "DISCUSSION"), ("", "OTHER"),
                                            ("Keynote", "TALK"), ("Hands-on lab", "HANDS-ON"), ("Welcome", "OTHER")])
def test_schedule2_event_types(name, kind):
    from shared.schedule.schedule2_json import event_type

    assert event_type(name) == kind


@pytest.mark.parametrize(("value", "code"), [("en", "en"), ("English", "en"), ("Deutsch", "de"), ("pt-BR", "pt"),
                                             ("", "en"), ("Klingon", "en"), ("DE", "de")])
def test_schedule2_languages(value, code):
    from shared.schedule.schedule2_json import language

    assert language(value) == code


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/Sao_Paulo", "Australia/Lord_Howe", "Asia/Singapore",
                                       "America/New_York", "Pacific/Chatham"])
def test_vtimezone_gives_the_tz_databases_offsets(zone_name):
    """The VTIMEZONE alone (under a TZID no zone database knows) reproduces zoneinfo's offset at every hour."""
    from datetime import UTC, timedelta
    from zoneinfo import ZoneInfo

    import icalendar

    from shared.schedule.calendar import vtimezone
    from shared.schedule.ical import lines

    tz = ZoneInfo(zone_name)
    start, end = datetime(2015, 1, 1, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC)
    component = vtimezone(tz, "X-Unknown-Zone", start, end)
    text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:t\r\n" + "".join(lines(component)) + "END:VCALENDAR\r\n"
    [parsed] = icalendar.Calendar.from_ical(text).walk("VTIMEZONE")
    assert {c.name for c in parsed.subcomponents} <= {"STANDARD", "DAYLIGHT"}
    built = parsed.to_tz(lookup_tzid=False)
    moment = start + timedelta(days=2)
    while moment < end - timedelta(days=2):
        local = moment.astimezone(tz).replace(tzinfo=None)
        if local.replace(tzinfo=tz, fold=0).utcoffset() == local.replace(tzinfo=tz, fold=1).utcoffset():
            assert built.utcoffset(local) == moment.astimezone(tz).utcoffset(), (zone_name, local)  # not at folds
        moment += timedelta(hours=1)
