"""The platform database's models, one module per owner (docs/architecture.md, "Services and their data").

- ``events``: event data, users and their event roles: shared by every service;
- ``gateway``, ``importer``, ``mailer``, ``storage``, ``webhooks``: each service's own tables; ``jobs``: the job
  lifecycle's leases.

Importing any of them imports them all, so ``base.Base.metadata`` holds every table (Alembic migrates one database).
"""

from shared.models import base, events, gateway, importer, jobs, mailer, storage, webhooks  # noqa: F401
