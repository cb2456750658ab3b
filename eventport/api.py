"""The HTTP API as the CLI sees it: one ``requests`` session, the server's ``{"error"}`` bodies as ``CliError``,
and list pages followed through ``next_cursor``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests

from eventport import __version__
from eventport.errors import FAILED, UNAVAILABLE, CliError

TIMEOUT = (10, 60)  # connect, read
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PAGE_SIZE = 200  # the API's largest ?limit= (README, Pagination)


def error_from(response: requests.Response) -> CliError:
    """The server's ``{"error": {"code", "message"}}`` as a ``CliError`` (401: exit 3, anything else: exit 1)."""
    code, message = None, None
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = body["error"].get("code")
            message = body["error"].get("message")
    except ValueError:
        pass
    if not message:
        message = f"{response.request.method} {response.url} answered {response.status_code} {response.reason}"
    if response.status_code == 401:
        message += " Log in again: eventport login"
        return CliError(message, UNAVAILABLE, code or "unauthorized", response.status_code)
    return CliError(message, FAILED, code or "http_error", response.status_code)


def unreachable(url: str, exc: Exception) -> CliError:
    if isinstance(exc, requests.ReadTimeout):  # it is running (it took the connection) but does not answer
        return CliError(f"the server at {url} took the connection but did not answer in time (ReadTimeout); it may "
                        "be overloaded or stuck: try again later.", UNAVAILABLE, "unreachable")
    reason = type(exc).__name__ if isinstance(exc, requests.Timeout) else "connection failed"
    return CliError(f"cannot reach the server at {url} ({reason}); is it running? Set --url or EVENTPORT_URL.",
                    UNAVAILABLE, "unreachable")


def not_the_api(path: str, status: int | None = None) -> CliError:
    return CliError(f"{path} answered JSON that is not the platform's answer: is --url the platform's API?",
                    FAILED, "invalid_response", status)


class Api:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.http = requests.Session()
        self.http.headers["User-Agent"] = f"eventport/{__version__}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def request(self, method: str, path: str, *, auth: bool = True, ok: tuple[int, ...] = (200,),
                **kwargs: Any) -> requests.Response:
        """``method path``; raises ``CliError`` unless the status is in ``ok``."""
        headers = dict(kwargs.pop("headers", None) or {})
        if auth:
            if not self.token:
                raise CliError(f"not logged in to {self.base_url}: run eventport login", UNAVAILABLE,
                               "not_logged_in")
            headers["Authorization"] = f"Bearer {self.token}"
        kwargs.setdefault("timeout", TIMEOUT)
        try:
            response = self.http.request(method, self.url(path), headers=headers, **kwargs)
        except requests.ConnectionError as exc:
            raise unreachable(self.base_url, exc) from None
        except requests.Timeout as exc:
            raise unreachable(self.base_url, exc) from None
        except requests.RequestException as exc:
            raise CliError(f"request to {self.url(path)} failed: {exc}", FAILED, "request_failed") from None
        if response.status_code not in ok:
            raise error_from(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise CliError(f"{path} did not answer JSON", FAILED, "invalid_response", response.status_code) from None
        if not isinstance(body, dict):  # every answer of the API is an object: this is not the platform
            raise not_the_api(path, response.status_code)
        return body

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.json("GET", path, **kwargs)

    def pages(self, path: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list, following ``next_cursor`` until it is null (lists without one are one page)."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        seen: set[str] = set()
        while True:
            page = self.get(path, params=params, **kwargs)
            data, cursor = page.get("data") or [], page.get("next_cursor")
            if not isinstance(data, list) or not all(isinstance(item, dict) for item in data) or not isinstance(
                    cursor, str | None):
                raise not_the_api(path)
            yield from data
            if not cursor or cursor in seen:  # a cursor seen before would loop for ever
                return
            seen.add(cursor)
            params = {**params, "cursor": cursor}
