"""Who is alive and who holds which page batch: worker heartbeats and batch leases in Redis.

Every worker beats into one sorted set (member: this run of the worker, score: Redis time),
so "which workers are alive" is one range read, never a scan of the keyspace. A page batch
of one run of a document has one lease, ``stage|owner|task``:

- an owner names the worker process doing the step (``name/run:pid``); the lease lasts while
  that worker beats and the step renews it, so a killed worker's batches are free again
  within HEARTBEAT_TTL seconds, a killed pool child's within LEASE_TTL;
- an empty owner means the message for the next step (its task id is the third part) is in
  the broker: written only after the message was sent, so after a crash a lease never
  promises a message Redis lost; a message a dead consumer took is noticed in kombu's
  unacknowledged set and counts as lost, and so does one that is in no queue and in no
  consumer's hands UNACKED_GRACE seconds after the handover (taken off its queue as Redis
  went down, or consumed by a step that found nothing to do).

A step runs only if it can take the lease; recovery re-queues only batches whose lease is
free. Duplicate messages (recovery racing the broker's redelivery) then do nothing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from docenrich.celery_app import ALL_QUEUES, celery_app, queue_keys
from docenrich.keys import HANDOFF_TTL, HEARTBEATS_KEY, LEASE_KEY, REDIS_RUN_KEY  # noqa: F401

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TTL = 15
# An owned lease lasts this long unless renewed; a thread of the owning process renews it.
LEASE_TTL = 30
# A message the broker handed to a consumer that has not taken its lease this long after its
# delivery (or its ETA, for a retry's countdown) is orphaned: its worker died, or Redis lost
# the claim. A consumer takes the lease as soon as the task starts, within milliseconds.
UNACKED_GRACE = 30
# Kombu's Redis transport keeps delivered, unacknowledged messages here.
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"

# Stages: a batch is queueing (being sent), queued (for extraction), extracting, embedding, storing.
QUEUEING, QUEUED, EXTRACTING, EMBEDDING, STORING = "queueing", "queued", "extracting", "embedding", "storing"

_BEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], t[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] - 86400)
return t[1]
"""
_ALIVE = """
local t = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (t[1] - ARGV[1]), '+inf')
"""
# A lease value is "stage|owner|task id". KEYS: lease, heartbeats. ARGV: me, stage, ttl,
# stages a broker-held lease may be taken from (comma list), sender, heartbeat ttl, and
# (optional) the exact value the caller saw and may replace.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[7] then
  local stage, owner = string.match(v, '^([^|]*)|([^|]*)')
  if owner == '' then
    if not string.find(',' .. ARGV[4] .. ',', ',' .. stage .. ',', 1, true) then return v end
  elseif owner ~= ARGV[1] and owner ~= ARGV[5] then
    local worker = string.match(owner, '^(.*):%d+$') or owner
    local seen = redis.call('ZSCORE', KEYS[2], worker)
    local now = tonumber(redis.call('TIME')[1])
    if seen and tonumber(seen) > now - tonumber(ARGV[6]) then return v end
  end
