#!/usr/bin/env bash
# Start a one-node Slurm cluster on localhost (munged, slurmctld, slurmd) for CI and
# for the tests marked `slurm`. Idempotent: does nothing when the node already answers.
# Needs root and the Debian packages (installed by .ci/run, never by this script):
#   apt-get install -y --no-install-recommends slurm-wlm munge
set -euo pipefail

readonly TEMPLATE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/slurm.conf.in"
readonly SLURM_CONF=/etc/slurm/slurm.conf
readonly MUNGE_KEY=/etc/munge/munge.key
readonly STATE_DIR=/var/spool/cmrbench-slurm
readonly LOG_DIR=/var/log/cmrbench-slurm
readonly MUNGE_LOG=/var/log/munge/munged.log
readonly START_TIMEOUT_S="${CMRBENCH_SLURM_START_TIMEOUT:-60}"
readonly MARKER="# Rendered by cmrbench .ci/slurm/start-cluster.sh"
readonly HOST="$(hostname -s)"

die() { echo "start-cluster: $*" >&2; exit 1; }

node_state() {
    timeout 3 sinfo --noheader --nodes="$HOST" --format=%T 2>/dev/null | head -n1 || true
}

node_is_up() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

pid_alive() {  # pid_alive PIDFILE
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

summary() {  # summary HOW_IT_CAME_UP
    local cpus mem
    cpus="$(sinfo --noheader --nodes="$HOST" --format=%c | head -n1)"
    mem="$(sinfo --noheader --nodes="$HOST" --format=%m | head -n1)"
    echo "Slurm cluster $1: node $HOST ($(node_state)), $cpus CPUs, $mem MB," \
        "partition debug, conf $SLURM_CONF, logs $LOG_DIR/{slurmctld,slurmd}.log and $MUNGE_LOG"
}

check_binaries() {
    local missing=() tool
    for tool in munged munge unmunge slurmctld slurmd sinfo sbatch scontrol srun squeue; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing ${missing[*]}; install them first with:" \
            "apt-get install -y --no-install-recommends slurm-wlm munge"
    fi
    [[ "$(id -u)" == 0 ]] || die "must run as root (the daemons run as root in this cluster)"
}

ensure_munge_key() {
    if [[ ! -s "$MUNGE_KEY" ]]; then
        install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
        mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0400 "$MUNGE_KEY"
}

render_slurm_conf() {
    local cpus mem_total_mb margin_mb real_mb rendered
    cpus="$(nproc)"
    mem_total_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    # slurmd drains a node that reports less memory than RealMemory; keep a margin.
    margin_mb=$(( mem_total_mb / 10 > 1024 ? mem_total_mb / 10 : 1024 ))
    real_mb=$(( mem_total_mb - margin_mb ))
    ((real_mb > 0)) || die "MemTotal ${mem_total_mb} MB in /proc/meminfo leaves no memory for jobs"
    if [[ -e "$SLURM_CONF" ]] && ! head -n1 "$SLURM_CONF" | grep -qF "$MARKER"; then
        die "$SLURM_CONF exists and was not written by this script; refusing to overwrite it"
    fi
    rendered="$(sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@REAL_MEMORY_MB@|$real_mb|g" -e "s|@DEF_MEM_PER_CPU_MB@|$(( real_mb / cpus ))|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" "$TEMPLATE")"
    install -d -m 0755 "$(dirname "$SLURM_CONF")"
    printf '%s\n' "$rendered" > "$SLURM_CONF"
}

start_munged() {
    if echo | munge 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- munged
}

start_slurm_daemons() {
    install -d -m 0755 "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR"
    pid_alive "$STATE_DIR/slurmctld.pid" || slurmctld
    pid_alive "$STATE_DIR/slurmd.pid" || slurmd -N "$HOST"
}

show_logs_and_die() {
    echo "start-cluster: node $HOST not idle after ${START_TIMEOUT_S} s" \
        "(state: '$(node_state)')" >&2
    local log
    for log in "$MUNGE_LOG" "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
        echo "----- last 30 lines of $log -----" >&2
        tail -n 30 "$log" >&2 2>/dev/null || echo "(missing)" >&2
    done
    exit 1
}

wait_for_idle_node() {
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until node_is_up; do
        ((SECONDS < deadline)) || show_logs_and_die
        sleep 0.5
    done
}

main() {
    check_binaries
    if node_is_up; then
        summary "already running"
        return
    fi
    local started=$EPOCHREALTIME
    ensure_munge_key
    render_slurm_conf
    start_munged
    start_slurm_daemons
    wait_for_idle_node
    summary "up in $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s"
}

main "$@"
