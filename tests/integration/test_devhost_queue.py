"""The dev host's queue trigger against a real Azurite: decoding, retries, poison queue, batches."""
from __future__ import annotations

import base64
import logging
import time

import requests
from azure.storage.queue import QueueClient

from tests.helpers import wait_until


def b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def queue(storage_connection: str, name: str) -> QueueClient:
    q = QueueClient.from_connection_string(storage_connection, name)
    try:
        q.create_queue()
    except Exception:  # already created by the host
        pass
    return q


def message_count(q: QueueClient) -> int:
    """Visible and invisible messages (approximate_message_count counts both)."""
    return q.get_queue_properties().approximate_message_count


def test_base64_messages_are_consumed_and_deleted(toy_host, storage_connection):
    host = toy_host()
    toy = host.module
    q = queue(storage_connection, host.triggers["consume"])
    bodies = ["first", "sécond ☃", '{"json": true}']
    for b in bodies:
        q.send_message(b64(b))
    consumed = wait_until(lambda: len(toy.events("consumed")) == 3 and toy.events("consumed"), what="3 messages")
    assert sorted(e["body"] for e in consumed) == sorted(bodies)
    assert all(e["dequeue_count"] == 1 and e["inserted"] for e in consumed)
    wait_until(lambda: message_count(q) == 0, what="the queue to be empty")


def test_failing_message_is_retried_then_poisoned_while_good_ones_flow(toy_host, storage_connection):
    host = toy_host(queues={"maxDequeueCount": 3, "visibilityTimeout": "00:00:00"})
    toy = host.module
    name = host.triggers["consume"]
    q = queue(storage_connection, name)
    q.send_message(b64("fail-always"))
    for i in range(5):
        q.send_message(b64(f"good-{i}"))
    poisoned = wait_until(lambda: toy.events("poison"), what="the failing message in the poison queue")
    for i in range(5, 10):  # the trigger keeps working after a poison message
        q.send_message(b64(f"good-{i}"))
    wait_until(lambda: len(toy.events("consumed")) == 10, what="10 good messages")

    attempts = [e for e in toy.events("attempt") if e["body"] == "fail-always"]
    assert [a["dequeue_count"] for a in attempts] == [1, 2, 3]  # maxDequeueCount attempts, then poison
    assert len({a["id"] for a in attempts}) == 1
    assert [p["body"] for p in poisoned] == ["fail-always"]  # copied unchanged (still base64)
    assert sorted(e["body"] for e in toy.events("consumed")) == sorted(f"good-{i}" for i in range(10))
    assert all(e["dequeue_count"] == 1 for e in toy.events("consumed"))
    wait_until(lambda: message_count(q) == 0, what=f"{name} to be empty")
    poison_q = QueueClient.from_connection_string(storage_connection, name + "-poison")
    wait_until(lambda: message_count(poison_q) == 0, what="the poison trigger to consume it")


def test_visibility_timeout_delays_the_retry(toy_host, storage_connection):
    host = toy_host(queues={"maxDequeueCount": 2, "visibilityTimeout": "00:00:01"})
    toy = host.module
    queue(storage_connection, host.triggers["consume"]).send_message(b64("fail-slowly"))
    wait_until(lambda: toy.events("poison"), what="the poison message")
    first, second = [e["at"] for e in toy.events("attempt")]
    assert second - first >= 0.9


def test_message_dequeued_too_often_goes_to_poison_without_running(toy_host, storage_connection):
    # As after host crashes: the message was received more than maxDequeueCount times already.
    name = "toy-crashed-" + str(int(time.time() * 1000))
    q = queue(storage_connection, name)
    q.send_message(b64("crashed-before"))
    for _ in range(4):
        (m,) = list(q.receive_messages(max_messages=1, visibility_timeout=30))
        q.update_message(m.id, m.pop_receipt, visibility_timeout=0)
    host = toy_host(queues={"maxDequeueCount": 3}, settings={"TOY_QUEUE": name})
    toy = host.module
    poisoned = wait_until(lambda: toy.events("poison"), what="the poison message")
    assert [p["body"] for p in poisoned] == ["crashed-before"]
    assert toy.events("attempt") == []


def test_undecodable_message_goes_to_poison(toy_host, storage_connection, caplog):
    host = toy_host()
    name = host.triggers["consume"]
    q = queue(storage_connection, name)
    with caplog.at_level(logging.WARNING, logger="devhost"):
        q.send_message("this is not base64!")
        poison_q = QueueClient.from_connection_string(storage_connection, name + "-poison")
        wait_until(lambda: message_count(q) == 0 and _exists(poison_q) and message_count(poison_q) == 1,
                   what="the message to move to the poison queue")
    assert host.module.events("attempt") == []
    assert "decoding failed" in caplog.text


def _exists(q: QueueClient) -> bool:
    try:
        q.get_queue_properties()
        return True
    except Exception:
        return False


def test_message_encoding_none(toy_host, storage_connection):
    host = toy_host(queues={"messageEncoding": "none"})
    queue(storage_connection, host.triggers["consume"]).send_message("plain text, not base64")
    consumed = wait_until(lambda: host.module.events("consumed"), what="the message")
    assert consumed[0]["body"] == "plain text, not base64"


def test_batch_is_processed_concurrently(toy_host, storage_connection):
    host = toy_host(queues={"batchSize": 4, "newBatchThreshold": 0})
    toy = host.module
    q = queue(storage_connection, host.triggers["consume"])
    for _ in range(4):
        q.send_message(b64("sleep:0.6"))
    wait_until(lambda: len(toy.events("consumed")) == 4, what="4 slow messages")
    first = min(e["at"] for e in toy.events("attempt"))
    assert toy.max_concurrent_messages() >= 2
    assert 2 <= toy.max_concurrent_messages() <= 4  # batchSize + newBatchThreshold at most
    assert time.monotonic() - first < 4 * 0.6  # not one after the other


def test_queue_output_binding_feeds_the_trigger(toy_host):
    host = toy_host(queues={"maxPollingInterval": "00:01:00"})  # the output wakes the poller
    r = requests.post(host.url("enqueue"), data=b"sent by an output binding")
    assert r.status_code == 202
    consumed = wait_until(lambda: host.module.events("consumed"), timeout=10, what="the queued message")
    assert consumed[0]["body"] == "sent by an output binding"


def test_stop_waits_for_messages_in_flight(toy_host, storage_connection):
    host = toy_host()
    toy = host.module
    queue(storage_connection, host.triggers["consume"]).send_message(b64("sleep:0.5"))
    wait_until(lambda: toy.events("attempt"), what="the message to start")
    host.stop()
    assert len(toy.events("consumed")) == 1
