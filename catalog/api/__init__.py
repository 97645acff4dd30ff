"""The HTTP contract (README, "HTTP API") without a web framework: request parsing, problem details,
the OpenAPI document and the bodies of responses. function_app.py adapts azure.functions requests
and responses to these plain functions, so the contract is testable without the Functions runtime
and the app stays a thin edge. This layer imports the core; the core never imports it.
"""
from .openapi import ROUTES, openapi
from .parsing import (
                      MAX_BODY_BYTES,
                      RESERVED_PARAMS,
                      check_json_content_type,
                      keyed_request,
                      parse_body,
                      parse_changes,
                      parse_fields,
                      parse_history,
                      parse_query,
                      parse_wait,
                      records_from_body,
)
from .problems import PROBLEM_JSON, problem, problem_for
from .responses import ROUTE_PREFIX, accepted_body, operation_location, recovery_body

__all__ = ["ROUTES", "openapi", "MAX_BODY_BYTES", "RESERVED_PARAMS", "check_json_content_type", "parse_body",
           "parse_query", "parse_fields", "keyed_request", "parse_changes", "parse_history", "parse_wait",
           "records_from_body", "PROBLEM_JSON", "problem", "problem_for", "ROUTE_PREFIX", "accepted_body",
           "operation_location", "recovery_body"]
