"""Benchmark: docenrich.pdf.extract_snippets (text + images) vs a bare PyMuPDF get_text loop vs pypdf.

Usage: python bench/bench_extract.py [--repeat 5] [--json out.json] [--pdf PATH] [--generate N]
"""
from __future__ import annotations

import argparse
import json
import logging
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pymupdf  # noqa: E402

from docenrich import pdf  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_PDF = ROOT / ".." / "shared" / "corpus" / "wild-pdfs" / "009-pdflatex-geotopo" / "GeoTopo-komprimiert.pdf"

_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have an "
          "they you were her all she there would their we him been has when who will more no if out so said what up "
          "its about into than them can only other new some could time these two may then do first any my now such "
          "like our over man me even most made after also did many before must through back years where much your "
          "way well down should because each just those people how too little state good very make world still own "
          "see men work long get here between both life being under never day same another know while last might "
          "information development international government especially considerable understanding").split()


def generate_pdf(pages: int, directory: Path, seed: int = 7) -> Path:
    """Write an N-page text PDF (header, headings, paragraphs, page numbers) and return its path."""
    rng = random.Random(seed)
    doc = pymupdf.open()
    for i in range(1, pages + 1):
        page = doc.new_page()
        page.insert_text((72, 40), "Generated benchmark document - docenrich", fontsize=8)
        y = 80.0
        for _ in range(3):
            page.insert_text((72, y), f"Section {i}.{rng.randint(1, 9)} " + " ".join(rng.choices(_WORDS, k=3)).title(),
                             fontsize=13, fontname="hebo")
            y += 20
            text = " ".join(rng.choices(_WORDS, k=170)).capitalize() + "."
            rect = pymupdf.Rect(72, y, 523, y + 200)
            page.insert_textbox(rect, text, fontsize=10, align=pymupdf.TEXT_ALIGN_JUSTIFY)
            y += 215
        page.insert_text((290, 800), str(i), fontsize=9)
    path = directory / f"generated-{pages}.pdf"
    doc.save(path, garbage=3, deflate=True)
    return path


