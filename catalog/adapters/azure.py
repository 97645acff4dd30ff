"""Azure Storage adapters (Tables and Queues, also Azurite). The only modules that import the Azure SDKs.

azure.core exceptions are translated here into the catalog's own (`raise ... from e`), so the
rest of the package reasons about ConflictError / TransientStorageError, never status numbers.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote, urlparse

import requests
from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.data.tables import EntityProperty, TableServiceClient, UpdateMode
from azure.storage.queue import QueueClient, TextBase64EncodePolicy
from requests.adapters import HTTPAdapter
from requests.hooks import default_hooks
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity
from urllib3.util.retry import Retry

from ..errors import ConflictError, SettingsError, StorageError, TableNotFoundError, TransientStorageError
from ..settings import CONNECT_TIMEOUT, WAL_READ_TIMEOUT, WAL_WRITE_ATTEMPTS, StorageConfig
from ..store import Entity

log = logging.getLogger(__name__)

_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
# What a conditional write in a transaction answers when another writer got there first.
_CONFLICT_CODES = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound", "EntityNotFound"}

# Client-side bounds for every request: with the server-side `timeout` on WAL writes they bound
# how long a WAL append can take (the sweep's settle window relies on it; see wal.py).
CLIENT_OPTIONS: dict[str, Any] = dict(retry_total=3, retry_backoff_factor=0.5, retry_backoff_max=4,
                                      connection_timeout=CONNECT_TIMEOUT, read_timeout=20)


def bounded_write(timeout: int | None) -> dict[str, Any]:
    """Per-request options of a write given a server-side `timeout` (the WAL's): the service gives up
    after it, and the client sends it at most WAL_WRITE_ATTEMPTS times, waiting WAL_READ_TIMEOUT for
    each answer, so it lands within settings.WRITE_BOUND of its start or never."""
    if not timeout:
        return {}
    return {"timeout": timeout, "retry_total": WAL_WRITE_ATTEMPTS - 1, "read_timeout": WAL_READ_TIMEOUT}


def translate(e: Exception, what: str) -> Exception:
    if isinstance(e, (ResourceExistsError, ResourceModifiedError)):
        return ConflictError(f"{what}: {e.message if hasattr(e, 'message') else e}")
    if isinstance(e, (ServiceRequestError, ServiceResponseError)):
        return TransientStorageError(f"{what}: storage unreachable: {e}")
    if isinstance(e, HttpResponseError) and e.status_code in _TRANSIENT_STATUS:
        return TransientStorageError(f"{what}: storage answered {e.status_code} {e.reason}")
    code = getattr(e, "error_code", None)
    if isinstance(e, HttpResponseError) and getattr(code, "value", code) == "TableNotFound":
        return TableNotFoundError(f"{what}: the table does not exist")
    if isinstance(e, HttpResponseError):
        code = getattr(e, "error_code", None)
        return StorageError(f"{what}: storage answered {e.status_code} {code or e.reason}: {e.message}")
    return StorageError(f"{what}: {e}")


def credential_for(config: StorageConfig):
    """The token credential for an identity-based connection (the `__credential`/`__clientId` settings)."""
    return identity_credential(config.credential == "managedidentity", config.client_id)


def identity_credential(managed_identity: bool, client_id: str | None):
    """ManagedIdentityCredential when the settings say `managedidentity` (as the Functions host reads
    them), else DefaultAzureCredential; both for the user-assigned identity `client_id` if given.
    The one place the catalog and the dev host choose a credential."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if managed_identity:
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id) if client_id else DefaultAzureCredential()


