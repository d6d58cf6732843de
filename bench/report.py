"""The results of the benchmarks: targets, rows and figures, the markdown tables of RESULTS.md,
machine facts and the raw JSON."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"


@dataclass
class Target:
    """A goal beside a figure: value vs goal, higher or lower is better."""

    goal: float
    higher_is_better: bool
    unit: str = ""

    def met(self, value: float) -> bool:
        return value >= self.goal if self.higher_is_better else value <= self.goal

    def text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.goal:g}{self.unit}"

    def gap(self, value: float) -> str:
        if value != value:  # NaN
            return "not measured"
        if self.met(value):
            return "met"
        short = abs(value - self.goal)
        factor = (self.goal / value if self.higher_is_better else value / self.goal) if value else float("inf")
        return f"**MISSED** by {fmt(short)}{self.unit} ({factor:.1f}× off)"


@dataclass
class Row:
    metric: str
    value: str
    ratio: str = ""
    target: Target | None = None
    target_value: float | None = None  # the number compared with the target (value or ratio)

    def cells(self) -> list[str]:
        if self.target is None:
            return [self.metric, self.value, self.ratio, "", ""]
        return [self.metric, self.value, self.ratio, self.target.text(), self.target.gap(self.target_value)]


@dataclass
class Figure:
    """One figure of RESULTS.md: a table, what it measures, how to rerun it, notes, raw data."""

    key: str
    title: str
    what: str
    command: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    extra_tables: list[str] = field(default_factory=list)

    def add(self, metric: str, value: str, ratio: str = "", target: Target | None = None,
            target_value: float | None = None) -> None:
        self.rows.append(Row(metric, value, ratio, target, target_value))

    def targets(self) -> list[tuple[str, Row]]:
        return [(self.title, r) for r in self.rows if r.target is not None]

    def markdown(self, machine: str) -> str:
        lines = [f"## {self.title}", "", f"- **What**: {self.what}", f"- **Command**: `{self.command}`",
                 f"- **Machine**: {machine}", "",
                 table(["figure", "median", "ratio", "target", "gap"], [r.cells() for r in self.rows])]
        for extra in self.extra_tables:
            lines += ["", extra]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def fmt(value: float, digits: int = 3) -> str:
    """A number with `digits` significant digits, no scientific notation for ordinary sizes."""
    if value is None or value != value:
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10 ** digits:
        return f"{value:,.0f}"
    decimals = max(0, digits - 1 - int(f"{magnitude:e}".split("e")[1]))
    return f"{value:.{decimals}f}"


def ms(seconds: float) -> str:
    return f"{fmt(seconds * 1000)} ms"


def secs(seconds: float) -> str:
    return f"{fmt(seconds)} s"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, RAM, torch version, date, load average."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = _proc_kb("/proc/meminfo", "MemTotal")
    try:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
    except ImportError:
        torch_version, threads = "not installed", 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 2**20, 1),
        "torch": torch_version,
        "torch_threads": threads,
        "python": platform.python_version(),
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg": os.getloadavg(),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['nproc']} × {info['cpu']}, {info['ram_gib']} GiB RAM, torch {info['torch']} "
            f"({info['torch_threads']} threads), Python {info['python']}, {info['date']}")


def save_json(name: str, data: Any) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


# --------------------------------------------------------------------------- memory


def _proc_kb(path: str, key: str) -> int:
    """A `Key:   123 kB` value of a /proc file, in kB (0 when absent)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def process_memory(pid: int) -> dict[str, float]:
    """MiB of one process and its descendants: rss and peak rss (VmHWM) summed, and pss (shared pages
    counted once across the fork), plus per-process rows."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    rows = []
    for proc in procs:
        try:
            full = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rows.append({
            "pid": proc.pid,
            "rss_mib": full.rss / 2**20,
            "hwm_mib": _proc_kb(f"/proc/{proc.pid}/status", "VmHWM") / 1024,
            "pss_mib": getattr(full, "pss", 0) / 2**20,
            "uss_mib": getattr(full, "uss", 0) / 2**20,
        })
    total = {k: sum(r[k] for r in rows) for k in ("rss_mib", "hwm_mib", "pss_mib", "uss_mib")}
    return {**total, "processes": rows}
