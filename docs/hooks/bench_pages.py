"""MkDocs hook: the benchmark results in bench/ become pages of the site under bench/.

The pages link to them as `../bench/NAME.md`, which is right when the Markdown is read in the
repository; in the site those links are pointed at the copies under `bench/`.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
BENCH_LINK = re.compile(r"\]\(\.\./bench/")


def on_files(files, config):
    for path in sorted((ROOT / "bench").iterdir()):
        if path.suffix in (".md", ".png") and path.is_file():
            files.append(File(f"bench/{path.name}", src_dir=str(ROOT),
                              dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri.startswith("bench/"):
        return markdown
    return BENCH_LINK.sub("](bench/", markdown)
