# Argument checks shared by tools/{dist,slurm}_{train,test}.sh, which source
# this file (it is not run on its own). Every failed check prints one
# "error: ..." line and exits with status 2, before anything is launched.

fail() {
    echo "error: $*" >&2
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

# require_srun SCRIPT ALTERNATIVE: Slurm's srun must be on PATH.
require_srun() {
    command -v srun > /dev/null 2>&1 \
        || fail "srun not found: $1 needs a Slurm cluster; use $2 elsewhere"
}
