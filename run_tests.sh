#!/usr/bin/env bash
# The test suite: same .venv as run_all.sh plus requirements-test.txt. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
