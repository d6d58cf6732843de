"""Walking exception chains: the one place that follows causes, contexts and wrapped errors."""
from __future__ import annotations

from collections.abc import Iterator


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """Yield exc and everything behind it: __cause__, __context__, or an exception passed as args[0].

    Libraries wrap errors in their own (kombu's EncodeError around a time limit, redis-py's
    errors around socket errors), so the cause that matters is often a few links down.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = exc.__cause__ or exc.__context__ or inner


def caused_by(exc: BaseException | None, kinds: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether exc, or anything in its chain, is one of kinds."""
    return any(isinstance(e, kinds) for e in exception_chain(exc))
