#!/usr/bin/env bash
# Stop the one-node Slurm cluster that start-cluster.sh started (slurmd, slurmctld,
# munged), each by its pid file; job records and logs stay on disk.
set -euo pipefail

readonly STATE_DIR=/var/spool/cmrbench-slurm
readonly STOP_TIMEOUT_S=15

stop_daemon() {  # stop_daemon NAME PIDFILE
    local name="$1" pidfile="$2" pid deadline
    if [[ ! -s "$pidfile" ]] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "stop-cluster: $name not running"
        return
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid"
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "stop-cluster: $name (pid $pid) still running after ${STOP_TIMEOUT_S} s" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "stop-cluster: stopped $name (pid $pid)"
}

stop_daemon slurmd "$STATE_DIR/slurmd.pid"
stop_daemon slurmctld "$STATE_DIR/slurmctld.pid"
stop_daemon munged /run/munge/munged.pid
