"""The hits reader: a child process that owns the worker's librdkafka consumer of visitwire.hits.

In the worker's own process, reading cost the processing thread more than its CPU: confluent-kafka
builds a Message object per hit under the GIL (~2 µs), and the reading thread's GIL turns kept the
processing thread waiting about a sixth of the time. This child does the reading on the other core:
it consumes a batch, drops the failed messages (counted and logged), transposes the values for the
processor's column decoder (processors/hit_columns.py), and sends the batch as that one bytes object with
its partitions and next offsets. The raw values stay here (the last KEPT_BATCHES batches, joined into one
bytes object each: JoinedValues): the worker needs them only when it falls back on them (a hit whose text
fails a check, e.g. a timestamp out of range), and asks for them then (KeptValues). Sending them with
every batch doubled the bytes on the pipe: the worker's thread taking the answers spent ~0.3 us a hit on
them, the child part of its pickling and writing. A batch the decoder cannot vouch for goes with its
values, as before. The worker only processes.

Requests (parent -> child, stdin), each `(request id, verb, argument)`, each answered on stdout with
`(request id, error text or None, result)`:
- ("read", None)          -> ReadBatch
- ("assign", [partition]) -> None: read exactly these partitions, from their committed offsets
- ("commit", {partition: next offset}) -> None, for the partitions still assigned to this consumer
- ("values", batch id)    -> the raw values of a batch sent without them (ReadBatch.kept), if still kept
The first message is the setup: {"config": librdkafka settings, "topic", "subscribe": whether to join
the group's subscription (else only "assign" gives partitions), "batch_size", "timeout_s", "transpose":
whether to transpose}. Reads and assignments run in order in one thread, commits in another, so a
commit never waits for a consume call to time out; "values" is answered at once, by the thread taking
the requests. The child closes its consumer (leaving the group at
once) and exits when its stdin closes: the worker stopped or died.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, Sequence

from processors.hit_columns import JoinedValues
from config.child_pipe import receive, send, start_child
from config.kafka_errors import ClientErrors, KafkaRefused
from config.heap import tune_for_batches

log = logging.getLogger(__name__)


KEPT_BATCHES = 4  # the batch the worker processes, the one read meanwhile, and slack
KEPT_WAIT_S = 60.0  # a child that does not send kept values by then is stuck: the worker starts a new one


@dataclass
class ReadBatch:
    """Hits as read: their raw values, and `transposed`, the batch as the column decoder's JSON text (None
    when the decoder cannot vouch for some hit). With a text, the values stay in the child (`kept`: its id
    of them, `count`: how many) and arrive in the worker as KeptValues, fetched if the processor falls back
    on them (a hit its checks on the text do not pass, e.g. a timestamp out of range)."""
    values: Sequence[bytes] | None  # a JoinedValues when every value is bytes; KeptValues once received
    transposed: bytes | None
    partitions: list[int]
    offsets: dict[int, int]  # partition -> next offset
    kept: int | None = None
    count: int = 0


class ReaderGone(ConnectionError):
    """The hits reader process exited; a new one reads from the committed offsets."""


class ValuesGone(ReaderGone):
    """A batch's raw values could not be had from the hits reader process that kept them (it exited, is stuck,
    or no longer keeps them): the batch must not be processed; a new reader reads it again from the committed
    offsets."""


class KeptValues(Sequence[bytes]):
    """The raw values of a batch the hits reader process kept: its length is known; the values are fetched,
    blocking, the first time one is asked for (a rare path: the processor falls back on them). ValuesGone
    when they cannot be had."""

    def __init__(self, reader: "HitsReaderProcess", proc: subprocess.Popen, batch: int, count: int):
        self._reader, self._proc, self._batch, self._count = reader, proc, batch, count
        self._values: Sequence[bytes] | None = None

    def _fetched(self) -> Sequence[bytes]:
        if self._values is None:
            values = self._reader.kept_values(self._proc, self._batch)
            if len(values) != self._count:  # a defect; never process a batch that is not the one read
                raise ValuesGone(f"the hits reader process sent {len(values)} values for a batch of {self._count}")
            self._values = values
        return self._values

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: Any) -> Any:
        return self._fetched()[i]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._fetched())


class HitsReaderProcess:
    """The worker's side: requests to the child, awaited on the worker's event loop."""

    def __init__(self, setup: dict[str, Any]):
        self._setup = setup
        self._proc: subprocess.Popen | None = None
        # request id -> (its loop, its asyncio future), or (None, a concurrent future) for a blocking request
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop | None, Any]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()  # requests are written whole, and the pending map changes under it

    def start(self) -> None:
        """Start the child (blocking: run it in an executor)."""
        proc = start_child("processors.hits_reader")
        send(proc.stdin, self._setup)
        with self._lock:
            self._proc = proc
        threading.Thread(target=self._take_answers, args=(proc,), daemon=True,
                         name="visitwire-hits-answers").start()

    def read(self) -> asyncio.Future:
        """Ask for the next batch; the future gets the ReadBatch. The request is sent before this returns,
        so the child reads while the caller goes on processing (a coroutine would send it only once the
        event loop next ran it: after the processing)."""
        return self._ask("read", None)

    async def assign(self, partitions: list[int]) -> None:
        await self._ask("assign", partitions)

    async def commit(self, offsets: dict[int, int]) -> None:
        await self._ask("commit", offsets)

    def kept_values(self, proc: subprocess.Popen, batch: int) -> Sequence[bytes]:
        """The raw values of a batch `proc` read and kept (ReadBatch.kept), blocking the caller (the event
        loop's thread, in the middle of a batch). It cannot deadlock: the answers thread settles this future
        itself, without the event loop. ValuesGone when they cannot be had."""
        answer: concurrent.futures.Future = concurrent.futures.Future()
        rid = next(self._ids)
        with self._lock:
            if self._proc is not proc:
                raise ValuesGone("the hits reader process that read this batch has exited; its values went with it")
            self._pending[rid] = (None, answer)
            try:
                send(proc.stdin, (rid, "values", batch))
            except (OSError, ValueError) as e:
                del self._pending[rid]
                raise ValuesGone(f"the hits reader process is gone ({e})") from None
        try:
            error, values = answer.result(KEPT_WAIT_S)
        except concurrent.futures.TimeoutError:
            with self._lock:
                self._pending.pop(rid, None)
            raise ValuesGone(f"the hits reader process did not send a batch's values in {KEPT_WAIT_S:.0f} s") from None
        if error is not None:
            raise ValuesGone(f"the hits reader process could not send a batch's values: {error}")
        return values

    def _ask(self, verb: str, argument: Any) -> asyncio.Future:
        """Send the request now; the future fails with ReaderGone when the child is not there."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        rid = next(self._ids)
        with self._lock:
            if self._proc is None:
                answer.set_exception(ReaderGone("the hits reader process is not running"))
                return answer
            self._pending[rid] = (loop, answer)
            try:
                send(self._proc.stdin, (rid, verb, argument))
            except (OSError, ValueError) as e:  # its stdin closed: it died, or close() ran
                del self._pending[rid]
                answer.set_exception(ReaderGone(f"the hits reader process is gone ({e})"))
        return answer

    def _take_answers(self, proc: subprocess.Popen) -> None:
        """In its own thread: settle each request's future with the child's answer; all of them fail
        with ReaderGone when the child exits."""
        try:
            while True:
                rid, error, result = receive(proc.stdout)
                with self._lock:
                    loop, answer = self._pending.pop(rid, (None, None))
                if answer is None:  # a blocking request that gave up waiting
                    continue
                if loop is None:
                    answer.set_result((error, result))
                    continue
                if isinstance(result, ReadBatch) and result.kept is not None:
                    result.values = KeptValues(self, proc, result.kept, result.count)
                loop.call_soon_threadsafe(_settle, answer, error, result)
        except (EOFError, OSError, ValueError):
            pass
        except Exception:  # an answer that does not unpickle: a defect; a new child starts over
            log.exception("the hits reader process sent an answer that cannot be read; stopping it")
            proc.kill()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            pending, self._pending = self._pending, {}
        code = proc.poll()  # None while it is still closing its consumer
        gone = "the hits reader process exited" + (f" (code {code})" if code is not None else "")
        for loop, answer in pending.values():
            if loop is None:
                answer.set_result((gone, None))
            else:
                loop.call_soon_threadsafe(_settle, answer, gone, None, ReaderGone)

    def close(self, timeout_s: float = 15.0) -> None:
        """Close the child's stdin (its cue to close the consumer and exit) and wait for it (blocking)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(5)


class ReadError(RuntimeError):
    """A request the hits reader process could not carry out (its message says why)."""


class ReadRefused(ReadError, KafkaRefused):
    """The broker refused the hits reader's SASL login or TLS handshake: it reads nothing until that changes."""


def _settle(answer: asyncio.Future, error: str | None, result: Any, kind: type[Exception] = ReadError) -> None:
    if answer.done():  # cancelled: e.g. the read in flight when the worker stopped
        return
    if error is None:
        answer.set_result(result)
    elif error.startswith(_REFUSED):  # the child's KafkaRefused, as carry_out words it
        answer.set_exception(ReadRefused(error.removeprefix(_REFUSED)))
    else:
        answer.set_exception(kind(error))


_REFUSED = f"{KafkaRefused.__name__}: "


# -- the child ---------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, setup: dict[str, Any]):
        from confluent_kafka import Consumer

        self.errors = ClientErrors("hits reader")  # librdkafka's error reports, served by consume()
        self.bootstrap = setup["config"].get("bootstrap.servers", "")
        self.consumer = Consumer({**setup["config"], "logger": log, "error_cb": self.errors})
        self.topic = setup["topic"]
        if setup["subscribe"]:
            self.consumer.subscribe([self.topic])
        self.batch_size = setup["batch_size"]
        self.timeout_s = setup["timeout_s"]
        self.decoder = None
        if setup["transpose"]:
            from processors.enrich import column_decoder
            self.decoder = column_decoder()
        self._errors = 0
        self._next_error_log = 1
        self._batches = itertools.count()
        self._kept: OrderedDict[int, Sequence[bytes]] = OrderedDict()  # batch id -> raw values, the last few
        self._keeping = threading.Lock()  # the reading thread adds, the requests' thread looks up

    def read(self, _: Any) -> ReadBatch:
        messages = self.consumer.consume(self.batch_size, self.timeout_s)
        refusal = self.errors.take_refusal()
        if refusal and not messages:  # else the reader would look like one on an empty topic, for good
            raise KafkaRefused(f"Kafka at {self.bootstrap} {refusal}")
        failed = [m for m in messages if m.error() is not None]
        if failed:  # e.g. a broker away for a moment; librdkafka retries by itself
            self._errors += len(failed)
            if self._errors >= self._next_error_log:  # the 1st, 2nd, 4th, 8th ... error: an outage stays readable
                self._next_error_log = 2 * self._errors
                log.warning("reading hits: %s (%d such errors so far)", failed[0].error(), self._errors)
            messages = [m for m in messages if m.error() is None]
        # a column at a time (list comprehensions), and each partition's next offset from its last message
        values: Sequence[bytes] = [m.value() for m in messages]
        partitions = [m.partition() for m in messages]
        offsets: dict[int, int] = {}
        todo = len(set(partitions))
        for m in reversed(messages):
            if m.partition() not in offsets:
                offsets[m.partition()] = m.offset() + 1
                if len(offsets) == todo:
                    break
        try:  # two objects to pickle instead of one per value; the decoder scans them as they are
            values = JoinedValues.of(values)
        except TypeError:  # a value that is not bytes (e.g. a null record): the processor counts it as a drop
            pass
        transposed = self.decoder.transpose(values) if self.decoder is not None and values else None
        if transposed is None:
            return ReadBatch(values, None, partitions, offsets)
        batch = next(self._batches)
        with self._keeping:
            self._kept[batch] = values
            while len(self._kept) > KEPT_BATCHES:
                self._kept.popitem(last=False)
        return ReadBatch(None, transposed, partitions, offsets, kept=batch, count=len(values))

    def values(self, batch: int) -> Sequence[bytes]:
        with self._keeping:
            values = self._kept.get(batch)
        if values is None:
            raise LookupError(f"batch {batch} is no longer kept (only the last {KEPT_BATCHES} are)")
        return values

    def assign(self, partitions: list[int]) -> None:
        from confluent_kafka import TopicPartition

        # no offset given: each partition starts at its committed offset, or the earliest
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit partition -> next offset, for the partitions this consumer still reads (the others moved:
        their new owner re-reads from the last commit, and history deduplicates)."""
        from confluent_kafka import TopicPartition

        mine = {tp.partition for tp in self.consumer.assignment()}
        wanted = [TopicPartition(self.topic, p, off) for p, off in sorted(offsets.items()) if p in mine]
        if wanted:
            t0 = time.monotonic()
            self.consumer.commit(offsets=wanted, asynchronous=False)
            took = time.monotonic() - t0
            if took > 1.0:
                log.warning("committing hits offsets took %.1f s", took)


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    tune_for_batches()  # config/heap.py: a batch's buffers reused, not faulted in again each time
    reader = _Reader(receive(stdin))
    answering = threading.Lock()
    reading = ThreadPoolExecutor(1, thread_name_prefix="hits-read")
    control = ThreadPoolExecutor(1, thread_name_prefix="hits-control")
    gone = threading.Event()  # the worker stopped listening

    def carry_out(rid: int, work: Any, argument: Any) -> None:
        try:
            answer = (rid, None, work(argument))
        except Exception as e:  # noqa: BLE001 - the worker decides; the message says what failed
            answer = (rid, f"{type(e).__name__}: {e}", None)
        with answering:
            try:
                send(stdout, answer)
            except (OSError, ValueError):
                gone.set()

    # An assignment waits for the reads asked before it: a read that ran after it would be dropped by the
    # worker (read under the old assignment) with the consumer's position already past its hits.
    # "values" at once, in this thread: the worker's event loop waits for it in the middle of a batch
    verbs = {"read": (reading, reader.read), "assign": (reading, reader.assign), "commit": (control, reader.commit),
             "values": (None, reader.values)}
    try:
        while not gone.is_set():
            try:
                rid, verb, argument = receive(stdin)
            except EOFError:
                return
            pool, work = verbs[verb]
            if pool is None:
                carry_out(rid, work, argument)
            else:
                pool.submit(carry_out, rid, work, argument)
    finally:
        reading.shutdown()  # the consume call in flight returns within timeout_s
        control.shutdown()
        reader.consumer.close()  # leaves the group now, instead of after the session timeout
        if reader.errors.total:
            log.warning("%s", reader.errors.summary())


if __name__ == "__main__":
    from config.kafka_log_flood import say_kafka_client_errors

    from config.logs import configure_helper_logging

    configure_helper_logging("hits-reader")  # masked, the command's format; librdkafka's retries: a line, a count
    from processors.hits_reader import serve as serve_here  # answers pickle by module name, not as __main__

    try:
        serve_here(sys.stdin.buffer, sys.stdout.buffer)
    finally:
        say_kafka_client_errors(logging.getLogger("processors.hits_reader"))
