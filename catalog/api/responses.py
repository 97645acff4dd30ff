"""Bodies of successful responses: what the service returns, as the HTTP contract shows it."""
from __future__ import annotations

from ..materializer import ApplyResult
from ..service import Accepted

ROUTE_PREFIX = "/api"  # host.json's routePrefix


def operation_location(op_id: str) -> str:
    return f"{ROUTE_PREFIX}/operations/{op_id}"


def accepted_body(result: Accepted, count_name: str) -> dict:
    """`{operation, status, records|matched}` of an accepted write."""
    return {"operation": result.operation, "status": result.status, count_name: result.count}


def recovery_body(result: ApplyResult) -> dict:
    return result.view()