class StorageSession(requests.Session):
    """A requests session for the storage SDKs' transport, with a short path for their requests.

    azure-core's RequestsTransport calls `session.request(method, url, headers=, data=, verify=,
    timeout=, cert=, allow_redirects=False, proxies=, stream=)`: a fully formed URL, headers and
    signature set by its policies, no cookies, auth, hooks or redirects. For such a call
    (and trust_env off) this builds the prepared request directly and hands it to the mounted
    adapter, skipping what Session.request would do for nothing here (URL re-parsing and
    re-quoting, cookie jars, hook dispatch, the redirect generator): about a fifth of the
    client's CPU per storage request. The adapter, its connection pool, TLS verification,
    proxies, timeouts and the exceptions azure-core maps are those of any requests call.
    Any other call takes the ordinary path."""

    def request(self, method, url, params=None, data=None, headers=None, cookies=None, files=None, auth=None,
                timeout=None, allow_redirects=True, proxies=None, hooks=None, stream=None, verify=None,
                cert=None, json=None):
        ordinary = (self.trust_env or allow_redirects or params or cookies or files or auth or hooks
                    or json is not None or self.cookies or self.auth is not None)
        if ordinary:
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert,
                                   json=json)
        prepared = PreparedRequest()
        prepared.method = method.upper()
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(self.headers)
        prepared.headers.update(headers or {})
        for header in prepared.headers.items():
            check_header_validity(header)  # as prepare_headers does: no CR/LF smuggled into a header
        prepared.hooks = default_hooks()
        prepared.prepare_body(data, None)
        stream = self.stream if stream is None else stream
        response = self.get_adapter(url).send(
            prepared, stream=stream, timeout=timeout,
            verify=self.verify if verify is None else verify, cert=self.cert if cert is None else cert,
            proxies={**self.proxies, **(proxies or {})})
        if not stream:
            _ = response.content  # read the body now, as Session.send does, so the connection goes back
        return response


def environment_transport(endpoint: str) -> RequestsTransport:
    """An HTTP transport that reads proxy and CA settings from the environment once, here.

    By default requests re-reads them (every proxy variable, NO_PROXY, the CA bundle) on each call:
    about a tenth of the client's CPU per storage request. The storage endpoint is known now, so
    HTTP(S)_PROXY / NO_PROXY are decided for it once, and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE kept.
    The pool holds more connections than the Functions host runs messages at once (24)."""
    session = StorageSession()
    session.trust_env = False
    host = urlparse(endpoint).hostname or ""
    proxies = {k: v for k, v in urllib.request.getproxies_environment().items() if k in ("http", "https")}
    # proxy_bypass_environment exists at runtime (CPython's urllib.request) but typeshed does not declare it
    if proxies and not urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        session.proxies = proxies
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32,
                          max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return RequestsTransport(session=session, session_owner=True, use_env_settings=False,
                             connection_verify=ca_bundle or True)


def _service_uri(config: StorageConfig, suffix: str, uri: str | None) -> str:
    """A service URI of an identity-based connection: parse_storage requires it, a StorageConfig built
    by hand may lack it."""
    if uri is None:
        raise SettingsError(f"{config.setting}__{suffix}", "required for an identity-based connection")
    return uri


def table_service(config: StorageConfig) -> TableServiceClient:
    if config.connection_string is not None:
        endpoint = TableServiceClient.from_connection_string(config.connection_string).url
        return TableServiceClient.from_connection_string(config.connection_string,
                                                         transport=environment_transport(endpoint), **CLIENT_OPTIONS)
    table_uri = _service_uri(config, "tableServiceUri", config.table_uri)
    return TableServiceClient(endpoint=table_uri, credential=credential_for(config),
                              transport=environment_transport(table_uri), **CLIENT_OPTIONS)


def queue_client(name: str, *, connection_string: str | None = None, url: str | None = None, credential=None,
                 **options: Any) -> QueueClient:
    """A QueueClient on environment_transport: from a connection string, or a queue service URL and
    a credential. The catalog's queues and the dev host's trigger pollers both use it."""
    if connection_string is not None:
        endpoint = QueueClient.from_connection_string(connection_string, name).url
        return QueueClient.from_connection_string(connection_string, name, transport=environment_transport(endpoint),
                                                  **options)
    if url is None:
        raise ValueError("queue_client needs a connection_string or a queue service url")
    return QueueClient(url, name, credential=credential, transport=environment_transport(url), **options)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, EntityProperty) else value


def _entity(e) -> Entity:
    return Entity({k: _plain(v) for k, v in e.items()}, e.metadata.get("etag"), e.metadata.get("timestamp"))


_PART_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})", re.MULTILINE)
_INT32 = range(-2 ** 31, 2 ** 31)


