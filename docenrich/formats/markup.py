"""HTML, Markdown and plain text as clean HTML: no scripts, no styles, no external resources, bounded depth.

The result is laid out into pages by MuPDF's Story (`story`), which then never runs code and
never reads anything but the text it is given and images embedded as data: URIs.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# Elements kept (their attributes dropped, but for the few below); everything else keeps its text only.
KEPT = frozenset(
    "h1 h2 h3 h4 h5 h6 p br hr div span section article header footer main aside blockquote pre code tt kbd samp "
    "var em strong b i u s sub sup small mark abbr cite q dfn ul ol li dl dt dd table thead tbody tfoot tr th td "
    "caption figure figcaption img".split()
)
VOID = frozenset("br hr img wbr area base col embed input link meta param source track".split())
# Elements dropped with everything inside them.
DROPPED = frozenset(
    "script style noscript template iframe object embed applet svg math link meta base form input button "
    "select textarea option canvas video audio picture source frame frameset noframes".split()
)
ATTRIBUTES = {"td": ("colspan", "rowspan"), "th": ("colspan", "rowspan"), "img": ("src", "alt"), "ol": ("start",)}
# Deeper elements keep their text but lose their tags: MuPDF's layout recurses per level.
MAX_DEPTH = 48
# Images only from the document itself, of modest size (a data: URI of at most 4 MB).
_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|jpg|gif);base64,[A-Za-z0-9+/=\s]{1,5600000}", re.IGNORECASE)
_SAFE_NUMBER = re.compile(r"\d{1,4}")


class _Cleaner(HTMLParser):
    """Streams HTML into clean HTML (see the module's description) and picks up the document's title."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, whether it was written)
        self.dropping = 0  # > 0 while inside a dropped element
        self.in_title = False
        self.title = ""

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
        """The kept attributes as text, or None when the element must go (an image from elsewhere)."""
        kept = []
        for name, value in attrs:
            if name not in ATTRIBUTES.get(tag, ()) or value is None:
                continue
            if name == "src" and not _DATA_IMAGE.fullmatch(value.strip()):
                return None
            if name in ("colspan", "rowspan", "start") and not _SAFE_NUMBER.fullmatch(value.strip()):
                continue
            kept.append(f' {name}="{html.escape(value.strip(), quote=True)}"')
        if tag == "img" and not any(k.startswith(" src=") for k in kept):
            return None
        return "".join(kept)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "title":
            self.in_title = True
        if self.dropping or tag in DROPPED:
            if tag not in VOID:
                self.dropping += 1
            return
        written = False
        if tag in KEPT and len(self.stack) < MAX_DEPTH:
            extra = self._attrs(tag, attrs)
            if extra is not None:
                self.out.append(f"<{tag}{extra}>")
                written = True
        if tag not in VOID:
            self.stack.append((tag, written))

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if self.dropping:
            if tag in DROPPED and tag not in VOID:
                self.dropping -= 1
            return
        # Close up to the matching element among the last few open ones; a stray end tag is ignored.
        for depth in range(len(self.stack) - 1, max(-1, len(self.stack) - 1 - MAX_DEPTH), -1):
            if self.stack[depth][0] == tag:
                for open_tag, written in reversed(self.stack[depth:]):
                    if written:
                        self.out.append(f"</{open_tag}>")
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title = (self.title + data)[:300]
            return
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        """The clean HTML, every element still open closed."""
        self.close()
        tail = [f"</{tag}>" for tag, written in reversed(self.stack) if written]
        return "".join(self.out + tail)


def clean_html(source: str) -> tuple[str, str]:
    """(clean HTML, the document's title) of any HTML."""
    cleaner = _Cleaner()
    cleaner.feed(source)
    body = cleaner.result()
    return body, " ".join(cleaner.title.split())


def markdown_html(source: str) -> tuple[str, str]:
    """(clean HTML, title: its first level-1 heading) of Markdown; raw HTML inside it is cleaned too."""
    import markdown  # imported here: only conversions need it

    rendered = markdown.markdown(source, extensions=["tables", "fenced_code", "sane_lists"], output_format="html")
    body, _ = clean_html(rendered)
    first = re.search(r"<h1>(.*?)</h1>", body, re.DOTALL)
    title = html.unescape(re.sub(r"<[^>]+>", "", first.group(1))) if first else ""
    return body, " ".join(title.split())[:300]


def text_html(source: str) -> tuple[str, str]:
    """(HTML, "") of plain text: a paragraph per block of lines, the lines kept."""
    blocks = re.split(r"\n[ \t]*\n", source.replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs = ("<p>" + "<br>".join(html.escape(line, quote=False) for line in block.split("\n")) + "</p>"
                  for block in blocks if block.strip())
    return "".join(paragraphs), ""


def decode(data: bytes) -> str:
    """Text of a file: UTF-8 (with or without BOM) or UTF-16 with BOM, else Latin-1 (never fails)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
