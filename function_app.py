"""Azure Functions app (Python v2 model): a thin edge over catalog.service.

Each trigger parses its input, calls one service method and maps the result or error to a
response (docs/architecture.md §7). Storage, validation and the apply logic live in catalog/.
"""
from __future__ import annotations

import logging
import os

import azure.functions as func

from catalog import api, codec
from catalog.bootstrap import service_for
from catalog.service import CatalogService
from catalog.settings import Settings

# Fail at start-up, naming the setting, if the configuration is wrong (no I/O here).
# The queue lives in the catalog's storage: the setting (CATALOG_STORAGE or the host's) that the
# catalog's own settings chose, so the trigger and the code that enqueues always agree.
QUEUE_CONNECTION = Settings.from_env(os.environ).storage.setting

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("function_app")
# The Azure SDK logs every storage request's URL and headers at INFO. The worker forwards them to
# the host as this function's logs, which host.json keeps at Information (its "Azure.Core"
# category is the host's own SDK, not this worker's): a log line per storage request, and the
# client CPU to format it. Warnings and errors still come through.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def service() -> CatalogService:
    return service_for(os.environ)


def json_response(status: int, body, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(codec.response_bytes(body), status_code=status,
                             mimetype="application/json", charset="utf-8", headers=headers)


def error_response(error: Exception) -> func.HttpResponse:
    status, body, headers = api.problem_for(error)
    if status >= 500:  # the body only has an error id: the detail is logged under it
        log.error("request failed (error id %s): %s", body.get("error_id"), error, exc_info=error)
    return func.HttpResponse(codec.response_bytes(body), status_code=status,
                             mimetype=api.PROBLEM_JSON, charset="utf-8", headers=headers)


def accepted(result, count_name: str) -> func.HttpResponse:
    body = api.accepted_body(result, count_name)
    if result.operation is None:  # a delete that matched nothing wrote nothing: done, not accepted
        return json_response(200, body)
    return json_response(202, body, {"Location": api.operation_location(result.operation)})


def keyed(req: func.HttpRequest, route: str):
    """The request's Idempotency-Key and fingerprint, if it carries one."""
    return api.keyed_request(req.headers.get("idempotency-key"), req.method, route, dict(req.params),
                             req.get_body())


@app.route(route="records", methods=["POST"])
def post_records(req: func.HttpRequest) -> func.HttpResponse:
    try:
        api.check_json_content_type(req.headers.get("content-type"))
        records, _ = api.records_from_body(api.parse_body(req.get_body()))
        return accepted(service().submit(records, idempotency=keyed(req, "records")), "records")
    except Exception as e:
        return error_response(e)


@app.route(route="records", methods=["GET"])
def get_records(req: func.HttpRequest) -> func.HttpResponse:
    try:
        svc = service()
        q = api.parse_query(req.params, svc.schema)
        page = svc.query(q.pop("filters"), **q)
        return json_response(200, {"items": page.items, "continuation": page.continuation})
    except Exception as e:
        return error_response(e)


@app.route(route="records/count", methods=["GET"])
def count_records(req: func.HttpRequest) -> func.HttpResponse:
    try:
        svc = service()
        q = api.parse_query(req.params, svc.schema, kind="count")
        return json_response(200, {"count": svc.count(q.pop("filters"), **q)})
    except Exception as e:
        return error_response(e)


@app.route(route="records/history", methods=["GET"])
def get_record_history(req: func.HttpRequest) -> func.HttpResponse:
    try:
        svc = service()
        q = api.parse_history(req.params, svc.schema)
        return json_response(200, {"items": [c.view() for c in svc.history(q["identity"], as_of=q["as_of"])]})
    except Exception as e:
        return error_response(e)


@app.route(route="changes", methods=["GET"])
def get_changes(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(200, service().changes(**api.parse_changes(req.params)).view())
    except Exception as e:
        return error_response(e)


@app.route(route="records", methods=["DELETE"])
def delete_records(req: func.HttpRequest) -> func.HttpResponse:
    try:
        svc = service()
        q = api.parse_query(req.params, svc.schema, kind="delete")
        return accepted(svc.delete(q.pop("filters"), **q, idempotency=keyed(req, "records")), "matched")
    except Exception as e:
        return error_response(e)


@app.route(route="operations/{id}", methods=["GET"])
def get_operation(req: func.HttpRequest) -> func.HttpResponse:
    op_id = req.route_params.get("id", "")
    try:
        wait = api.parse_wait(req.params)
        svc = service()
        svc.check_operation_id(op_id)
        return json_response(200, svc.wait_for_operation(op_id, wait))
    except Exception as e:
        return error_response(e)


@app.route(route="schema", methods=["GET"])
def get_schema(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(200, service().schema_view())
    except Exception as e:
        return error_response(e)


@app.route(route="health", methods=["GET"])
def get_health(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(200, service().health())
    except Exception as e:
        return error_response(e)


# `admin/...` routes are reserved by the Functions host (they clash with its admin API).
@app.route(route="manage/recover", methods=["POST"], auth_level=func.AuthLevel.ADMIN)
def post_recover(req: func.HttpRequest) -> func.HttpResponse:
    try:
        result = service().recover(req.params.get("since") or None)
        return json_response(200, api.recovery_body(result))
    except Exception as e:
        return error_response(e)


@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def get_openapi(req: func.HttpRequest) -> func.HttpResponse:
    try:
        return json_response(200, api.openapi(Settings.from_env(os.environ).schema))
    except Exception as e:
        return error_response(e)


@app.queue_trigger(arg_name="msg", queue_name="%CATALOG_QUEUE%", connection=QUEUE_CONNECTION)
def apply_wal_message(msg: func.QueueMessage) -> None:
    """Apply the WAL entries the message names. Raising makes the host retry it, then poison it."""
    service().apply_message(msg.get_body().decode("utf-8"))


@app.queue_trigger(arg_name="msg", queue_name="%CATALOG_QUEUE%-poison", connection=QUEUE_CONNECTION)
def fail_poison_message(msg: func.QueueMessage) -> None:
    """A message the host gave up on: one last try, then what fails is recorded on the operation."""
    service().apply_poison(msg.get_body().decode("utf-8"))


@app.timer_trigger(arg_name="timer", schedule="%CATALOG_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sweep_wal(timer: func.TimerRequest) -> None:
    result = service().sweep()
    log.info("sweep: %d operations, %d entries applied, %d failed, %d tombstones and %d idempotency keys "
             "collected, shards stopped %s", result.operations, result.entries, result.failed,
             result.tombstones_collected, result.keys_collected, result.stopped_shards)
