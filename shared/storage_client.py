"""The one client of the storage service: its RPC control plane and its HTTP data plane, for every other service.

Services get it from the ``Storage`` DependencyProvider (``storage = Storage(expiration=30)``) and call it as a
domain object: ``storage.signed_url(key, ...)``, ``storage.put(key, chunks, content_type=...)``,
``with storage.get(key, ttl=...) as download``, ``storage.stat(key)``, ``storage.delete(key)``, the backend
records of the admin API. Every RPC has a deadline (``RPC_TIMEOUT``: ``shared.rpc.RpcTimeout`` when storage does
not answer), and storage's refusals arrive as the exception types below, never as ``RemoteError`` names to compare.

Bytes move only over HTTP: signed links carry the public base URL (``STORAGE_URL``), and services reach the data
plane over the internal one (``STORAGE_INTERNAL_URL``); a link a backend presigned for itself (S3, GCS) is used as
it is. The data plane's own failures are ``StorageUnreachable`` (no answer) and ``StorageRefused`` (an HTTP status
other than the expected one); callers word them for their users.

Retries (``retrying``): a job whose dependency is briefly down asks for a link again in place, within its
``RetryWindow``; transfers, reads of single links and deletes are never retried here (the job reruns around them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import requests
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy

from shared import object_batch
from shared.config import Settings, load_settings
from shared.contracts import STORAGE
from shared.object_batch import BatchItem
from shared.rpc import call

__all__ = [
    "BackendCheckFailed",
    "BackendError",
    "BackendExists",
    "Download",
    "InactiveBackend",
    "InvalidBackendConfig",
    "InvalidKey",
    "ObjectGone",
    "ObjectNotFound",
    "Storage",
    "StorageClient",
    "StorageFault",
    "StorageRefused",
    "StorageUnreachable",
    "UnknownBackend",
]

T = TypeVar("T")
Retry = Callable[[Callable[[], T], str], T]  # (step, what) -> the step's result, retried while storage is down
UPLOAD_TIMEOUT = (10, 300)  # (connect, read) seconds of a data-plane PUT: storage answers once the body is stored
DOWNLOAD_TIMEOUT = (10, 120)
PUT_LINK_TTL = 3600


class StorageFault(Exception):
    """Something storage said or failed to say; ``str()`` is storage's message, safe to show."""


# --- storage's refusals, raised by its RPCs (the storage service raises exceptions of the same names) --------------

class InvalidKey(StorageFault):
    """The key is not a valid object key."""


class ObjectNotFound(StorageFault):
    """No object was ever stored at the key (``must_exist``)."""


class ObjectGone(StorageFault):
    """The object expired or was deleted; the message says which and when."""


class BackendError(StorageFault):
    """The backend holding the object failed or could not be reached."""


class UnknownBackend(StorageFault):
    """No backend record has that ``storage_backend_id``."""


class InactiveBackend(StorageFault):
    """The backend record exists but takes no new objects."""


class InvalidBackendConfig(StorageFault):
    """A backend record's body is not valid."""


class BackendCheckFailed(StorageFault):
    """The probe of a new or changed backend record failed."""


class BackendExists(StorageFault):
    """A backend record with that ``storage_backend_id`` exists already."""


class InvalidArgument(StorageFault):
    """An argument storage refused (``ValueError`` there: a bad ttl, method or keep_seconds)."""


# The @remote_error registry: storage's exception type name -> the local type raised in its place. A RemoteError
# of any other type is raised as it is (a bug on either side, not a refusal a caller handles).
REMOTE_ERRORS: dict[str, type[StorageFault]] = {
    cls.__name__: cls for cls in (InvalidKey, ObjectNotFound, ObjectGone, BackendError, UnknownBackend,
                                  InactiveBackend, InvalidBackendConfig, BackendCheckFailed, BackendExists)
}
REMOTE_ERRORS["ValueError"] = InvalidArgument


# --- the data plane's failures ---------------------------------------------------------------------------------------

class StorageUnreachable(StorageFault):
    """The data plane did not answer (connection refused or cut, timeout); ``str()`` is the transport's message."""


