"""Every Redis key docenrich, Celery and Kombu keep: one family a line, with its owner and lifetime.

Redis is the broker and the result backend, not a store: every key that grows with use
(per search, per task, per batch) expires. The few without a TTL are fixed in number
(one per queue, per worker or per metric) and named here with their owner. A test lists
the keys after a workload and checks each against this table.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

# Lifetimes in seconds. Results only a waiting caller reads: minutes (RESULT_EXPIRES).
STAGED_TTL = 24 * 3600  # extracted batches waiting for vectors: as long as an embedding backlog may last
DELIVERY_TTL = 24 * 3600  # delivery counts of a task: as long as its message may sit in a queue
ATTEMPTS_TTL = 7 * 24 * 3600  # attempts of a page batch: as long as its document may be in work
HANDOFF_TTL = 24 * 3600  # a lease handed to the broker: as long as the message may wait there
TASK_OWNER_TTL = 600  # an upload's task id, readable through /api/tasks: renewed by each read

HEARTBEATS_KEY = "docenrich:heartbeats"
LEASE_KEY = "docenrich:lease:{doc_id}:{generation}:{batch_index}"
ATTEMPTS_KEY = "docenrich:attempts:{doc_id}:{generation}:{batch_index}"
REDIS_RUN_KEY = "docenrich:redis-run"
STAGED_KEY = "docenrich:staged:{doc_id}:{generation}:{batch_index}"
DELIVERY_KEY = "docenrich:deliveries:{task_id}:{retries}:{part}"
SWEEP_KEY = "docenrich:recovery-sweep"
CANCELLED_KEY = "docenrich:cancelled:{doc_id}:{generation}"
CONVERTING_KEY = "docenrich:converting:{doc_id}:{generation}"
TASK_OWNER_KEY = "docenrich:task-owner:{task_id}"
MODEL_STATUS_KEY = "docenrich:model-status"
MODEL_HOLDS_KEY = "docenrich:model-holds"
METRICS_PREFIX = "docenrich:metrics:"


@dataclass(frozen=True)
class KeyFamily:
    """Keys matching `pattern` (fnmatch): who writes them, and their TTL (None: fixed in number)."""

    pattern: str
    owner: str
    ttl: str | None


FAMILIES = (
    KeyFamily("docenrich:lease:*", "docs and model workers: who works on a page batch", "30 s, renewed; a day once queued"),
    KeyFamily("docenrich:attempts:*", "docs workers: how often a page batch was tried", "7 days"),
    KeyFamily("docenrich:staged:*", "docs workers: extracted batches waiting for vectors", "1 day"),
    KeyFamily("docenrich:deliveries:*", "every task: how often its message was delivered", "1 day"),
    KeyFamily("docenrich:cancelled:*", "web app: a cancelled document generation", "1 day"),
    KeyFamily("docenrich:converting:*", "docs workers: one conversion of an upload to PDF at a time",
              "the conversion time limit and a minute"),
    KeyFamily("docenrich:task-owner:*", "web app: task ids an upload returned", "10 min after the last read"),
    KeyFamily("docenrich:recovery-sweep", "docs workers: one recovery sweep at a time", "the sweep interval"),
    KeyFamily("celery-task-meta-*", "Celery: results a caller waits for", "RESULT_EXPIRES"),
    KeyFamily("unacked_mutex", "Kombu: restoring unacknowledged messages", "seconds"),
    KeyFamily("LIMITS:LIMITER*", "Flask-Limiter: sign-in attempts per address", "the limit's window"),
    # Fixed in number: one per worker, queue, task name or metric.
    KeyFamily("docenrich:heartbeats", "workers: last beat per worker (old ones pruned)", None),
    KeyFamily("docenrich:redis-run", "recovery: the run id of the Redis server last seen", None),
    KeyFamily("docenrich:model-status", "model workers: what each pool child holds", None),
    KeyFamily("docenrich:model-holds", "web app: searches about to use the model worker (lapsed ones pruned)", None),
    KeyFamily("docenrich:metrics:*", "workers and web app: counters and histograms, one per name", None),
    KeyFamily("_kombu.binding*", "Kombu: which queues an exchange routes to, and for how long", None),
    KeyFamily("unacked", "Kombu: messages delivered and not yet acknowledged", None),
    KeyFamily("unacked_index", "Kombu: delivery times of the unacknowledged messages", None),
    KeyFamily("interactive", "Kombu: the interactive queue", None),
    KeyFamily("models", "Kombu: the models queue", None),
    KeyFamily("docs", "Kombu: the docs queue", None),
    KeyFamily("interactive:[369]", "Kombu: the interactive queue, one list per priority", None),
    KeyFamily("models:[369]", "Kombu: the models queue, one list per priority", None),
    KeyFamily("docs:[369]", "Kombu: the docs queue, one list per priority", None),
)


def family_of(key: str) -> KeyFamily | None:
    """The first family whose pattern matches the key, or None for a key nobody documents."""
    for family in FAMILIES:
        if fnmatch.fnmatchcase(key, family.pattern):
            return family
    return None


def undocumented(keys_with_ttl: dict[str, int]) -> list[str]:
    """Keys (name → TTL in seconds, -1 for none) that belong to no family, or have no TTL
    though their family expires."""
    out = []
    for key, ttl in sorted(keys_with_ttl.items()):
        family = family_of(key)
        if family is None or (family.ttl is not None and ttl < 0):
            out.append(key)
    return out
