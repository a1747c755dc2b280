# Sourced by tools/{dist,slurm}_{train,test}.sh: argument checks (one
# "error: ..." line, exit status 2, before any launch) and the launch.
TORCHRUN_ENV='NNODES (1) NODE_RANK (0) MASTER_ADDR (127.0.0.1) PORT (29500) PYTHON (python)'
SRUN_ENV='GPUS (8) GPUS_PER_NODE (min(GPUS,8)) CPUS_PER_TASK (5) SRUN_ARGS PYTHON (python)'
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

fail() { echo "error: $*" >&2; exit 2; }

# usage ARGS ENV: the script's usage and environment, exit status 2.
usage() { printf 'usage: %s %s\n  env: %s\n' "$0" "$1" "$2" >&2; exit 2; }

# require_file WHAT PATH: PATH must be an existing file (WHAT: config, ...).
require_file() { [ -f "$2" ] || fail "$1 file not found: $2"; }

# require_count NAME VALUE MIN [MEANING]: VALUE must be an integer >= MIN
# (MIN 0 or 1).
require_count() {
    [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] && return
    [ "$3" = 0 ] && fail "$1 must be a non-negative integer, got '$2'"
    fail "$1 must be a positive integer${4:+ ($4)}, got '$2'"
}

# launch_torchrun GPUS TOOL [ARGS...]: GPUS processes of tools/TOOL here.
launch_torchrun() {
    local gpus=$1 tool=$2
    shift 2
    require_count GPUS "$gpus" 1 'processes on this machine'
    require_count NNODES "${NNODES:=1}" 0
    require_count NODE_RANK "${NODE_RANK:=0}" 0
    require_count PORT "${PORT:=29500}" 0
    exec "${PYTHON:-python}" -m torch.distributed.run --nnodes="$NNODES" \
        --node_rank="$NODE_RANK" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" --master_port="$PORT" \
        "$ROOT/tools/$tool" "$@"
}

# launch_srun PARTITION JOB_NAME TOOL [ARGS...]: tools/TOOL as GPUS tasks.
launch_srun() {
    local partition=$1 job_name=$2 tool=$3
    shift 3
    require_count GPUS "${GPUS:=8}" 1 'total GPUs'
    require_count GPUS_PER_NODE "${GPUS_PER_NODE:=$((GPUS < 8 ? GPUS : 8))}" 1
    command -v srun > /dev/null 2>&1 || fail "srun not found: \
slurm_${tool%.py}.sh needs a Slurm cluster; use tools/dist_${tool%.py}.sh elsewhere"
    # SRUN_ARGS is split into words on purpose (several srun options).
    # shellcheck disable=SC2086
    exec srun -p "$partition" --job-name="$job_name" \
        --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} "${PYTHON:-python}" -u "$ROOT/tools/$tool" "$@"
}
