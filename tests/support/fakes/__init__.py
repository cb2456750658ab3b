"""Small HTTP fakes of services that have no local server (Dropbox, Seafile), written from their public API docs.

Each runs as its own process (``python -m tests.support.fakes.<name>``) so that its memory and CPU are not the client's.
What they do not prove is listed in ``services/storage/backends/README.md``.
"""
