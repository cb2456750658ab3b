"""The export formats: each a small declared class in one registry (the idea of pretalx's exporters).

A format names itself (``identifier``, the last segment of ``POST /v1/events/<id>/export/<identifier>``), the file
it produces (``extension``, ``content_type``) and writes an event as a stream of byte chunks (``write``). HTTP and
storage stay outside: the gateway validates the identifier against the registry, the exporter streams what
``write`` yields to storage. Add a format by declaring a subclass and decorating it with ``@register``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import ClassVar

from sqlalchemy.orm import Session, sessionmaker

from shared.archive.media_pass import MediaSource
from shared.archive.writer import ExportReport, ProgressCallback, generate_archive
from shared.media_fetcher import MediaFetcher
from shared.object_keys import archive_filename
from shared.schedule import frab_xml, ical, pentabarf, schedule2_json, schedule_json, xcal
from shared.schedule.csv_export import write_csv_zip
from shared.schedule.export import Renderer, chunked, stream_schedule
from shared.schedule.snapshot import Schedule

DEFAULT_FORMAT = "json"


class ExportFormat:
    """One export format. Subclasses only declare: the class attributes below and the ``writer`` that makes the
    bytes, which ``write`` calls with ``db``, ``event_id`` and those of its other arguments the writer names (plus
    the format's ``render``, for a writer that takes one)."""

    identifier: ClassVar[str]
    extension: ClassVar[str]  # with its dot: ".zip"
    content_type: ClassVar[str]
    description: ClassVar[str]
    writer: ClassVar[Callable[..., Iterator[bytes]]]

    def write(self, db: sessionmaker[Session], event_id: int, options: dict[str, bool], *,
              fetcher: MediaFetcher | MediaSource, root_url: str, exported_at: datetime, report: ExportReport,
              on_progress: ProgressCallback) -> Iterator[bytes]:
        """The event's bytes, chunk by chunk, without the whole file in memory; ``report`` is complete at the end.
        Raises ``shared.archive.writer.EventNotFound`` on the first chunk when the event is gone."""
        writer = type(self).writer
        given = {"options": options, "fetcher": fetcher, "root_url": root_url, "exported_at": exported_at,
                 "report": report, "on_progress": on_progress, "render": getattr(type(self), "render", None)}
        wanted = inspect.signature(writer).parameters
        return writer(db, event_id, **{name: value for name, value in given.items() if name in wanted})

    def filename(self, event_id: int) -> str:
        return archive_filename(event_id, self.extension)

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {"identifier": cls.identifier, "extension": cls.extension, "content_type": cls.content_type,
                "description": cls.description}


FORMATS: dict[str, ExportFormat] = {}


def register(cls: type[ExportFormat]) -> type[ExportFormat]:
    if cls.identifier in FORMATS:
        raise ValueError(f"export format {cls.identifier!r} is registered twice")
    FORMATS[cls.identifier] = cls()
    return cls


class UnknownFormat(LookupError):
    def __init__(self, identifier: str) -> None:
        super().__init__(f"No export format {identifier!r}; known formats: {', '.join(FORMATS)}.")
        self.identifier = identifier


def get_format(identifier: str) -> ExportFormat:
    try:
        return FORMATS[identifier]
    except KeyError:
        raise UnknownFormat(identifier) from None


def describe_formats() -> list[dict[str, str]]:
    """What ``GET /v1/formats`` lists, in registration order."""
    return [type(fmt).describe() for fmt in FORMATS.values()]


@register
class OpenEventZip(ExportFormat):
    """The Open Event legacy archive: JSON files, media folders and ``meta`` in a zip (``writer.py``)."""

    identifier = "json"
    extension = ".zip"
    content_type = "application/zip"
    description = "Open Event archive: the event's JSON files (and optionally its media) in a zip"
    writer = staticmethod(generate_archive)


class ScheduleFormat(ExportFormat):
    """A schedule format: the event's public schedule (``shared/schedule/snapshot.py``) rendered by ``render``."""

    render: ClassVar[Renderer]
    writer = staticmethod(stream_schedule)

    def render_schedule(self, schedule: Schedule) -> Iterator[bytes]:
        """The bytes of an already read schedule (the public feeds render from their own read)."""
        return chunked(type(self).render(schedule))


class XmlSchedule(ScheduleFormat):
    """A schedule format written as XML."""

    extension = ".xml"
    content_type = "application/xml"


class JsonSchedule(ScheduleFormat):
    """A schedule format written as JSON."""

    extension = ".json"
    content_type = "application/json"


@register
class FrabXml(XmlSchedule):
    identifier = "frab-xml"
    description = "frab schedule.xml (C3VOC schedule.xml.xsd): Giggity, EventFahrplan, C3VOC tooling"
    render = staticmethod(frab_xml.render)


@register
class ScheduleJson(JsonSchedule):
    identifier = "schedule-json"
    description = "C3VOC schedule.json (schema.json v1): the schedule.xml tree as JSON"
    render = staticmethod(schedule_json.render)


@register
class Schedule2Json(JsonSchedule):
    identifier = "schedule2-json"
    description = "C3VOC schedule.json 2.0 (schema2.json): conference, days and a flat list of events"
    render = staticmethod(schedule2_json.render)


@register
class ICal(ScheduleFormat):
    identifier = "ical"
    extension = ".ics"
    content_type = "text/calendar; charset=utf-8"
    description = "iCalendar (RFC 5545) with the event's time zone as a VTIMEZONE: every calendar program"
    render = staticmethod(ical.render)


@register
class XCal(XmlSchedule):
    identifier = "xcal"
    extension = ".xcal"
    description = "xCal in pentabarf's and frab's <iCalendar> dialect, the same content as the iCal file"
    render = staticmethod(xcal.render)


@register
class Pentabarf(XmlSchedule):
    identifier = "pentabarf"
    description = "Pentabarf-style schedule.xml (as the Open Event Server offered), valid against the C3VOC XSD"
    render = staticmethod(pentabarf.render)


@register
class Csv(ExportFormat):
    identifier = "csv"
    extension = ".zip"
    content_type = "application/zip"
    description = "sessions.csv and speakers.csv in a zip: every session with its state, every speaker"
    writer = staticmethod(write_csv_zip)


def format_choices() -> list[str]:
    return list(FORMATS)


__all__ = ["DEFAULT_FORMAT", "FORMATS", "Csv", "ExportFormat", "FrabXml", "ICal", "JsonSchedule", "OpenEventZip",
           "Pentabarf", "Schedule2Json", "ScheduleFormat", "ScheduleJson", "UnknownFormat", "XCal", "XmlSchedule",
           "describe_formats", "format_choices", "get_format", "register"]
