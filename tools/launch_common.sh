# Sourced by tools/{dist,slurm}_{train,test}.sh: argument checks (one
# "error: ..." line, exit status 2, before any launch) and the launch.

fail() {
    echo "error: $*" >&2
    exit 2
}

# usage ARGS ENV: the script's usage and environment, exit status 2.
usage() {
    printf 'usage: %s %s\n  env: %s\n' "$0" "$1" "$2" >&2
    exit 2
}

# require_file WHAT PATH: PATH must be an existing file (WHAT: config, ...).
require_file() {
    [ -f "$2" ] || fail "$1 file not found: $2"
}

# require_positive NAME VALUE [MEANING]: VALUE must be an integer >= 1.
require_positive() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
        fail "$1 must be a positive integer${3:+ ($3)}, got '$2'"
    fi
}

# require_non_negative NAME...: each named variable must be an integer >= 0.
require_non_negative() {
    local name
    for name in "$@"; do
        [[ "${!name}" =~ ^[0-9]+$ ]] \
            || fail "$name must be a non-negative integer, got '${!name}'"
    done
}

TORCHRUN_ENV='NNODES (1) NODE_RANK (0) MASTER_ADDR (127.0.0.1) PORT (29500) PYTHON (python)'
SRUN_ENV='GPUS (8) GPUS_PER_NODE (min(GPUS,8)) CPUS_PER_TASK (5) SRUN_ARGS PYTHON (python)'

# launch_torchrun GPUS TOOL [ARGS...]: GPUS processes of tools/TOOL here.
launch_torchrun() {
    local gpus=$1 tool=$2
    shift 2
    NNODES=${NNODES:-1}
    NODE_RANK=${NODE_RANK:-0}
    PORT=${PORT:-29500}
    MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
    require_positive GPUS "$gpus" 'processes on this machine'
    require_non_negative NNODES NODE_RANK PORT
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    exec "${PYTHON:-python}" -m torch.distributed.run \
        --nnodes="$NNODES" \
        --node_rank="$NODE_RANK" \
        --master_addr="$MASTER_ADDR" \
        --nproc_per_node="$gpus" \
        --master_port="$PORT" \
        "$ROOT/tools/$tool" "$@"
}

# launch_srun PARTITION JOB_NAME TOOL [ARGS...]: tools/TOOL as GPUS tasks.
launch_srun() {
    local partition=$1 job_name=$2 tool=$3
    shift 3
    GPUS=${GPUS:-8}
    require_positive GPUS "$GPUS" 'total GPUs'
    GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 8 ? GPUS : 8 ))}
    require_positive GPUS_PER_NODE "$GPUS_PER_NODE"
    command -v srun > /dev/null 2>&1 || fail "srun not found: \
slurm_${tool%.py}.sh needs a Slurm cluster; use tools/dist_${tool%.py}.sh elsewhere"
    # SRUN_ARGS is split into words on purpose (several srun options).
    # shellcheck disable=SC2086
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    exec srun -p "$partition" \
        --job-name="$job_name" \
        --gres=gpu:"$GPUS_PER_NODE" \
        --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "${PYTHON:-python}" -u "$ROOT/tools/$tool" "$@"
}
