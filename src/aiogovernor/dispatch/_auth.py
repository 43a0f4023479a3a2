"""`SecretAuth`: the API key sent by an ``httpx.Auth`` at send time (imported when a client first sends)."""

from __future__ import annotations

from collections.abc import Generator

import httpx

from ._protocol import ServerlessProtocol
from ._secret import Secret

__all__ = ["SecretAuth"]


class SecretAuth(httpx.Auth):
    """Adds the protocol's auth headers to each request as it is sent.

    The key is read from its `Secret` inside one expression, so that it is
    never bound to a local name of any frame a traceback could capture (a
    header dict built by the caller would sit in the caller's locals, where
    ``pytest -l``, rich tracebacks and error trackers read it).
    """

    def __init__(self, secret: Secret, protocol: ServerlessProtocol) -> None:
        self._secret = secret
        self._protocol = protocol

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.update(self._protocol.auth_headers(self._secret.reveal()))
        yield request

    def __repr__(self) -> str:
        return "<SecretAuth <secret>>"
