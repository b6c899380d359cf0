# The set-up both make-verify scripts share, sourced right after their `set -euo pipefail`:
#
#   source "$(dirname "$0")/common.sh"
#
# HERE (this folder), ROOT (the repository), CAPSIM_CACHE (exported; default ~/.cache/capsim),
# LLM_CORES (default 1) and SEARCH_CORES (default 0); Ctrl-C exits 130 and TERM 143, through the
# script's own EXIT trap.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
export CAPSIM_CACHE="${CAPSIM_CACHE:-$HOME/.cache/capsim}"
LLM_CORES="${LLM_CORES:-1}"
SEARCH_CORES="${SEARCH_CORES:-0}"
trap 'exit 130' INT
trap 'exit 143' TERM
