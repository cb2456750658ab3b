"""The Open Event archive in one wing: the format's rules (``legacy``), the hardened reader (``reader``), archive ->
DB (``loader``), DB -> records (``records``), the streaming writer (``writer``) and the export formats (``formats``)."""

from shared.archive.legacy import (
    ARRAY_FILES,
    FILES,
    LEADING_FIELDS,
    MEDIA_FIELDS,
    MediaField,
    MediaTarget,
    dump_meta,
    dump_object,
    dump_record,
    format_datetime,
    iter_array_text,
    media_fields,
    media_path,
    media_targets,
    name_slug,
    nested_session_type_length,
    order_record,
    url_extension,
)
from shared.archive.loader import LoadError, LoadResult, load_archive
from shared.archive.records import event_record, iter_file_text, iter_records
from shared.contracts import MEDIA_FLAGS

__all__ = [
    "ARRAY_FILES",
    "FILES",
    "LEADING_FIELDS",
    "MEDIA_FIELDS",
    "MEDIA_FLAGS",
    "LoadError",
    "LoadResult",
    "MediaField",
    "MediaTarget",
    "dump_meta",
    "dump_object",
    "dump_record",
    "event_record",
    "format_datetime",
    "iter_array_text",
    "iter_file_text",
    "iter_records",
    "load_archive",
    "media_fields",
    "media_path",
    "media_targets",
    "name_slug",
    "nested_session_type_length",
    "order_record",
    "url_extension",
]
