"""Local hosting for the function app where Azure Functions Core Tools are not installed.

This package is the only place besides function_app.py that knows azure.functions; the
catalog core never imports it.

Public API (what ``python -m catalog serve`` and the tests use)::

    from devhost import DevHost          # devhost.host.DevHost
    with DevHost("function_app.py", port=0, settings={...}) as host:
        host.url("records")              # http://127.0.0.1:<port>/api/records

``devhost.azurite`` starts the pinned Azurite; ``devhost.schedule`` parses NCRONTAB schedules.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DevHost"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing devhost.azurite (the test fixtures do) does not pull in azure.functions.
    if name == "DevHost":
        from devhost.host import DevHost
        return DevHost
    raise AttributeError(f"module 'devhost' has no attribute {name!r}")
