"""``GET /schema``: a small self-contained page that lists the routes and links the OpenAPI
document (``/schema/openapi.json``). Litestar's viewers load scripts and fonts from CDNs, so
they show nothing offline; this page loads nothing at all."""

from __future__ import annotations

from html import escape
from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

__all__ = ["SchemaPage"]

_METHODS = ("get", "put", "post", "delete", "patch")
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}"
    "td,th{padding:.2rem .8rem;text-align:left;vertical-align:top}"
    "code{font-size:95%}"
)


class SchemaPage(OpenAPIRenderPlugin):
    """The page served at the OpenAPI root path."""

    def __init__(self) -> None:
        super().__init__(path="/")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        json_url = escape(self.get_openapi_json_route(request))
        info = openapi_schema.get("info", {})
        title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
        rows = []
        for path, item in openapi_schema.get("paths", {}).items():
            for method in _METHODS:
                operation = item.get(method)
                if isinstance(operation, dict):
                    rows.append(
                        f"<tr><td><code>{method.upper()}</code></td>"
                        f"<td><code>{escape(path)}</code></td>"
                        f"<td>{escape(str(operation.get('summary', '')))}</td></tr>"
                    )
        page = (
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{title}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{title}</h1>"
            f'<p>The OpenAPI 3.1 document: <a href="{json_url}">{json_url}</a> (load it into any '
            "OpenAPI viewer or client generator). Request and answer fields: docs/http-api.md."
            "</p><table><tr><th>method</th><th>path</th><th>what</th></tr>"
            f"{''.join(rows)}</table></body></html>"
        )
        return page.encode()
