"""Office documents (DOCX, PPTX, XLSX, ODT, ODP, ODS) into PDF with LibreOffice, headless, bounded.

Each conversion gets a fresh, private LibreOffice profile (so conversions never share state or
lock each other out) that forbids macros and links to untrusted places, runs in its own process
group under a time limit, and is killed whole when the limit passes.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from .bounded import run_bounded
from .errors import FormatError
from .kinds import Format

log = logging.getLogger(__name__)

# The Debian packages that provide `soffice` without a desktop (headless conversion only).
DEBIAN_PACKAGES = "libreoffice-writer-nogui libreoffice-impress-nogui libreoffice-calc-nogui"
INSTALL_HINT = f"apt-get install {DEBIAN_PACKAGES}"
# The profile's settings: no macros whatever the document asks, no fetching from untrusted places.
_REGISTRY = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
</oor:items>
"""


def soffice() -> str | None:
    """Path of LibreOffice's `soffice` (SOFFICE names another), or None when it is not installed."""
    named = os.environ.get("SOFFICE", "").strip()
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    return shutil.which("soffice") or shutil.which("libreoffice")


def missing_message(fmt: Format) -> str:
    """What a person reads when an Office file arrives and LibreOffice is not installed."""
    return (f"{fmt.label} files are converted to pages with LibreOffice, which is not installed here; "
            f"install it ({INSTALL_HINT}) and upload the file again.")


def office_pdf(data: bytes, fmt: Format, timeout: float) -> bytes:
    """The PDF LibreOffice makes of an Office file; FormatError when it is missing, fails or overruns."""
    exe = soffice()
    if exe is None:
        raise FormatError("no_converter", missing_message(fmt))
    with tempfile.TemporaryDirectory(prefix="docenrich-office-") as tmp:
        folder = Path(tmp)
        source = folder / f"document.{fmt.kind}"
        source.write_bytes(data)
        (folder / "profile" / "user").mkdir(parents=True)
        (folder / "profile" / "user" / "registrymodifications.xcu").write_text(_REGISTRY, encoding="utf-8")
        out = folder / "out"
        command = [exe, "--headless", "--invisible", "--norestore", "--nolockcheck", "--nodefault", "--nologo",
                   f"-env:UserInstallation={(folder / 'profile').as_uri()}",
                   "--convert-to", "pdf", "--outdir", str(out), str(source)]
        # HOME too: LibreOffice writes beside the profile otherwise.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "TMPDIR": tmp,
               "LANG": "C.UTF-8", "SAL_USE_VCLPLUGIN": "svp"}
        returncode, output = run_bounded(command, timeout, env=env, cwd=tmp, what=f"Converting this {fmt.label} file")
        result = out / "document.pdf"
        if not result.is_file() or result.stat().st_size == 0:
            log.warning("LibreOffice made no PDF of a %s file (exit %s): %s", fmt.kind, returncode, output[-500:])
            raise FormatError("failed", f"LibreOffice could not convert this {fmt.label} file; it may be damaged.")
        return result.read_bytes()
