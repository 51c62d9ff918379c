"""The hits reader process (processors/hits_reader.py) against a real Kafka-protocol broker (tansu):
what it hands over, where it starts reading, and that an assignment never skips hits."""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from processors.enrich import column_decoder
from processors.hits_reader import KEPT_BATCHES, HitsReaderProcess, ValuesGone
from sinks.testing.events import crowd

pytestmark = pytest.mark.integration


def _topic_with_hits(broker, n: int, seed: int) -> tuple[str, list[bytes]]:
    """A new one-partition topic holding n generated hits; (its name, the hits as produced)."""
    topic = f"hits-{uuid.uuid4().hex[:6]}"
    values = [orjson.dumps(h) for h in crowd(30, 1.7e9, seed=seed).hits[:n]]
    _produce(broker.url, topic, values)
    return topic, values


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for v in values:
        producer.produce(topic, v, partition=0)
    assert producer.flush(30) == 0


def _reader(bootstrap: str, topic: str, group: str, batch: int) -> HitsReaderProcess:
    reader = HitsReaderProcess({
        "config": {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                   "auto.offset.reset": "earliest"},
        "topic": topic, "subscribe": False, "batch_size": batch, "timeout_s": 0.2, "transpose": True})
    reader.start()
    return reader


async def _read_until(reader: HitsReaderProcess, n: int) -> list:
    batches, got = [], 0
    for _ in range(200):
        batch = await reader.read()
        if batch.values:
            batches.append(batch)
            got += len(batch.values)
        if got >= n:
            break
    return batches


def test_batches_carry_the_raw_hits_in_order_transposed_and_with_their_next_offsets(broker):
    topic, values = _topic_with_hits(broker, 300, seed=41)
    reader = _reader(broker.url, topic, f"g-{uuid.uuid4().hex[:6]}", batch=100)

    async def scenario():
        await reader.assign([0])
        batches = await _read_until(reader, len(values))
        # the values stay in the reader: fetched when asked for, as the processor's fallback does
        return batches, [list(b.values) for b in batches]

    try:
        batches, fetched = asyncio.run(scenario())
    finally:
        reader.close()
    assert [v for b in fetched for v in b] == values
    decoder = column_decoder()
    for b, got in zip(batches, fetched):
        assert b.transposed == decoder.transpose(got) is not None
        assert b.partitions == [0] * len(b.values)
    assert [b.offsets[0] for b in batches] == [sum(len(x.values) for x in batches[:i + 1]) for i in range(len(batches))]


def test_a_read_runs_while_the_worker_is_busy_processing(broker):
    """The worker asks for the next batch, then processes the current one without yielding to its event
    loop: the request must reach the reader at once, so the batch is read meanwhile, not afterwards."""
    topic, values = _topic_with_hits(broker, 50, seed=44)
    reader = _reader(broker.url, topic, f"g-{uuid.uuid4().hex[:6]}", batch=50)

    async def scenario():
        await reader.assign([0])
        asked = asyncio.ensure_future(reader.read())
        time.sleep(2.0)  # processing a batch: the event loop does not run meanwhile
        await asyncio.sleep(0)  # one turn of the loop, as between two batches
        answered_meanwhile = asked.done()
        batch = await asked
        return answered_meanwhile, batch, list(batch.values)

    try:
        answered_meanwhile, batch, got = asyncio.run(scenario())
    finally:
        reader.close()
    assert answered_meanwhile, "the read was asked only once the processing was done"
    assert got == values


def test_an_assignment_waits_for_the_reads_asked_before_it_so_no_hit_is_skipped(broker):
    """The worker drops a batch read under an assignment it has since replaced, and reads again from the
    committed offsets; a read that ran after the new assignment would have moved the position past hits
    that nobody then processes."""
    topic, values = _topic_with_hits(broker, 400, seed=42)
    group = f"g-{uuid.uuid4().hex[:6]}"
    reader = _reader(broker.url, topic, group, batch=50)

    async def scenario():
        await reader.assign([0])
        first = await _read_until(reader, 100)
        await reader.commit({0: first[-1].offsets[0]})
        # two reads still asked under the old assignment, then the new one, all in the same moment
        stale = [asyncio.ensure_future(reader.read()) for _ in range(2)]
        await asyncio.sleep(0)  # the two reads are asked
        await reader.assign([0])
        await asyncio.gather(*stale)
        after = await _read_until(reader, 1)
        return first, after[0].values[0]

    try:
        first, first_after = asyncio.run(scenario())
    finally:
        reader.close()
    committed = first[-1].offsets[0]
    assert first_after == values[committed], "the first read after the assignment must start at the commit"


def test_a_new_reader_in_the_same_group_starts_at_the_committed_offset(broker):
    topic, values = _topic_with_hits(broker, 200, seed=43)
    group = f"g-{uuid.uuid4().hex[:6]}"

    async def read_some(n: int, commit: bool) -> list:
        reader = _reader(broker.url, topic, group, batch=60)
        try:
            await reader.assign([0])
            batches = await _read_until(reader, n)
            if commit:
                await reader.commit({0: batches[0].offsets[0]})
            return batches[0].offsets[0], batches[0].values[0]
        finally:
            reader.close()

    committed, _ = asyncio.run(read_some(60, commit=True))
    _, first_again = asyncio.run(read_some(1, commit=False))
    assert first_again == values[committed]


def test_a_batchs_values_no_longer_kept_or_from_a_reader_gone_fail_loudly(broker):
    """The reader keeps the raw values of its last few batches only, and they go with its process: asked for
    later, they are refused with ValuesGone (the worker reads the batch again), never returned wrong or empty."""
    topic, values = _topic_with_hits(broker, 50 * (KEPT_BATCHES + 2), seed=45)
    reader = _reader(broker.url, topic, f"g-{uuid.uuid4().hex[:6]}", batch=50)

    async def scenario():
        await reader.assign([0])
        batches = await _read_until(reader, len(values))
        with pytest.raises(ValuesGone, match="no longer kept"):
            list(batches[0].values)
        assert len(batches[0].values) == batches[0].offsets[0]  # the count travelled with the text
        return batches, list(batches[-1].values)

    try:
        batches, last = asyncio.run(scenario())
    finally:
        reader.close()
    assert len(batches) >= KEPT_BATCHES + 2  # batches of at most 50
    assert last == values[-len(last):] and last
    with pytest.raises(ValuesGone, match="has exited"):
        list(batches[-2].values)
