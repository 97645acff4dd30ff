"""The queue trigger: poll a Storage queue and run a function per message, like the host.

Behaviour copied from the Functions queue extension (host.json ``extensions.queues``):

- Messages are fetched ``batchSize`` at a time and processed concurrently; a new batch is fetched
  once the number in flight drops to ``newBatchThreshold`` (so at most batchSize +
  newBatchThreshold run at once).
- Received messages are invisible for 10 minutes, renewed at half-time while the function runs.
- An empty queue is polled with exponential back-off from 100 ms up to ``maxPollingInterval``;
  finding messages resets it. An output binding writing to a watched queue wakes its poller.
- Success: the message is deleted. Failure: if the message has been dequeued
  ``maxDequeueCount`` times it is copied, unchanged, to ``<queue>-poison`` (created if missing)
  and deleted; otherwise it is made visible again after ``visibilityTimeout``.
- A message already dequeued more than ``maxDequeueCount`` times (a crash mid-processing) goes to
  the poison queue without running; so does a message that is not valid base64 when
  ``messageEncoding`` is base64.
- A queue whose name ends in ``-poison`` has no poison queue: a failed message stays invisible
  until its 10-minute lease runs out, which avoids a tight failure loop.
"""
from __future__ import annotations

import base64
import binascii
import logging
import math
import random
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.storage.queue import LinearRetry

from catalog.settings import POISON_SUFFIX
from devhost.settings import QueueOptions, StorageConnection

log = logging.getLogger("devhost")

MIN_POLLING_INTERVAL = 0.1
LEASE_SECONDS = 600  # the host receives with a 10-minute visibility timeout and renews it


def client_options() -> dict[str, Any]:
    # The SDK's default retry waits 15 s and more between attempts: a poll loop against a stopped
    # Azurite would hang shutdown. Poll-level back-off does the waiting here instead.
    return {"retry_policy": LinearRetry(backoff=0.5, retry_total=2, random_jitter_range=0.2),
            "connection_timeout": 5}


def ensure_queue(client) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass


def decode_body(content: str | bytes, encoding: str) -> bytes:
    """The message body as the function sees it; ValueError when base64 decoding fails."""
    if isinstance(content, bytes):
        content = content.decode("utf-8")
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode("".join(content.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"message is not valid base64: {e}") from e


def encode_body(body: str | bytes, encoding: str) -> str:
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if encoding == "none":
        return data.decode("utf-8")
    return base64.b64encode(data).decode("ascii")


class _Lease:
    """Keeps a received message invisible while its function runs; tracks the pop receipt."""

    def __init__(self, client, message, seconds: int):
        self._client, self._id, self._seconds = client, message.id, seconds
        self.pop_receipt = message.pop_receipt
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{message.id}", daemon=True)

    def start(self) -> _Lease:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self._seconds / 2):
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    updated = self._client.update_message(
                        self._id, pop_receipt=self.pop_receipt, visibility_timeout=self._seconds)
                    self.pop_receipt = updated.pop_receipt
                except AzureError as e:
                    log.warning("could not renew the lease on message %s: %s", self._id, e)
                    return

    def stop(self) -> str:
        with self._lock:
            self._stopped.set()
            return self.pop_receipt


