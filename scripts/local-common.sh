# Sourced by scripts/*-local.sh: the pieces their `stop` verb shares. Needs their log().

# Whether process $1 runs (a zombie, exited but not yet reaped, does not).
alive() {
    [[ -r /proc/$1/stat ]] && [[ $(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]
}

# The pid in file $1 if that process runs and its command line contains $2, so that a
# pid file left behind, its number since reused by another process, names nothing.
running_pid() {
    local pid
    [[ -f $1 ]] && pid=$(<"$1") && [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    echo "$pid"
}

# Stop process $1: SIGTERM, SIGKILL if it still runs after $2 seconds; returns once it is gone.
stop_pid() {
    local pid=$1 grace=${2:-30} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid ${pid} still runs ${grace} s after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid ${pid} survived SIGKILL"
    return 1
}
