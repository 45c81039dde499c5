"""A credential goes only to the host it was configured for, redirects included.

httpx follows a redirect to another origin dropping only `Authorization`; the provider SDKs
under litellm follow redirects and send their keys in other headers (Azure's `api-key`, Gemini's
`x-goog-api-key`, ...), so a base URL that answers `307 Location: https://elsewhere/` would hand
the key to `elsewhere`. Installed once when litellm is first used, the rule here drops every
header `promptcast._secrets.SECRET_HEADERS` names whenever httpx redirects away from the origin
(a plain `http` to `https` upgrade of the same host keeps them, as httpx keeps `Authorization`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from promptcast._secrets import SECRET_HEADERS

if TYPE_CHECKING:
    import httpx

__all__ = ["keep_credentials_on_origin"]

_lock = threading.Lock()
_installed = False


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port if url.port is not None else {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


def _is_https_upgrade(url: httpx.URL, location: httpx.URL) -> bool:
    return _origin(url) == ("http", location.host, 80) and _origin(location) == (
        "https",
        url.host,
        443,
    )


def keep_credentials_on_origin() -> None:
    """Make every httpx client in the process drop secret headers on a cross-origin redirect."""
    global _installed
    with _lock:
        if _installed:
            return
        from httpx._client import BaseClient

        original = BaseClient._redirect_headers

        def _redirect_headers(
            self: Any, request: httpx.Request, url: httpx.URL, method: str
        ) -> Any:
            headers = original(self, request, url, method)
            if _origin(url) != _origin(request.url) and not _is_https_upgrade(request.url, url):
                for name in SECRET_HEADERS:
                    headers.pop(name, None)
            return headers

        BaseClient._redirect_headers = _redirect_headers  # type: ignore[method-assign]
        _installed = True
