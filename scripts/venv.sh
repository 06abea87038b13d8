# Sourced by ./demo and ./test: make sure .venv exists (python3 -m venv) and holds this project with the extras
# given in $1, installing again only when pyproject.toml changed since the last install of those extras.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="$root/.venv"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "otel-resilience needs Python >= 3.10; '$python' is $("$python" --version 2>&1 || echo missing)." >&2
  echo "Set PYTHON=/path/to/python3.10+ and run again." >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "Creating $venv ..." >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
stamp="$venv/.installed-$(echo "$1" | tr -c 'a-z0-9\n' '_')"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "Installing otel-resilience $1 into $venv ..." >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root$1" "${@:2}"
  touch "$stamp"
fi
