"""``eventport``: the command-line client of the event-data portability platform. It speaks only the HTTP API."""

__version__ = "0.1.0"
