#!/usr/bin/env bash
# Stop the Slurm daemons that scripts/slurm/up.sh started, and nothing else.
#
# up.sh records each daemon it starts in $SKYBATCH_SLURM_DIR/started/<name> as
# "<pid> <start time> <executable>"; a daemon is only signalled while that pid is
# still the same process (same start time and program). Daemons up.sh did not
# start are left alone. Config (/etc/slurm), Slurm's saved state and logs stay,
# so a later up.sh resumes with the same jobs. Idempotent.
#
# Usage: down.sh [daemon...]   (default: slurmd slurmctld slurmdbd munged)
set -euo pipefail

STATE_DIR=${SKYBATCH_SLURM_DIR:-/var/lib/skybatch-slurm}
STOP_TIMEOUT=${SKYBATCH_SLURM_STOP_TIMEOUT:-30}

log() { printf 'slurm-down: %s\n' "$*"; }
die() { printf 'slurm-down: ERROR: %s\n' "$*" >&2; exit 1; }

daemons=("$@")
((${#daemons[@]})) || daemons=(slurmd slurmctld slurmdbd munged)
for d in "${daemons[@]}"; do
	case $d in slurmd | slurmctld | slurmdbd | munged) ;; *) die "unknown daemon '$d' (slurmd, slurmctld, slurmdbd, munged)" ;; esac
done

[[ $EUID -eq 0 ]] || die "must run as root"
if [[ ! -d $STATE_DIR/started ]]; then
	log "nothing recorded in $STATE_DIR/started: up.sh started nothing here"
	exit 0
fi

# up.sh holds the lock already when it calls us to restart daemons.
if [[ -z ${SKYBATCH_SLURM_LOCK_HELD:-} ]]; then
	exec 9>"$STATE_DIR/lock"
	flock -w 120 9 || die "another scripts/slurm/up.sh or down.sh holds $STATE_DIR/lock"
fi

# "<start time> <executable>" of a live (non-zombie) process; fails otherwise.
proc_identity() {
	local pid=$1 stat exe fields
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	read -ra fields <<<"${stat##*) }" # fields[0] is the state, fields[19] the start time
	[[ ${fields[0]} != Z ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	printf '%s %s\n' "${fields[19]}" "${exe% (deleted)}"
}

# Live (non-zombie) processes named <name>, whoever started them.
live_pids() {
	local pid
	for pid in $(pgrep -x "$1"); do
		if proc_identity "$pid" >/dev/null; then echo "$pid"; fi
	done
}

same_process() { [[ $(proc_identity "$1" 2>/dev/null) == "$2" ]]; }

stop() {
	local name=$1 record=$STATE_DIR/started/$1 pid start exe deadline
	if [[ ! -f $record ]]; then
		if [[ -n $(live_pids "$name") ]]; then
			log "$name runs but was not started by up.sh: left alone"
		else
			log "$name: not running"
		fi
		return 0
	fi
	read -r pid start exe <"$record" || true
	if [[ -z ${pid:-} ]] || ! same_process "$pid" "$start $exe"; then
		log "$name (pid ${pid:-?}) already exited"
		rm -f "$record"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + STOP_TIMEOUT))
	while same_process "$pid" "$start $exe" && ((SECONDS < deadline)); do
		sleep 0.1
	done
	if same_process "$pid" "$start $exe"; then
		log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.5
	fi
	rm -f "$record"
	log "stopped $name (pid $pid)"
}

for d in slurmd slurmctld slurmdbd munged; do
	for wanted in "${daemons[@]}"; do
		if [[ $d == "$wanted" ]]; then stop "$d"; fi
	done
done

# Job steps outlive slurmd; they finish on their own and are reconciled by the next up.sh.
steps=$(live_pids slurmstepd | wc -l)
if ((steps > 0)); then
	log "note: $steps slurmstepd process(es) still run (jobs in flight); left alone"
fi