end
redis.call('SET', KEYS[1], ARGV[2] .. '|' .. ARGV[1] .. '|', 'EX', ARGV[3])
return false
"""
# KEYS: lease. ARGV: expected value, new value, ttl. Compare-and-set.
_HANDOFF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

_DROP_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_worker = f"{socket.gethostname()}/{uuid.uuid4().hex[:8]}"
_renewing: dict[str, str] = {}  # lease key -> value, renewed by this process's thread
_renew_lock = threading.Lock()
_renewer: threading.Thread | None = None
_renewer_pid = 0


def set_worker(hostname: str) -> str:
    """Name this run of a worker (called once in the worker's main process, before it forks)."""
    global _worker
    _worker = f"{hostname}/{uuid.uuid4().hex[:8]}"
    return _worker


def worker_id() -> str:
    """This run of this worker, as heartbeats name it."""
    return _worker


def owner_id() -> str:
    """This process of this worker, as leases name it (pool children share the worker's beat)."""
    return f"{_worker}:{os.getpid()}"


def _client():
    # The result backend's client: the same Redis as the broker.
    return celery_app.backend.client


def beat(client, worker: str) -> None:
    """Say that `worker` is alive now."""
    client.eval(_BEAT, 1, HEARTBEATS_KEY, worker)


def forget(client, worker: str) -> None:
    """Say that `worker` stopped."""
    client.zrem(HEARTBEATS_KEY, worker)


def alive_workers(client) -> set[str]:
    """The worker runs that beat within HEARTBEAT_TTL seconds."""
    return {_text(m) for m in client.eval(_ALIVE, 1, HEARTBEATS_KEY, HEARTBEAT_TTL)}


def lease_key(doc_id: str, generation: int, batch_index: int) -> str:
    """The Redis key of one batch's lease."""
    return LEASE_KEY.format(doc_id=doc_id, generation=generation, batch_index=batch_index)


def claim(key: str, stage: str, *, takes: tuple[str, ...] = (), sender: str = "", seen: str | None = None,
          renew: bool = True) -> bool:
    """Take a batch's lease for `stage` if it is free, ours, the sender's, broker-held in a
    stage of `takes`, or still exactly `seen`; while we hold it, a thread renews it."""
    if seen is None:
        seen = _dead_sibling(key)
    held = _client().eval(
        _CLAIM, 2, key, HEARTBEATS_KEY, owner_id(), stage, LEASE_TTL, ",".join(takes), sender or "",
        HEARTBEAT_TTL, seen if seen is not None else "\x00",
    )
    if held is not None:
        log.info("batch %s is held (%s); not %s it again", _batch(key), _text(held), stage)
        return False
    if renew:
        _keep_renewing(key, f"{stage}|{owner_id()}|")
    return True


def _dead_sibling(key: str) -> str | None:
    """The lease's value when its owner is a pool child of this worker that has died (killed by a
    time limit, a crash or the OOM killer): the worker still beats, so only we can tell."""
    raw = _client().get(key)
    if raw is None:
        return None
    value = _text(raw)
    owner = (value.split("|") + [""])[1]
    worker, _, pid = owner.rpartition(":")
    if worker != _worker or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return value
    except PermissionError:
        return None
    stat = f"/proc/{pid}/stat"
    try:
        with open(stat) as fh:
            zombie = fh.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return value
    return value if zombie else None


def hand_to_broker(key: str, stage: str, next_stage: str, task_id: str) -> bool:
    """After sending the next step's message: the lease says the broker holds that message."""
    _stop_renewing(key)
    ttl = HANDOFF_TTL
    return bool(_client().eval(_HANDOFF, 1, key, f"{stage}|{owner_id()}|", f"{next_stage}||{task_id}", ttl))


def forget_message(key: str, stage: str, task_id: str) -> None:
    """Free a broker-held lease whose message is gone (rejected after a lost connection)."""
    _client().eval(_DROP_IF, 1, key, f"{stage}||{task_id}")


def release(key: str) -> None:
    """Drop a batch's lease (stored, or given up)."""
    _stop_renewing(key)
    _client().delete(key)


@dataclass
class Survey:
    """What recovery needs to know of Redis, read once per sweep: live workers, orphaned
    deliveries, and (after a Redis restart) every task id the broker still holds."""

    alive: set[str]
    orphans: set[str]
    present: set[str] | None
    in_broker: set[str] | None = None  # read at most once per sweep, only if a handover is old

    def broker_ids(self, client) -> set[str]:
        """Every task id waiting in a queue or delivered and unacknowledged, read once."""
        if self.present is not None:
            return self.present
        if self.in_broker is None:
            self.in_broker = _tasks_in_broker(client)
        return self.in_broker


def survey(check_restart: bool = False) -> Survey:
    """Look once. Only a recovery sweep checks for a Redis restart (check_restart): noticing it
    is consumed, so it is decided there, for every document of the sweep alike."""
    client = _client()
    restarted = check_restart and _redis_restarted(client)
    return Survey(alive_workers(client), _orphaned_tasks(client), _tasks_in_broker(client) if restarted else None)


def free_leases(keys: list[str], seen: Survey | None = None) -> list[str | None]:
    """For each lease key: the value it may be taken from (absent: ""), or None while someone
    alive, or the broker, holds it. A broker-held message counts as lost when a consumer took it
    and never claimed it for UNACKED_GRACE seconds (its consumer died, or Redis lost the claim),
    or when it has been in no queue and no consumer's hands since that long after the handover."""
    if not keys:
        return []
    client = _client()
    seen = seen or survey()
    values = ["" if raw is None else _text(raw) for raw in client.mget(keys)]
    parts = [(v.split("|") + ["", ""])[:3] if v else ["", "", ""] for v in values]
    handed = [i for i, (_stage, owner, task) in enumerate(parts) if values[i] and not owner and task]
    old = set(_old_handovers(client, [keys[i] for i in handed]))
    vanished = _vanished({parts[i][2] for i in handed if keys[i] in old}, seen, client)
    out: list[str | None] = []
    for value, (_stage, owner, task) in zip(values, parts, strict=True):
        lost = not owner and (task in seen.orphans or task in vanished
                              or (seen.present is not None and task not in seen.present))
        if not value or (owner and owner.rsplit(":", 1)[0] not in seen.alive) or lost:
            out.append(value)
        else:
            out.append(None)
    return out


def _old_handovers(client, keys: list[str]) -> list[str]:
    """The broker-held leases handed over at least UNACKED_GRACE seconds ago (their TTL tells)."""
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.ttl(key)
    return [k for k, ttl in zip(keys, pipe.execute(), strict=True) if 0 <= ttl <= HANDOFF_TTL - UNACKED_GRACE]


def _vanished(tasks: set[str], seen: Survey, client) -> set[str]:
    """Of these task ids, those in no queue and in no consumer's hands, twice a moment apart:
    a consumer moves a message from its queue to the unacknowledged set in two commands."""
    if not tasks:
        return set()
    missing = tasks - seen.broker_ids(client)
    if missing:
        time.sleep(0.2)
        missing -= _tasks_in_broker(client)
    if missing:
        log.warning("%d handed-over messages are in no queue and with no consumer: %s", len(missing),
                    ", ".join(sorted(missing)))
    return missing


def _redis_restarted(client) -> bool:
    """Whether Redis restarted since recovery last looked (then a message may have been lost
    between its delivery and its entry in the unacknowledged set, which kombu writes apart)."""
    run_id = client.info("server").get("run_id", "")
    return _text(client.getset(REDIS_RUN_KEY, run_id) or b"") != run_id


def _tasks_in_broker(client) -> set[str]:
    """Ids of every task waiting in a queue or delivered and unacknowledged (read at most once per sweep)."""
    found: set[str] = set()
    for queue in ALL_QUEUES:
        for key in queue_keys(queue):
            for raw in client.lrange(key, 0, -1):
                with contextlib.suppress(TypeError, ValueError, KeyError):
                    found.add(json.loads(raw)["headers"]["id"])
    for raw in client.hvals(UNACKED_KEY):
        with contextlib.suppress(TypeError, ValueError, KeyError, IndexError):
            found.add(json.loads(raw)[0]["headers"]["id"])
    return found


def _orphaned_tasks(client) -> set[str]:
    """Ids of the tasks delivered to a consumer more than UNACKED_GRACE seconds ago and still unacknowledged."""
    cutoff = time.time() - UNACKED_GRACE
    old = [_text(t) for t in client.zrangebyscore(UNACKED_INDEX_KEY, "-inf", cutoff)]
    if not old:
        return set()
    out = set()
    for raw in client.hmget(UNACKED_KEY, old):
        try:
            headers = json.loads(raw)[0]["headers"]
            eta = headers.get("eta")
            if eta and datetime.fromisoformat(eta).timestamp() > cutoff:
                continue  # a retry waiting for its countdown in its worker
            out.add(headers["id"])
        except (TypeError, ValueError, KeyError, IndexError):
            continue
    return out


def _keep_renewing(key: str, value: str) -> None:
    global _renewer, _renewer_pid
    with _renew_lock:
        _renewing[key] = value
        # One thread per process; a forked pool child starts its own.
        if _renewer is None or _renewer_pid != os.getpid() or not _renewer.is_alive():
            _renewer_pid = os.getpid()
            _renewer = threading.Thread(target=_renew_forever, name="docenrich-leases", daemon=True)
            _renewer.start()


def _stop_renewing(key: str) -> None:
    with _renew_lock:
        _renewing.pop(key, None)


def _renew_forever() -> None:
    while True:
        time.sleep(LEASE_TTL / 3)
        with _renew_lock:
            held = dict(_renewing)
        for key, value in held.items():
            try:
                if not _client().eval(_HANDOFF, 1, key, value, value, LEASE_TTL):
                    _stop_renewing(key)  # taken over, stored or dropped meanwhile
            except Exception as exc:
                log.warning("could not renew the lease of batch %s: %s", _batch(key), exc)


def _batch(key: str) -> str:
    return key.split(":", 2)[-1]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
