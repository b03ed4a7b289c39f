#!/bin/sh
# secondsight quarto stand-in: `make install` copies it to .venv/bin/quarto. nbdev_docs and nbdev_preview look for Quarto
# with shutil.which('quarto') and, finding none, run nbdev's installer: `sudo dpkg -i` of a downloaded Quarto, then
# `pip install -e .[dev]` into this venv (nbdev 2.4.14, nbdev/quarto.py: _ensure_quarto). Finding this instead, they go
# on to their first `quarto render`, which lands here: a real Quarto further on PATH runs; else one line, exit status 1.
self=$(readlink -f "$0")
IFS=:
for d in $PATH; do
  q="$d/quarto"
  [ -x "$q" ] && [ ! -d "$q" ] && [ "$(readlink -f "$q")" != "$self" ] && ! grep -qs 'secondsight quarto stand-in' "$q" && exec "$q" "$@"
done
echo "quarto: Quarto is not installed, so nbdev_docs cannot build the site here (it installed nothing); \`make docs\` builds the offline site in _site/ without Quarto" >&2
exit 1
