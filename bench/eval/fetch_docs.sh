#!/usr/bin/env bash
# Fetch the PDF manuals used by the retrieval evaluation set (questions.jsonl).
#
# Usage: bench/eval/fetch_docs.sh [OUT_DIR] [SET]   (default: bench/out/eval-docs, prose)
#
# SET is `prose` (questions.jsonl: the Bash and Autoconf manuals) or `reference`
# (reference/questions.jsonl: the Octave, gnuplot, PARI/GP and libpari manuals).
#
# Each document comes from a Debian package: the .deb is downloaded with
# `apt-get download`, only the one PDF is extracted, and its sha256 is checked
# against the value recorded below. A mismatch means the package version in
# the archive changed, and the questions' page numbers may no longer hold.
# Files already present with the right hash are left alone.
set -euo pipefail

OUT_DIR="${1:-bench/out/eval-docs}"
SET="${2:-prose}"

# short-name | package | version seen when the set was made | path in the .deb | sha256 of the PDF
case "$SET" in
  prose) DOCS=(
    "bash|bash-doc|5.2.15-2|./usr/share/doc/bash/bashref.pdf|104971d389c0b9b7a261b0b3070a53b0d8cce6db1ffddefcc8423ddda92acd87"
    "autoconf|autoconf-doc|2.71-3|./usr/share/doc/autoconf/autoconf.pdf.gz|69fb25eabaffeb85f41c7fbbd552df154457c344d5c8288b6c5386124a32f767"
  ) ;;
  reference) DOCS=(
    "octave|octave-doc|7.3.0-2|./usr/share/doc/octave/octave.pdf|ddd24489f87b46fbf99c15cc34aa865ae66775fb7c21927f7f2d6be9470becb8"
    "gnuplot|gnuplot-doc|5.4.4+dfsg1-2|./usr/share/doc/gnuplot/gnuplot.pdf|df68dd0613f043141512fc4436d17aaf96727d5a758d85233915ac5056a97206"
    "pari|pari-doc|2.15.2-1|./usr/share/pari/doc/users.pdf|2dac8aa96a96e6801755203b901a09a1046a02b09f12948b2c0f2018222ee31a"
    "libpari|pari-doc|2.15.2-1|./usr/share/pari/doc/libpari.pdf|5a8ee8eb99dfbdc7f0f61c267b331038df3c647aaafabed97315f4529f0330dc"
  ) ;;
  *) echo "unknown set: $SET (prose or reference)" >&2; exit 2 ;;
esac

sha_of() { sha256sum "$1" | awk '{print $1}'; }

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

updated=0
for entry in "${DOCS[@]}"; do
  IFS='|' read -r name pkg version member sha <<<"$entry"
  dest="$OUT_DIR/$name.pdf"

  if [[ -f "$dest" ]] && [[ "$(sha_of "$dest")" == "$sha" ]]; then
    echo "$dest"
    continue
  fi

  if ! ls "$WORK/${pkg}_"*.deb >/dev/null 2>&1; then
    if ! (cd "$WORK" && apt-get download "$pkg" >&2); then
      if [[ $updated -eq 0 ]]; then
        echo "apt-get download $pkg failed; running apt-get update and retrying" >&2
        apt-get update >&2
        updated=1
      fi
      (cd "$WORK" && apt-get download "$pkg" >&2)
    fi
  fi
  deb="$(ls "$WORK/${pkg}_"*.deb | head -n1)"
  got_version="$(dpkg-deb -f "$deb" Version)"

  tmp="$WORK/$name.extract"
  mkdir -p "$tmp"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "$member"
  src="$tmp/${member#./}"
  if [[ "$src" == *.gz ]]; then
    gzip -dc "$src" > "$WORK/$name.pdf"
  else
    cp "$src" "$WORK/$name.pdf"
  fi

  got_sha="$(sha_of "$WORK/$name.pdf")"
  if [[ "$got_sha" != "$sha" ]]; then
    echo "ERROR: sha256 mismatch for $name.pdf from $pkg $got_version" >&2
    echo "  expected $sha (from $pkg $version)" >&2
    echo "  got      $got_sha" >&2
    echo "  The package version changed; the evaluation set's pages may not match this PDF." >&2
    exit 1
  fi
  mv "$WORK/$name.pdf" "$dest"
  echo "$dest"
done
