"""Progress of an ingest run: one bar per file and one overall, redrawn in place on a terminal,
one line per change elsewhere (logs, pipes)."""
from __future__ import annotations

import shutil
import time

from docenrich.cli.ingest import Item, Run, is_tty
from docenrich.records import FINISHED_STATES, READY

MAX_FILE_LINES = 12


def bar(fraction: float, width: int = 24) -> str:
    """A plain-text bar."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(width * fraction))
    return "[" + "#" * filled + "." * (width - filled) + f"] {fraction:4.0%}"


def file_fraction(item: Item) -> float:
    """How far one file is: checked and stored, then extraction and embedding by page batches."""
    if item.outcome == "refused":
        return 1.0
    if item.outcome == "waiting":
        return 0.0
    if item.state == READY:
        return 1.0
    if not item.state or item.state == "queued":
        return 0.05
    return 0.1 + 0.9 * item.progress


def describe(item: Item) -> str:
    """What is happening to one file, in a few words."""
    if item.outcome == "refused":
        return "refused: " + item.reason
    if item.state == "failed":
        return "failed: " + item.reason
    if item.outcome == "waiting":
        return "waiting"
    prefix = "already stored · " if item.outcome == "stored" else ""
    if item.state in FINISHED_STATES:
        return prefix + item.state
    return prefix + (item.stage or item.state or "queued")


class Progress:
    """Draws the bars of a Run on a stream."""

    def __init__(self, run: Run, stream, waiting: bool):
        self.run, self.stream, self.waiting = run, stream, waiting
        self.tty = is_tty(stream)
        self.drawn = 0
        self.last: dict[int, str] = {}
        self.started = time.monotonic()

    def overall(self) -> str:
        items = self.run.items
        if self.waiting:
            done = sum(i.outcome == "refused" or i.state in FINISHED_STATES for i in items)
            fraction = sum(file_fraction(i) for i in items) / max(len(items), 1)
        else:
            done = sum(i.outcome != "waiting" for i in items)
            fraction = done / max(len(items), 1)
        return f"overall {bar(fraction)} {done}/{len(items)} files  {time.monotonic() - self.started:.0f}s"

    def draw(self) -> None:
        """Redraw (terminal) or print what changed (elsewhere)."""
        if self.tty:
            self._redraw()
        else:
            self._print_changes()

    def _file_line(self, item: Item, width: int) -> str:
        name = item.path.name
        name = name if len(name) <= 32 else name[:31] + "…"
        return f"{name:<32} {bar(file_fraction(item), 16)} {describe(item)}"[:width]

    def _redraw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1
        busy = [i for i in self.run.items
                if i.outcome != "waiting" and i.outcome != "refused" and i.state not in FINISHED_STATES]
        recent = [i for i in self.run.items if i.outcome != "waiting"][-3:]
        shown = list(dict.fromkeys(busy[:MAX_FILE_LINES] + recent))[-MAX_FILE_LINES:]
        lines = [self._file_line(i, width) for i in shown] + [self.overall()[:width]]
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self.stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def _print_changes(self) -> None:
        for index, item in enumerate(self.run.items):
            if item.outcome == "waiting":
                continue
            text = self._file_line(item, 400)
            key = describe(item)
            if self.last.get(index) != key:
                self.last[index] = key
                self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message between the bars."""
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """The final overall line (printed once off a terminal)."""
        if self.tty:
            self._redraw()
        else:
            self._print_changes()
            self.stream.write(self.overall() + "\n")
            self.stream.flush()
