"""Object backends behind one interface (``base.ObjectBackend``).

Backend modules import their client libraries (boto3, google-cloud-storage, dropbox) themselves, so importing this
package costs nothing and a process that never uses S3 never imports boto3 (which must come after
``eventlet.monkey_patch()``: docs/architecture.md fact 7).
"""

from services.storage.backends.base import ObjectBackend
from services.storage.types import BackendError

__all__ = ["BackendError", "ObjectBackend"]