class QueueListener:
    """Polls one queue for one function.

    ``run_function(message) -> bool`` invokes the function and reports success; it must not raise.
    """

    def __init__(self, function_name: str, queue_name: str, connection: StorageConnection,
                 options: QueueOptions, run_function: Callable[[TriggerQueueMessage], bool],
                 max_polling_interval: float | None = None, lease_seconds: int = LEASE_SECONDS):
        self.function_name = function_name
        self.queue_name = queue_name
        self.options = options
        self._run_function = run_function
        self._max_interval = max(MIN_POLLING_INTERVAL, max_polling_interval
                                 if max_polling_interval is not None else options.max_polling_interval)
        self._lease_seconds = lease_seconds
        self.client = connection.queue_client(queue_name, **client_options())
        self.poison_queue_name = None if queue_name.endswith(POISON_SUFFIX) else queue_name + POISON_SUFFIX
        self.poison_client = (connection.queue_client(self.poison_queue_name, **client_options())
                              if self.poison_queue_name else None)
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size + options.threshold,
                                        thread_name_prefix=f"queue-{function_name}")
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name=f"poll-{queue_name}", daemon=True)
        self._queue_ready = False
        self._last_error: str | None = None

    # -- lifecycle

    def start(self) -> QueueListener:
        self._thread.start()
        return self

    def notify(self) -> None:
        """A message was just added to this queue: poll now instead of at the back-off time."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop fetching messages (without waiting)."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and wait (up to ``timeout``) for messages in flight to finish."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- polling

    def _poll_loop(self) -> None:
        delay = MIN_POLLING_INTERVAL
        opts = self.options
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(lambda: self._stop.is_set() or self._in_flight <= opts.threshold)
            if self._stop.is_set():
                return
            try:
                if not self._queue_ready:
                    ensure_queue(self.client)
                    self._queue_ready = True
                messages = list(self.client.receive_messages(
                    messages_per_page=opts.batch_size, max_messages=opts.batch_size,
                    visibility_timeout=self._lease_seconds))
            except AzureError as e:
                self._report_error(e)
                messages = []
            else:
                if self._last_error is not None:
                    log.info("queue %s is reachable again", self.queue_name)
                    self._last_error = None
            if messages:
                delay = MIN_POLLING_INTERVAL
                for m in messages:
                    with self._cond:
                        self._in_flight += 1
                    try:
                        self._pool.submit(self._process_counted, m)
                    except RuntimeError:  # pool shut down while stopping
                        with self._cond:
                            self._in_flight -= 1
                continue
            # Randomised exponential back-off, as the host's delay strategy.
            self._wake.wait(delay * random.uniform(0.8, 1.0))
            self._wake.clear()
            delay = min(delay * 2, self._max_interval)

    def _report_error(self, e: Exception) -> None:
        text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if text != self._last_error:
            log.warning("polling queue %s for %s failed (will keep retrying): %s",
                        self.queue_name, self.function_name, text)
        self._last_error = text

    def _process_counted(self, message) -> None:
        try:
            self.process(message)
        except Exception:  # storage errors while completing a message: the lease expires, it returns
            log.error("completing message %s from %s failed:\n%s", message.id, self.queue_name,
                      traceback.format_exc())
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    # -- one message

    def process(self, message) -> None:
        opts = self.options
        if message.dequeue_count > opts.max_dequeue_count:
            self._to_poison(message, message.pop_receipt,
                            f"its dequeue count {message.dequeue_count} exceeds maxDequeueCount")
            return
        try:
            body = decode_body(message.content, opts.message_encoding)
        except ValueError as e:
            log.warning("message %s on %s: decoding failed (check messageEncoding in host.json): %s",
                        message.id, self.queue_name, e)
            self._to_poison(message, message.pop_receipt, "it could not be decoded")
            return
        trigger_message = TriggerQueueMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on, insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
        lease = _Lease(self.client, message, self._lease_seconds).start()
        try:
            succeeded = self._run_function(trigger_message)
        finally:
            pop_receipt = lease.stop()
        if succeeded:
            self._delete(message, pop_receipt)
        elif self.poison_client is None:
            pass  # no poison queue for a poison queue: leave it invisible until the lease expires
        elif message.dequeue_count >= opts.max_dequeue_count:
            self._to_poison(message, pop_receipt, f"it has reached maxDequeueCount of {opts.max_dequeue_count}")
        else:
            self._release(message, pop_receipt)

    def _to_poison(self, message, pop_receipt: str, why: str) -> None:
        if self.poison_client is None:
            return
        log.warning("message %s: %s; moving it to queue '%s'", message.id, why, self.poison_queue_name)
        try:
            self.poison_client.send_message(message.content)
        except ResourceNotFoundError:
            ensure_queue(self.poison_client)
            self.poison_client.send_message(message.content)
        self._delete(message, pop_receipt)

    def _delete(self, message, pop_receipt: str) -> None:
        try:
            self.client.delete_message(message.id, pop_receipt)
        except ResourceNotFoundError:
            pass  # already gone
        except HttpResponseError as e:
            if getattr(e, "error_code", None) != "PopReceiptMismatch":
                raise
            log.debug("message %s was taken over by another receiver; not deleting it", message.id)

    def _release(self, message, pop_receipt: str) -> None:
        try:
            self.client.update_message(message.id, pop_receipt=pop_receipt,
                                       visibility_timeout=math.ceil(self.options.visibility_timeout))
        except ResourceNotFoundError:
            pass
        except HttpResponseError as e:
            if getattr(e, "error_code", None) != "PopReceiptMismatch":
                raise