def _odata_value(name: str, value: Any) -> dict[str, Any] | None:
    """A property in the service's JSON format, or None for a type left to the SDK."""
    if isinstance(value, str):
        return {name: value, f"{name}@odata.type": "Edm.String"}  # as the SDK annotates strings
    if isinstance(value, bool):
        return {name: value}
    if isinstance(value, int):
        # Wider integers as Edm.Int64 text (the SDK refuses a plain int outside Int32; the service takes this).
        return {name: value} if value in _INT32 else {name: str(value), f"{name}@odata.type": "Edm.Int64"}
    if isinstance(value, float) and math.isfinite(value):
        return {name: value, f"{name}@odata.type": "Edm.Double"}
    return None


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def merge_changeset(endpoint: str, table: str, entities: Sequence[Mapping[str, Any]], *,
                    api_version: str = "2019-02-02", now: datetime | None = None) -> tuple[str, bytes] | None:
    """An entity-group transaction of insert-or-merge operations (OData $batch: one changeset,
    one PATCH per entity without If-Match), as (batch boundary, body); None if a property has a
    type this encoder leaves to the SDK. Byte for byte what the SDK's submit_transaction sends
    for the same upserts, boundaries and dates aside (tests/integration/test_azure_batch.py)."""
    base = endpoint.rstrip("/")
    date = format_datetime(now or datetime.now(UTC), usegmt=True)
    changeset = f"changeset_{uuid.uuid4()}"
    lines: list[str] = []
    for i, entity in enumerate(entities):
        props: dict[str, Any] = {}
        for name, value in entity.items():
            encoded = _odata_value(name, value)
            if encoded is None:
                return None
            props.update(encoded)
        payload = json.dumps(props, ensure_ascii=True)
        url = f"{base}/{table}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
        lines += [f"--{changeset}", "Content-Type: application/http", "Content-Transfer-Encoding: binary",
                  f"Content-ID: {i}", "", f"PATCH {url} HTTP/1.1", "Content-Type: application/json",
                  f"Content-Length: {len(payload)}", f"x-ms-version: {api_version}", "DataServiceVersion: 3.0",
                  "Accept: application/json", f"x-ms-date: {date}", f"Date: {date}", "", payload]
    lines.append(f"--{changeset}--")
    batch = f"batch_{uuid.uuid4()}"
    body = "\r\n".join([f"--{batch}", f"Content-Type: multipart/mixed; boundary={changeset}", "", *lines, "",
                         f"--{batch}--", ""])
    return batch, body.encode("ascii")


