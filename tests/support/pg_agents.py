"""The processes the PostgreSQL fault tests run: agents writing through a pipeline, and
index workers. Each runs as ``python -m tests.support.pg_agents ROLE ARGS...`` from the
repository's root, prints ``ready`` once open, and writes what the pipeline acknowledged
to a file of JSON lines (one line per acknowledged op, written before the next op) so
the test can check the database against it, whatever happened to the process.

Roles:

``mixed NAME URL ACKS GO OPS``
    Waits for the file GO, then runs OPS ops of ten kinds in turn (see :func:`mixed`)
    with the default retry policy, and prints how many raised.
``stream NAME URL ACKS STOP POLICY``
    Agent turns (a question, then a streamed answer with partial flushes) until the
    file STOP exists; POLICY is ``default`` or ``patient``. Prints a JSON summary with
    each error's type, module and message.
``replay NAME URL ACKS GO OPS CONVERSATION``
    Waits for GO, then adds OPS messages to CONVERSATION through a pass-through
    ``wrapper=True`` plugin (so each write is a usual transaction, committed after the
    chain) under a policy whose 1 ms lock timeout makes COMMITs fail and replay; acks
    each result's id and seq.
``index URL FOLDER GO``
    An index worker with its own embedded folder: see :func:`index_worker`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import IO, Any

from anchorline import (
    Add,
    Delete,
    Pipeline,
    Reserve,
    RetryPolicy,
    Update,
    UpdateContent,
    hookimpl,
)
from anchorline.memory.index import sync as sync_module

#: Waits out a restart or a killed connection, but gives up within a test's patience.
PATIENT = RetryPolicy(initial_backoff=0.02, max_backoff=0.2, max_attempts=1000, deadline=30.0)
#: Gives up within half a second: an outage reaches the caller.
BRIEF = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, max_attempts=1000, deadline=0.5)
POLICIES = {"default": None, "patient": PATIENT, "brief": BRIEF}
#: Shared by every process: several write each of them.
SHARED_CONVERSATIONS = ("shared-0", "shared-1", "shared-2")
#: Where the client ids every process adds (the same op from each) go.
COMMON = "shared-keys"
#: How long a process waits for the test's go (the test kills it long before).
GO_TIMEOUT = 120.0
#: Items an index worker claims at once: small, so that the claims of several workers
#: meet often (with the indexer's 64 they seldom do, and a claim that let two workers
#: take one item could go unseen).
CLAIM_BATCH = 8
#: An op slower than this waited out a fault (reported in the figures, never asserted).
SLOW = 0.5


def _ready() -> None:
    print("ready", flush=True)


def _wait_for(path: str) -> None:
    give_up = time.monotonic() + GO_TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > give_up:
            raise SystemExit(f"no {path} after {GO_TIMEOUT:g}s")
        time.sleep(0.001)


def _acker(out: IO[str]) -> Callable[..., None]:
    def ack(**fields: Any) -> None:
        out.write(json.dumps(fields) + "\n")

    return ack


def mixed(name: str, url: str, acks_path: str, go: str, ops: int) -> int:
    """``ops`` ops in a cycle of ten, all with the default retry policy:

    0. add (a new client id) to a shared conversation; 1. reserve (a new client id);
    2. a partial and 3. the final content of that placeholder; 4. metadata on the add;
    5. the add of step 0 again (its client id repeated: the stored message comes back);
    6. add a message to this process's own conversation, and 7. delete it; 8. add the
    client id every process adds at this step (one message, whoever is first); 9. metadata
    on that common message (each process its own key: no update may be lost).

    Returns how many ops raised (each printed to stderr).
    """
    errors = 0
    with (
        Pipeline.open(url, load_entrypoints=False) as pipeline,
        open(acks_path, "w", buffering=1) as out,
    ):
        ack = _acker(out)
        _ready()
        _wait_for(go)
        first: Add | None = None
        first_id = placeholder = doomed = common = ""
        for i in range(ops):
            step, cycle = i % 10, i // 10
            conversation = SHARED_CONVERSATIONS[cycle % len(SHARED_CONVERSATIONS)]
            key = f"{name}-{i}"
            try:
                if step == 0:
                    first = Add(
                        conversation_id=conversation,
                        role="user",
                        content=f"question {key}",
                        client_message_id=key,
                    )
                    added = pipeline.persist(first)
                    first_id = added.message.id
                    ack(
                        op="add",
                        id=first_id,
                        key=key,
                        conversation=conversation,
                        content=first.content,
                        dedup=added.deduplicated,
                    )
                elif step == 1:
                    reserved = pipeline.persist(
                        Reserve(
                            conversation_id=conversation, role="assistant", client_message_id=key
                        )
                    )
                    placeholder = reserved.message.id
                    ack(
                        op="reserve",
                        id=placeholder,
                        key=key,
                        conversation=conversation,
                        dedup=reserved.deduplicated,
                    )
                elif step in (2, 3):
                    final = step == 3
                    content = f"{'final' if final else 'partial'} answer {key}"
                    pipeline.persist(
                        UpdateContent(message_id=placeholder, content=content, final=final)
                    )
                    ack(op="final" if final else "partial", id=placeholder, content=content)
                elif step == 4:
                    metadata = {f"{name}-{i}": i}
                    pipeline.persist(Update(message_id=first_id, metadata=metadata))
                    ack(op="meta", id=first_id, metadata=metadata)
                elif step == 5:
                    assert first is not None
                    again = pipeline.persist(first)
                    if not again.deduplicated or again.message.id != first_id:
                        raise AssertionError(f"repeated add gave {again!r}, not {first_id}")
                    ack(
                        op="add",
                        id=first_id,
                        key=first.client_message_id,
                        conversation=first.conversation_id,
                        content=first.content,
                        dedup=True,
                    )
                elif step == 6:
                    own = f"{name}-own"
                    scratch = Add(
                        conversation_id=own,
                        role="tool",
                        content=f"scratch {key}",
                        client_message_id=key,
                    )
                    doomed = pipeline.persist(scratch).message.id
                    ack(
                        op="add",
                        id=doomed,
                        key=key,
                        conversation=own,
                        content=scratch.content,
                        dedup=False,
                    )
                elif step == 7:
                    deleted = pipeline.persist(Delete(message_id=doomed))
                    if not deleted.existed:
                        raise AssertionError(f"delete of {doomed} found nothing")
                    ack(op="delete", id=doomed)
                elif step == 8:
                    shared_key = f"common-{cycle}"
                    op = Add(
                        conversation_id=COMMON,
                        role="user",
                        content=f"common {cycle}",
                        client_message_id=shared_key,
                    )
                    added = pipeline.persist(op)
                    common = added.message.id
                    ack(
                        op="add",
                        id=common,
                        key=shared_key,
                        conversation=COMMON,
                        content=op.content,
                        dedup=added.deduplicated,
                    )
                else:
                    metadata = {f"{name}-{i}": i}
                    pipeline.persist(Update(message_id=common, metadata=metadata))
                    ack(op="meta", id=common, metadata=metadata)
            except Exception as e:
                errors += 1
                print(f"op {i}: {type(e).__module__}.{type(e).__name__}: {e}", file=sys.stderr)
    return errors


def stream(name: str, url: str, acks_path: str, stop: str, policy: str) -> dict[str, Any]:
    """Agent turns until ``stop`` exists: a question (its own client id), then an answer
    streamed with four partial flushes and a final write (the answer's client id too).

    Returns the turns, ops, slow ops and every error (type, module, message, and the
    ids of the turn, whose state is then unknown).
    """
    retry = POLICIES[policy]
    errors: list[dict[str, Any]] = []
    turns = ops = slow = 0
    with (
        Pipeline.open(url, retry=retry, load_entrypoints=False) as pipeline,
        open(acks_path, "w", buffering=1) as out,
    ):
        ack = _acker(out)
        _ready()
        while not os.path.exists(stop):
            conversation = f"{name}-c{turns % 5}"
            question_key, answer_key = f"{name}-q{turns}", f"{name}-a{turns}"
            touched: list[str] = []
            started = time.monotonic()

            def timed() -> None:
                nonlocal started, ops, slow
                now = time.monotonic()
                ops += 1
                slow += now - started > SLOW
                started = now

            try:
                question = f"question {turns} of {name} about restarts"
                added = pipeline.persist(
                    Add(
                        conversation_id=conversation,
                        role="user",
                        content=question,
                        client_message_id=question_key,
                    )
                )
                timed()
                touched.append(added.message.id)
                ack(
                    op="add",
                    id=added.message.id,
                    key=question_key,
                    conversation=conversation,
                    content=question,
                    dedup=added.deduplicated,
                )
                with pipeline.stream(
                    conversation, client_message_id=answer_key, flush_interval=3600
                ) as s:
                    timed()
                    touched.append(s.message_id)
                    ack(op="reserve", id=s.message_id, key=answer_key, conversation=conversation)
                    for token in range(24):
                        s.append(f"token{token} ")
                        if token % 6 == 5:
                            s.flush()
                            timed()
                            ack(op="partial", id=s.message_id, content=s.content)
                timed()
                ack(op="final", id=s.message_id, content=s.content)
            except Exception as e:
                errors.append(
                    {
                        "type": type(e).__name__,
                        "module": type(e).__module__,
                        "message": str(e),
                        "ids": touched,
                        "keys": [question_key, answer_key],
                    }
                )
            turns += 1
    return {"turns": turns, "ops": ops, "slow": slow, "errors": errors}


class _PassThrough:
    """A wrapper on ``persist`` that changes nothing: each write then commits after the
    chain, in a transaction of the usual kind (not as one statement)."""

    @hookimpl(wrapper=True)
    def persist(self, op: object, context: object) -> Generator[None, Any, Any]:
        return (yield)


#: Lock waits time out at once, so COMMITs on a contended feed head fail and replay.
IMPATIENT = RetryPolicy(busy_timeout=0.001, max_attempts=1000, deadline=60.0)


def replay(name: str, url: str, acks_path: str, go: str, ops: int, conversation: str) -> int:
    """Add ``ops`` messages to ``conversation``, acking each result's id and seq."""
    with (
        Pipeline.open(
            url, retry=IMPATIENT, plugins=[_PassThrough()], load_entrypoints=False
        ) as pipeline,
        open(acks_path, "w", buffering=1) as out,
    ):
        ack = _acker(out)
        _ready()
        _wait_for(go)
        for i in range(ops):
            added = pipeline.persist(
                Add(conversation_id=conversation, role="user", content=f"{name} {i}")
            )
            ack(id=added.message.id, seq=added.message.seq, conversation=conversation)
    return 0


def index_worker(url: str, folder: str, go: str) -> dict[str, Any]:
    """Drain the outbox into the embedded index ``folder`` until SIGTERM.

    Qdrant's embedded folder belongs to one process at a time, and there is no Qdrant
    server here, so each worker has a folder of its own: a shard holding what this
    worker indexed. The indexer checks the index it opens against the whole database
    and queues what it lacks, right for the one index of a deployment, wrong for a
    shard (it would queue again what the other workers did). So the folder is opened
    while every message still waits in the outbox (a search, on a pipeline that does
    not drain: nothing is missing, nothing is queued), and held until the end (a long
    ``linger``) rather than let go and checked again when idle. Only then, on ``go``,
    does a draining pipeline start: the one under test, claiming ``CLAIM_BATCH`` items
    at a time.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Pipeline.open(url, index=folder, index_drain=False, load_entrypoints=False) as opener:
        _hold_folder(opener)
        opener.search("open the folder")
        _ready()
        _wait_for(go)
        sync_module.BATCH = CLAIM_BATCH
        with Pipeline.open(url, index=folder, load_entrypoints=False) as worker:
            _hold_folder(worker)
            stop.wait(GO_TIMEOUT)
            status = worker.index_status()
    return {"stopped": stop.is_set(), "pending": status.pending, "last_error": status.last_error}


def _hold_folder(pipeline: Pipeline) -> None:
    index = pipeline.indexer().index
    assert index is not None
    index.linger = 3600.0


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "mixed":
        errors = mixed(args[0], args[1], args[2], args[3], int(args[4]))
        print(errors, flush=True)
        return 0
    if role == "stream":
        print(json.dumps(stream(*args[:5])), flush=True)
        return 0
    if role == "replay":
        print(replay(*args[:4], int(args[4]), args[5]), flush=True)
        return 0
    if role == "index":
        print(json.dumps(index_worker(*args[:3])), flush=True)
        return 0
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
