#!/usr/bin/env bash
# The whole pipeline on the bundled real sample (or --data-dir DIR): data -> folds -> models ->
# CV leaderboard -> submissions. Options: --data-dir DIR, --config configs/<preset>.yaml,
# --run NAME, --set section.key=value (repeatable), --force.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m esci.pipeline "$@"