class AzureTableStore:
    def __init__(self, service: TableServiceClient):
        self._service = service
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: StorageConfig) -> AzureTableStore:
        return cls(table_service(config))

    def _client(self, table: str):
        client = self._clients.get(table)
        if client is None:
            with self._lock:
                client = self._clients.setdefault(table, self._service.get_table_client(table))
        return client

    def create_table(self, table: str) -> None:
        try:
            self._service.create_table(table)
        except ResourceExistsError:
            pass
        except AzureError as e:
            raise translate(e, f"create table {table}") from e

    def get(self, table: str, pk: str, rk: str) -> Entity | None:
        try:
            return _entity(self._client(table).get_entity(pk, rk))
        except ResourceNotFoundError:
            return None
        except AzureError as e:
            raise translate(e, f"read {table}") from e

    def insert(self, table: str, entity: Mapping[str, Any], *, timeout: int | None = None) -> str:
        try:
            kw = bounded_write(timeout)
            return self._client(table).create_entity(entity, **kw)["etag"]
        except AzureError as e:
            raise translate(e, f"insert into {table}") from e

    def replace(self, table: str, entity: Mapping[str, Any], etag: str) -> str:
        try:
            return self._client(table).update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                     match_condition=MatchConditions.IfNotModified)["etag"]
        except ResourceNotFoundError as e:
            raise ConflictError(f"replace in {table}: the entity is gone") from e
        except AzureError as e:
            raise translate(e, f"replace in {table}") from e

    def merge(self, table: str, entity: Mapping[str, Any]) -> None:
        try:
            self._client(table).upsert_entity(entity, mode=UpdateMode.MERGE)
        except AzureError as e:
            raise translate(e, f"merge into {table}") from e

    def merge_batch(self, table: str, entities: Sequence[Mapping[str, Any]]) -> None:
        """Insert-or-merge in entity-group transactions of up to 100 (the status marks).

        Encoded here (merge_changeset) when every property is a string, bool, int or float: the
        SDK's submit_transaction costs the client ~4.5 ms plus ~0.35 ms per entity (it runs its
        policies per sub-request through freshly made thread pools), about a quarter of the queue
        trigger's CPU. The request still goes through the SDK's pipeline (signing, retries). On any
        answer but a success it can parse, the same batch is sent through the SDK instead."""
        if len({(e["PartitionKey"], e["RowKey"]) for e in entities}) != len(entities):
            raise StorageError(f"batch merge into {table}: an entity can appear only once in a batch")
        client = self._client(table)
        for start in range(0, len(entities), 100):
            batch = entities[start:start + 100]
            encoded = merge_changeset(client.url, table, batch, api_version=client.api_version)
            try:
                if encoded is None or not self._send_changeset(client, encoded, len(batch)):
                    client.submit_transaction([("upsert", e, {"mode": UpdateMode.MERGE}) for e in batch])
            except AzureError as e:
                raise translate(e, f"batch merge into {table}") from e

    @staticmethod
    def _send_changeset(client, encoded: tuple[str, bytes], count: int) -> bool:
        """POST an encoded batch. True only for an answer that parses as success: 202 with one 2xx
        part per entity. Anything else (a refusal, an error, a reply this code cannot read) is
        False, so the caller sends the same batch through the SDK, whose own error handling then
        applies: this encoding can cost a request, never a wrong outcome."""
        boundary, body = encoded
        request = HttpRequest("POST", f"{client.url.rstrip('/')}/$batch", content=body, headers={
            "x-ms-version": client.api_version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={boundary}", "Accept": "application/json"})
        # The SDK's own pipeline, as its batches use; streamed, so no policy tries to decode
        # the multipart reply as JSON.
        response = client._client.send_request(request, stream=True)
        response.read()
        try:
            text = response.text()
        except (UnicodeDecodeError, ValueError):
            text = ""
        statuses = [int(code) for code in _PART_STATUS.findall(text)] if response.status_code == 202 else []
        if len(statuses) == count and all(200 <= code < 300 for code in statuses):
            return True
        log.warning("an encoded batch was answered %d (%s); sending it through the SDK", response.status_code,
                    text[:300])
        return False

    def delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        client = self._client(table)
        try:
            if etag is None:
                client.delete_entity(pk, rk)
            else:
                client.delete_entity(pk, rk, etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass  # gone already (the SDK usually swallows this itself)
        except AzureError as e:
            raise translate(e, f"delete in {table}") from e

    @staticmethod
    def _filter(pk: str, rk_gt: str | None, rk_ge: str | None, rk_lt: str | None, rk_le: str | None,
                equals: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """A parameterised OData filter: values never become part of the filter's text."""
        clauses, params = ["PartitionKey eq @pk"], {"pk": pk}
        for op, name, value in (("gt", "gt", rk_gt), ("ge", "ge", rk_ge), ("lt", "lt", rk_lt), ("le", "le", rk_le)):
            if value is not None:
                clauses.append(f"RowKey {op} @{name}")
                params[name] = value
        for i, (prop, value) in enumerate((equals or {}).items()):
            clauses.append(f"{prop} eq @p{i}")
            params[f"p{i}"] = value
        return " and ".join(clauses), params

    def query(self, table: str, pk: str, *, rk_gt: str | None = None, rk_ge: str | None = None,
              rk_lt: str | None = None, rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
              page_size: int | None = None, select: Sequence[str] | None = None) -> Iterator[Entity]:
        query_filter, params = self._filter(pk, rk_gt, rk_ge, rk_lt, rk_le, equals)
        try:
            extra = {"select": ["PartitionKey", "RowKey", *select]} if select else {}
            pages = self._client(table).query_entities(query_filter, parameters=params,
                                                       results_per_page=page_size, **extra)
            for e in pages:
                yield _entity(e)
        except AzureError as e:
            raise translate(e, f"query {table}") from e

    def query_page(self, table: str, pk: str, *, page_size: int, resume: object | None = None,
                   rk_gt: str | None = None, rk_ge: str | None = None, rk_lt: str | None = None,
                   rk_le: str | None = None, equals: Mapping[str, Any] | None = None,
                   select: Sequence[str] | None = None) -> tuple[list[Entity], object | None]:
        # The SDK's page iterator: one request, and the service's continuation (NextPartitionKey and
        # NextRowKey, opaque on Azure) for the next page of the same filter, whatever its size.
        query_filter, params = self._filter(pk, rk_gt, rk_ge, rk_lt, rk_le, equals)
        try:
            extra = {"select": ["PartitionKey", "RowKey", *select]} if select else {}
            pager = self._client(table).query_entities(query_filter, parameters=params, results_per_page=page_size,
                                                       **extra).by_page(continuation_token=resume)
            page = [_entity(e) for e in next(pager)]
            return page, pager.continuation_token
        except AzureError as e:
            raise translate(e, f"query {table}") from e

    def insert_batch(self, table: str, entities: Sequence[Mapping[str, Any]], *, timeout: int | None = None) -> None:
        if not entities:
            return
        try:
            kw = bounded_write(timeout)
            self._client(table).submit_transaction([("create", e) for e in entities], **kw)
        except HttpResponseError as e:
            if getattr(e, "error_code", None) == "EntityAlreadyExists" or e.status_code == 409:
                raise ConflictError(f"batch insert into {table}: an entity already exists") from e
            raise translate(e, f"batch insert into {table}") from e
        except AzureError as e:
            raise translate(e, f"batch insert into {table}") from e

    def write_batch(self, table: str, creates: Sequence[Mapping[str, Any]],
                    replaces: Sequence[tuple[Mapping[str, Any], str]], *, timeout: int | None = None) -> list[str]:
        operations: list[Any] = [("create", e) for e in creates]
        operations += [("update", e, {"mode": UpdateMode.REPLACE, "etag": etag,
                                      "match_condition": MatchConditions.IfNotModified}) for e, etag in replaces]
        if not operations:
            return []
        try:
            kw = bounded_write(timeout)
            results = self._client(table).submit_transaction(operations, **kw)
            return [str(r.get("etag", "")) for r in results]
        except HttpResponseError as e:
            code = getattr(e, "error_code", None)
            code = getattr(code, "value", code)
            if e.status_code in (404, 409, 412) or code in _CONFLICT_CODES:
                raise ConflictError(f"batch write into {table}: an entity exists, changed or is gone ({code})") from e
            raise translate(e, f"batch write into {table}") from e
        except AzureError as e:
            raise translate(e, f"batch write into {table}") from e

    def scan_table(self, table: str, *, pk_ge: str | None = None, pk_lt: str | None = None,
                   page_size: int | None = None) -> Iterator[Entity]:
        """Every entity of the table (optionally a PartitionKey range), in key order, paged by the service."""
        clauses, params = [], {}
        for op, name, value in (("ge", "pk_ge", pk_ge), ("lt", "pk_lt", pk_lt)):
            if value is not None:
                clauses.append(f"PartitionKey {op} @{name}")
                params[name] = value
        try:
            client = self._client(table)
            pages = (client.query_entities(" and ".join(clauses), parameters=params, results_per_page=page_size)
                     if clauses else client.list_entities(results_per_page=page_size))
            for e in pages:
                yield _entity(e)
        except AzureError as e:
            raise translate(e, f"scan {table}") from e


class AzureQueue:
    """A storage queue whose messages are base64 text, the Functions queue trigger's default encoding."""

    def __init__(self, client: QueueClient):
        self._client = client
        self.name = client.queue_name

    @classmethod
    def from_config(cls, config: StorageConfig, name: str) -> AzureQueue:
        if config.connection_string is not None:
            client = queue_client(name, connection_string=config.connection_string,
                                  message_encode_policy=TextBase64EncodePolicy(), **CLIENT_OPTIONS)
        else:
            client = queue_client(name, url=_service_uri(config, "queueServiceUri", config.queue_uri),
                                  credential=credential_for(config),
                                  message_encode_policy=TextBase64EncodePolicy(), **CLIENT_OPTIONS)
        return cls(client)

    def create(self) -> None:
        try:
            self._client.create_queue()
        except ResourceExistsError:
            pass
        except AzureError as e:
            raise translate(e, f"create queue {self.name}") from e

    def send(self, text: str) -> None:
        try:
            self._client.send_message(text)
        except AzureError as e:
            raise translate(e, f"enqueue to {self.name}") from e

    def depth(self) -> int:
        try:
            return int(self._client.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0
        except AzureError as e:
            raise translate(e, f"read queue {self.name}") from e
