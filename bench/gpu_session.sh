#!/usr/bin/env bash
# The GPU measurements still to take, as one command that fits a lent device session.
#
#   bash bench/gpu_session.sh OUT_DIR           # on a GPU machine, repository root (device tool: OUT_DIR=$OUT)
#   bash bench/gpu_session.sh OUT_DIR --tiny    # the same steps at tiny shapes on CPU (tests/test_gpu_session.py)
#
# 1. bench/bench_gpu_memory.py (issue 11): weight streaming at real A14B / TI2V-5B shapes, random
#    weights, cards of 8 / 12 / 16 / 24 GB and resident; peak allocated memory, s / step, and each
#    streamed output compared bit for bit with the resident one (the CUDA link's waits on real streams).
# 2. bench/gpu_suite.py (issue 15): one CFG step per attention kernel, compile and fp8 row; with
#    ComfyUI's WanModel as the peer when WAN22DUO_COMFYUI names a ComfyUI checkout inside the tree
#    (the device copies the repository only: carry a copy, e.g. .gpu/ComfyUI).
#
# Each part has its own time limit (PART1_S, PART2_S; defaults 300 s and 230 s, with gpu_suite told to
# start no row after 200 s), so the whole stays under the device tool's 10 minutes a command. Outputs:
# OUT_DIR/env.txt, gpu_memory.md, gpu_memory.log, gpu_suite.md, gpu_suite.log. The exit status is 0
# only if every part finished.
set -u
out=${1:?usage: bash bench/gpu_session.sh OUT_DIR [--tiny]}
mode=${2:-}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

"$py" -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', c,
torch.cuda.get_device_name(0) if c else '-')" > "$out/env.txt" 2>&1 || status=1
cat "$out/env.txt"

if [ "$mode" = "--tiny" ]; then
    memory_args=(--tiny)
    suite_args=(--size tiny --no-compile)
else
    memory_args=()
    suite_args=(--budget 200)
fi
if [ -n "${WAN22DUO_COMFYUI:-}" ]; then
    suite_args+=(--comfyui "$WAN22DUO_COMFYUI")
fi

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to OUT_DIR/NAME.log, say how it ended
    local name=$1 limit=$2 rc=0
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1 || rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/env.txt"
    tail -n 25 "$out/$name.log"
    [ "$rc" -eq 0 ] || status=1
}

part gpu_memory "${PART1_S:-300}" "$py" bench/bench_gpu_memory.py "${memory_args[@]}" --out "$out/gpu_memory.md"
part gpu_suite "${PART2_S:-230}" "$py" bench/gpu_suite.py "${suite_args[@]}" --write "$out/gpu_suite.md"
exit $status