class StorageRefused(StorageFault):
    """The data plane answered with another status than expected."""

    def __init__(self, status: int, body: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body  # at most 300 characters of the answer, for logs and operators


@dataclass
class Download:
    """An object streaming from the data plane: ``size`` (``None`` if storage did not say), then ``chunks``."""

    response: requests.Response
    size: int | None

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        return self.response.iter_content(chunk_size)


def _local_error(exc: RemoteError) -> Exception:
    local = REMOTE_ERRORS.get(exc.exc_type)
    return exc if local is None else local(str(exc.value))


@dataclass
class StorageClient:
    """Storage as one object (see the module docstring); built per worker by ``Storage``."""

    proxy: Any  # nameko's ServiceProxy for "storage"
    settings: Settings
    retry: Retry | None = None  # links asked for again in place (``retrying``)
    # The worker's HTTP session, shared with the clients ``retrying`` derives (a dict: ``replace`` keeps it).
    _http: dict[str, requests.Session] = field(default_factory=dict)

    # -- control plane ---------------------------------------------------------------------------------------------

    def _call(self, method: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            return call(self.proxy, method, *args, timeout=self.settings.rpc_timeout if timeout is None else timeout,
                        **kwargs)
        except RemoteError as exc:
            raise _local_error(exc) from None

    def retrying(self, retry: Retry) -> StorageClient:
        """The same client whose ``signed_url`` (and so ``put``/``get``) runs through ``retry(step, what)``."""
        return replace(self, retry=retry)

    def signed_url(self, key: str, **options: Any) -> str:
        """A link for ``key`` (``method``, ``ttl``, ``filename``, ``backend``, ``retention``, ``must_exist``,
        ``data_plane_only``, ``owner``, ``keep_seconds``: see ``StorageService.signed_url``)."""
        if self.retry is None:
            return self._call("signed_url", key, **options)
        return self.retry(lambda: self._call("signed_url", key, **options), "signed_url")

    def platform_link(self, key: str, ttl: int) -> str | None:
        """An internal data-plane link to read the platform object ``key``, only if storage holds it
        (``ObjectNotFound``/``ObjectGone`` otherwise); ``None`` if storage gave no data-plane link. Not retried:
        a read that fails reruns the job."""
        link = self._call("signed_url", key, method="GET", ttl=ttl, must_exist=True, data_plane_only=True)
        return self.data_plane_url(link)

    def stat(self, key: str) -> dict[str, Any] | None:
        return self._call("stat", key)

    def delete(self, key: str) -> bool:
        return self._call("delete", key)

    def expire_after(self, key: str, seconds: int) -> bool:
        return self._call("expire_after", key, seconds)

    def stored_bytes(self, owner: int) -> int:
        return self._call("stored_bytes", owner)

    # -- backend records (the admin API) ------------------------------------------------------------------------------

    def list_backends(self, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """The backend records in creation order: all, or ``limit`` after the identifier ``after`` (keyset)."""
        return self._call("list_backends", limit, after)

    def backend_choices(self, limit: int | None = None, after: str | None = None) -> list[dict[str, Any]]:
        """The default backend, then the active records by identifier: all, or ``limit`` after ``after`` (the
        default entry's sort key is ``""``)."""
        return self._call("backend_choices", limit, after)

    def describe_backend(self, identifier: str) -> dict[str, Any] | None:
        return self._call("describe_backend", identifier)

    def create_backend(self, body: Any) -> dict[str, Any]:
        return self._call("create_backend", body, timeout=self._probe_timeout())

    def update_backend(self, identifier: str, body: Any) -> dict[str, Any]:
        return self._call("update_backend", identifier, body, timeout=self._probe_timeout())

    def deactivate_backend(self, identifier: str) -> dict[str, Any]:
        return self._call("deactivate_backend", identifier)

    def _probe_timeout(self) -> float:
        # Creating or changing a record probes the backend first: STORAGE_PROBE_TIMEOUT on top of the RPC's own.
        return self.settings.rpc_timeout + self.settings.storage_probe_timeout

    # -- data plane ----------------------------------------------------------------------------------------------------

    def data_plane_url(self, link: str) -> str | None:
        """The internal address of a data-plane link (public base URL -> internal one), ``None`` for other links."""
        public = self.settings.storage_url
        if not link.startswith(public + "/"):
            return None
        return self.settings.storage_internal_url + link[len(public):]

    def internal_url(self, link: str) -> str:
        """Where to send a request for ``link``: the data plane over the internal network, a backend's own
        presigned URL as it is."""
        return self.data_plane_url(link) or link

    def session(self) -> requests.Session:
        """One HTTP session per client (a worker's), closed by ``close``; never through a proxy of the
        environment: the data plane is an internal hop."""
        http = self._http.get("session")
        if http is None:
            http = self._http["session"] = requests.Session()
            http.trust_env = False
        return http

    def close(self) -> None:
        http = self._http.pop("session", None)
        if http is not None:
            http.close()

    def put(self, key: str, chunks: Iterable[bytes], *, content_type: str, link_ttl: int = PUT_LINK_TTL,
            timeout: tuple[float, float] = UPLOAD_TIMEOUT, **link: Any) -> dict[str, Any]:
        """Stream ``chunks`` to storage under ``key`` (a chunked PUT on a signed link): what storage recorded,
        ``{"key", "size", "sha256", "backend", "expires_at", ...}``. ``link`` goes to ``signed_url`` (``backend``,
        ``retention``, ``owner``, ``keep_seconds``)."""
        url = self.internal_url(self.signed_url(key, method="PUT", ttl=link_ttl, **link))
        try:
            # iter(): requests would form-encode a list; an iterator is always a chunked body.
            response = self.session().put(url, data=iter(chunks), headers={"Content-Type": content_type},
                                          timeout=timeout)
        except requests.RequestException as exc:
            raise StorageUnreachable(str(exc)) from exc
        if response.status_code != 201:
            raise StorageRefused(response.status_code, response.text[:300])
        return response.json()

    def put_many(self, prefix: str, items: Iterable[BatchItem], *, link_ttl: int = PUT_LINK_TTL,
                 timeout: tuple[float, float] = UPLOAD_TIMEOUT,
                 on_item: Callable[[BatchItem], None] = lambda item: None, **link: Any) -> list[dict[str, Any]]:
        """Stream many objects whose keys start with ``prefix`` to storage in one request, on one link
        (``shared.object_batch``): what storage recorded for each, in order. ``on_item`` is called as each object's
        bytes have been sent. ``link``: as for ``put``."""
        url = self.internal_url(self.signed_url(prefix, method=object_batch.SIGN_METHOD, ttl=link_ttl, **link))
        try:
            response = self.session().post(url, data=object_batch.encode(items, on_item),
                                           headers={"Content-Type": object_batch.CONTENT_TYPE}, timeout=timeout)
        except requests.RequestException as exc:
            raise StorageUnreachable(str(exc)) from exc
        if response.status_code != 201:
            raise StorageRefused(response.status_code, response.text[:300])
        return response.json()["objects"]

    @contextmanager
    def get(self, key: str, *, ttl: int, timeout: tuple[float, float] = DOWNLOAD_TIMEOUT) -> Iterator[Download]:
        """Stream ``key`` from storage; a broken connection while the caller reads is ``StorageUnreachable`` too."""
        url = self.internal_url(self.signed_url(key, method="GET", ttl=ttl))
        try:
            with self.session().get(url, stream=True, timeout=timeout) as response:
                if response.status_code != 200:
                    raise StorageRefused(response.status_code)
                yield Download(response, int(response.headers.get("Content-Length") or 0) or None)
        except requests.RequestException as exc:
            raise StorageUnreachable(str(exc)) from exc


class Storage(RpcProxy):
    """DependencyProvider handing each worker a ``StorageClient`` over an RPC proxy to the storage service."""

    def __init__(self, **options: Any) -> None:
        super().__init__(STORAGE, **options)
        self.clients: dict[Any, StorageClient] = {}

    def setup(self) -> None:
        super().setup()
        self.settings = load_settings()

    def get_dependency(self, worker_ctx: Any) -> StorageClient:
        client = StorageClient(super().get_dependency(worker_ctx), self.settings)
        self.clients[worker_ctx] = client
        return client

    def worker_teardown(self, worker_ctx: Any) -> None:
        client = self.clients.pop(worker_ctx, None)
        if client is not None:
            client.close()