def _time(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time stays honest on a busy machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _bare_get_text(path: Path) -> None:
    doc = pymupdf.open(path)
    for page in doc:
        page.get_text()
    doc.close()


def _pypdf_loader() -> Callable[[Path], None] | None:
    try:
        import pypdf  # optional: only the benchmark compares against it
    except ImportError:
        return None
    # pypdf warns once per font without fontTools; printing thousands of lines would
    # be timed as pypdf's work.
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    def run(path: Path) -> None:
        reader = pypdf.PdfReader(str(path))
        for page in reader.pages:
            page.extract_text()
    return run


def measure_extract(path: str | Path, repeat: int = 5) -> dict:
    """Median pages/s of extract_snippets (with and without images), bare get_text and pypdf."""
    path = Path(path)
    pages = pdf.page_count(path)
    pypdf_run = _pypdf_loader()
    methods: dict[str, Callable[[], object]] = {
        "extract_snippets (text + images)": lambda: pdf.extract_snippets(path),
        "extract_snippets (images=False)": lambda: pdf.extract_snippets(path, images=False),
        "extract_snippets (images=False, tables=lines)": lambda: pdf.extract_snippets(path, images=False,
                                                                                      tables="lines"),
        "extract_snippets (images=False, tables=lines, ocr=False)": lambda: pdf.extract_snippets(
            path, images=False, tables="lines", ocr=False),
        "bare PyMuPDF page.get_text()": lambda: _bare_get_text(path),
    }
    if pypdf_run is not None:
        methods["pypdf extract_text()"] = lambda: pypdf_run(path)
    _bare_get_text(path)  # warm the OS cache and MuPDF's font cache once
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    # Interleave the methods inside every round so machine noise hits them all alike.
    for _ in range(max(1, repeat)):
        for name, fn in methods.items():
            times[name].append(_time(fn))
    result: dict = {"pdf": str(path.resolve()), "pages": pages, "repeat": repeat, "methods": {}}
    for name, ts in times.items():
        med = statistics.median(w for w, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        result["methods"][name] = {"median_s": med, "pages_per_s": pages / med, "median_cpu_s": cpu,
                                   "pages_per_cpu_s": pages / max(cpu, 1e-9), "runs_s": [w for w, _ in ts]}
    m = result["methods"]
    base, base_cpu = m["bare PyMuPDF page.get_text()"]["pages_per_s"], m["bare PyMuPDF page.get_text()"]["pages_per_cpu_s"]
    ours, ours_cpu = m["extract_snippets (text + images)"]["pages_per_s"], m["extract_snippets (text + images)"]["pages_per_cpu_s"]
    result["ratio_vs_get_text"] = ours / base
    result["ratio_vs_get_text_cpu"] = ours_cpu / base_cpu
    result["ratio_text_only_vs_get_text"] = m["extract_snippets (images=False)"]["pages_per_s"] / base
    result["ratio_text_only_vs_get_text_cpu"] = m["extract_snippets (images=False)"]["pages_per_cpu_s"] / base_cpu
    if pypdf_run is not None:
        result["ratio_vs_pypdf"] = ours / m["pypdf extract_text()"]["pages_per_s"]
        result["ratio_vs_pypdf_cpu"] = ours_cpu / m["pypdf extract_text()"]["pages_per_cpu_s"]
    else:
        result["ratio_vs_pypdf"] = None
        result["note"] = "pypdf is not installed; its column is skipped (pip install pypdf to compare)"
    # What a Celery round trip costs on top: encoding images happens at pickling time.
    sn = pdf.extract_snippets(path)
    t_pickle = _time(lambda: [pickle.dumps(s) for s in sn])[0]
    sizes = [len(pickle.dumps(s)) for s in sn]
    result["snippets"] = len(sn)
    result["kinds"] = {k: sum(1 for s in sn if s.kind == k) for k in sorted({s.kind for s in sn})}
    result["pickle_first_s"] = t_pickle
    result["pickled_bytes_per_snippet"] = sum(sizes) / max(1, len(sizes))
    result["extract_plus_encode_pages_per_s"] = pages / (result["methods"]["extract_snippets (text + images)"]["median_s"] + t_pickle)
    return result


def markdown(result: dict) -> str:
    """The result as a markdown table plus summary lines."""
    base = result["methods"]["bare PyMuPDF page.get_text()"]
    lines = [f"**{Path(result['pdf']).name}**: {result['pages']} pages, median of {result['repeat']} runs", "",
             "| method | pages/s (wall) | s/run | vs get_text | pages/CPU-s | vs get_text (CPU) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | {m['pages_per_s']:.0f} | {m['median_s']:.3f} | "
                     f"{m['pages_per_s'] / base['pages_per_s']:.2f}x | {m['pages_per_cpu_s']:.0f} | "
                     f"{m['pages_per_cpu_s'] / base['pages_per_cpu_s']:.2f}x |")
    lines.append("")
    lines.append(f"- extract_snippets vs get_text: **{result['ratio_vs_get_text']:.2f}x** wall, "
                 f"{result['ratio_vs_get_text_cpu']:.2f}x CPU (text only: {result['ratio_text_only_vs_get_text']:.2f}x "
                 f"wall, {result['ratio_text_only_vs_get_text_cpu']:.2f}x CPU)")
    if result["ratio_vs_pypdf"] is not None:
        lines.append(f"- extract_snippets vs pypdf: **{result['ratio_vs_pypdf']:.1f}x** wall, "
                     f"{result['ratio_vs_pypdf_cpu']:.1f}x CPU")
    else:
        lines.append(f"- pypdf: {result['note']}")
    lines.append(f"- {result['snippets']} snippets {result['kinds']}; encoding them for pickle took "
                 f"{result['pickle_first_s']:.3f} s ({result['extract_plus_encode_pages_per_s']:.0f} pages/s "
                 f"extract+encode); {result['pickled_bytes_per_snippet']:.0f} pickled bytes/snippet")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--pdf", type=Path, help="benchmark this PDF instead of GeoTopo")
    parser.add_argument("--generate", type=int, metavar="N", help="benchmark a generated N-page text PDF")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
        targets = []
        if args.pdf or not args.generate:
            target = args.pdf or DEFAULT_PDF
            if not target.exists():
                print(f"PDF not found: {target}", file=sys.stderr)
                return 2
            targets.append(target)
        if args.generate:
            targets.append(generate_pdf(args.generate, Path(tmp)))
        for target in targets:
            result = measure_extract(target, args.repeat)
            results.append(result)
            print(markdown(result))
            print()
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
