#!/usr/bin/env bash
# Install (if needed) and start a single-node Slurm cluster on this machine:
# munged, slurmdbd (only when MariaDB answers on 127.0.0.1:3306), slurmctld, slurmd.
#
# Debian 12, run as root, no systemd needed: the daemons are started directly.
# Idempotent: when everything already runs it only reports. What it starts is
# recorded in $SKYBATCH_SLURM_DIR/started/ (pid, start time, executable) so that
# scripts/slurm/down.sh stops exactly those processes and nothing else.
#
# Environment:
#   SKYBATCH_SLURM_DIR      state, spool, log and pid files  [/var/lib/skybatch-slurm]
#   SKYBATCH_SLURM_DBD      auto | yes | no: run slurmdbd (auto: when MariaDB answers)  [auto]
#   SKYBATCH_SLURM_CGROUP   auto | no: confine jobs with cgroup v1 (no: OverMemoryKill)  [auto]
#   SKYBATCH_SLURM_TIMEOUT  seconds to wait for each daemon and for the node  [60]
#
# Config goes to /etc/slurm/ (so plain sbatch/squeue find it); files there are only
# written when absent or when their first line is our marker.
set -euo pipefail

STATE_DIR=${SKYBATCH_SLURM_DIR:-/var/lib/skybatch-slurm}
DBD_MODE=${SKYBATCH_SLURM_DBD:-auto}
CGROUP_MODE=${SKYBATCH_SLURM_CGROUP:-auto}
TIMEOUT=${SKYBATCH_SLURM_TIMEOUT:-60}

MARKER='# managed by skybatch scripts/slurm/up.sh'
CONF_DIR=/etc/slurm
CLUSTER=skybatch
DB_NAME=skybatch_slurm_acct
DB_HOST=127.0.0.1
DB_PORT=3306
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (it installs packages and starts daemons as root)"
case $DBD_MODE in auto | yes | no) ;; *) die "SKYBATCH_SLURM_DBD must be auto, yes or no (got '$DBD_MODE')" ;; esac
case $CGROUP_MODE in auto | no) ;; *) die "SKYBATCH_SLURM_CGROUP must be auto or no (got '$CGROUP_MODE')" ;; esac

mkdir -p "$STATE_DIR"/{ctld,slurmd,run,log,started}
chmod 755 "$STATE_DIR"

# One up.sh/down.sh at a time; down.sh (called below to restart) reuses our lock.
# Daemons are started with fd 9 closed so that they do not inherit the lock.
exec 9>"$STATE_DIR/lock"
flock -w "$TIMEOUT" 9 || die "another scripts/slurm/up.sh or down.sh holds $STATE_DIR/lock"
export SKYBATCH_SLURM_LOCK_HELD=1

STARTED=()

# --- process records ------------------------------------------------------------

# "<start time> <executable>" of a live (non-zombie) process; fails otherwise.
proc_identity() {
	local pid=$1 stat exe fields
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	read -ra fields <<<"${stat##*) }" # fields[0] is the state, fields[19] the start time
	[[ ${fields[0]} != Z ]] || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
	printf '%s %s\n' "${fields[19]}" "${exe% (deleted)}"
}

# Pid of the daemon <name> if up.sh started it and it still runs; fails otherwise.
recorded_pid() {
	local record=$STATE_DIR/started/$1 pid start exe
	[[ -f $record ]] || return 1
	read -r pid start exe <"$record" || return 1
	[[ $(proc_identity "$pid" 2>/dev/null) == "$start $exe" ]] || return 1
	echo "$pid"
}

# Live (non-zombie) processes named <name>, whoever started them.
live_pids() {
	local pid
	for pid in $(pgrep -x "$1"); do
		if proc_identity "$pid" >/dev/null; then echo "$pid"; fi
	done
}

record_started() { # name pid
	local identity
	identity=$(proc_identity "$2") || die "$1 (pid $2) exited right after starting; see $STATE_DIR/log/"
	echo "$2 $identity" >"$STATE_DIR/started/$1"
	STARTED+=("$1 (pid $2)")
}

# Pid from a daemon's pid file once the process it names runs <exe>.
wait_for_pidfile() { # pidfile exe
	local deadline=$((SECONDS + TIMEOUT)) pid identity
	while ((SECONDS < deadline)); do
		if pid=$(cat "$1" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] &&
			identity=$(proc_identity "$pid") && [[ ${identity#* } == "$2" ]]; then
			echo "$pid"
			return 0
		fi
		sleep 0.1
	done
	return 1
}

show_log() {
	local f
	for f in "$@"; do
		[[ -s $f ]] || continue
		echo "---- last lines of $f" >&2
		tail -n 20 "$f" >&2
	done
}

# --- packages -------------------------------------------------------------------

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == *" ok installed" ]]; }

mariadb_answers() {
	timeout 3 bash -c "exec 3<>/dev/tcp/$DB_HOST/$DB_PORT" 2>/dev/null || return 1
	if command -v mysql >/dev/null; then
		mysql --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u root --connect-timeout=3 -e 'SELECT 1' >/dev/null 2>&1 || return 1
	fi
}

USE_DBD=no
case $DBD_MODE in
yes) USE_DBD=yes ;;
auto) if mariadb_answers; then USE_DBD=yes; fi ;;
esac
if [[ $DBD_MODE == yes ]] && ! mariadb_answers; then
	die "SKYBATCH_SLURM_DBD=yes but MariaDB does not answer on $DB_HOST:$DB_PORT as root without password"
fi

packages=(slurm-wlm munge)
[[ $USE_DBD == yes ]] && packages+=(slurmdbd)
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	# Keep the packages' init scripts from starting daemons (we start our own):
	# a temporary policy-rc.d, unless the machine already has one.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt-get update -q >"$STATE_DIR/log/apt.log" 2>&1 || { show_log "$STATE_DIR/log/apt.log"; die "apt-get update failed"; }
	apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE_DIR/log/apt.log" 2>&1 ||
		{ show_log "$STATE_DIR/log/apt.log"; die "apt-get install ${missing[*]} failed"; }
fi

# --- configuration --------------------------------------------------------------

HOST=$(hostname)
NODE=$(hostname -s)
CPUS=$(nproc)
mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
margin=$((mem_mb / 20 > 256 ? mem_mb / 20 : 256)) # 5%, at least 256 MB, for the OS and the daemons
REAL_MEMORY=$((mem_mb - margin))
DEF_MEM_PER_CPU=$((REAL_MEMORY / CPUS)) # jobs without --mem get their share, not the whole node

# cgroup v1 (memory + freezer + cpuset mounted and writable) confines jobs and lets
# Slurm report OUT_OF_MEMORY. Without it jobacct_gather kills jobs over their --mem.
cgroup_v1_works() {
	local c probe
	for c in memory freezer cpuset; do
		[[ $(stat -f -c %T "/sys/fs/cgroup/$c" 2>/dev/null) == cgroupfs ]] || return 1
	done
	probe=/sys/fs/cgroup/memory/skybatch-slurm-probe.$$
	mkdir "$probe" 2>/dev/null || return 1
	rmdir "$probe"
}
USE_CGROUP=no
if [[ $CGROUP_MODE == auto ]] && cgroup_v1_works; then USE_CGROUP=yes; fi
SWAP_LIMIT=no
[[ -e /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes ]] && SWAP_LIMIT=yes

slurm_conf() {
	cat <<EOF
$MARKER
# Single-node Slurm for skybatch development and CI. up.sh rewrites this file
# on every run; edit the script, not this file.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none

# Scheduling: no batching delays. (slurmctld still starts jobs from its once-a-second
# main scheduler or backfill pass, so a job pends 0-1 s before it runs.)
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
PriorityType=priority/basic
DependencyParameters=kill_invalid_depend
MaxJobCount=100000
MaxArraySize=100001
# Keep finished jobs visible to squeue -t all / scontrol show job for 5 minutes.
MinJobAge=300
# An epilog makes slurmd report the job end immediately.
Epilog=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=2
OverTimeLimit=0

EOF
	if [[ $USE_CGROUP == yes ]]; then
		cat <<EOF
# Jobs run in cgroup v1 (see cgroup.conf): --mem is a hard limit, OUT_OF_MEMORY on excess.
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
JobAcctGatherType=jobacct_gather/cgroup
JobAcctGatherFrequency=task=1
EOF
	else
		cat <<EOF
# No usable cgroup v1: jobacct_gather polls every second and kills jobs over --mem.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
EOF
	fi
	if [[ $USE_DBD == yes ]]; then
		cat <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
EOF
	else
		echo "AccountingStorageType=accounting_storage/none"
	fi
	cat <<EOF
JobCompType=jobcomp/none

NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$HOST CPUs=$CPUS RealMemory=$REAL_MEMORY State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

cgroup_conf() {
	cat <<EOF
$MARKER
CgroupPlugin=cgroup/v1
CgroupAutomount=yes
ConstrainCores=yes
ConstrainRAMSpace=yes
AllowedRAMSpace=100
EOF
	if [[ $SWAP_LIMIT == yes ]]; then
		printf 'ConstrainSwapSpace=yes\nAllowedSwapSpace=0\n'
	else
		echo "# no memory.memsw.* files (swap accounting off): swap is not constrained"
	fi
}

slurmdbd_conf() {
	cat <<EOF
$MARKER
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
AuthType=auth/munge
PidFile=$STATE_DIR/run/slurmdbd.pid
LogFile=$STATE_DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=$DB_HOST
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=$DB_NAME
EOF
}

conf_files=("$CONF_DIR/slurm.conf")
[[ $USE_CGROUP == yes ]] && conf_files+=("$CONF_DIR/cgroup.conf")
[[ $USE_DBD == yes ]] && conf_files+=("$CONF_DIR/slurmdbd.conf")
for f in "${conf_files[@]}"; do
	if [[ -e $f && $(head -n 1 "$f") != "$MARKER" ]]; then
		die "$f exists and was not written by this script (its first line is not '$MARKER'); move it away to let up.sh manage Slurm's config"
	fi
done

CHANGED=()
write_conf() { # path mode generator
	local tmp
	tmp=$(mktemp)
	"$3" >"$tmp"
	if [[ -e $1 ]] && cmp -s "$tmp" "$1"; then
		rm -f "$tmp"
		return 0
	fi
	mkdir -p "$(dirname "$1")"
	install -m "$2" -o root -g root "$tmp" "$1"
	rm -f "$tmp"
	CHANGED+=("$1")
}
write_conf "$CONF_DIR/slurm.conf" 644 slurm_conf
[[ $USE_CGROUP == yes ]] && write_conf "$CONF_DIR/cgroup.conf" 644 cgroup_conf
[[ $USE_DBD == yes ]] && write_conf "$CONF_DIR/slurmdbd.conf" 600 slurmdbd_conf
((${#CHANGED[@]})) && log "wrote ${CHANGED[*]}"

# Daemons we started earlier read the old config: restart them. (Daemons we did
# not start are left alone; they may need a restart by whoever started them.)
if ((${#CHANGED[@]})); then
	affected=" "
	for f in "${CHANGED[@]}"; do
		case $f in
		*/slurmdbd.conf) affected+="slurmdbd " ;;
		*) affected+="slurmd slurmctld " ;; # slurm.conf, cgroup.conf
		esac
	done
	restart=()
	for d in slurmd slurmctld slurmdbd; do
		[[ $affected == *" $d "* ]] || continue
		if recorded_pid "$d" >/dev/null; then
			restart+=("$d")
		elif [[ -n $(live_pids "$d") ]]; then
			log "note: $d runs but was not started by up.sh; it keeps its old config until whoever started it restarts it"
		fi
	done
	if ((${#restart[@]})); then
		log "config changed: restarting ${restart[*]}"
		"$SCRIPT_DIR/down.sh" "${restart[@]}"
	fi
fi

# --- munged ---------------------------------------------------------------------

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
	local pid
	if pid=$(recorded_pid munged); then
		log "munged already running (pid $pid, started by up.sh)"
		return 0
	fi
	if munge_answers; then
		log "munged already running (not started by up.sh; left alone)"
		return 0
	fi
	if [[ ! -s $MUNGE_KEY ]]; then
		log "creating $MUNGE_KEY"
		mkdir -p "$(dirname "$MUNGE_KEY")"
		dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
	fi
	chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
	chmod 700 "$(dirname "$MUNGE_KEY")"
	chmod 400 "$MUNGE_KEY"
	install -d -o munge -g munge -m 755 "$MUNGE_RUN"
	install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
	rm -f "$MUNGE_RUN/munged.pid"
	runuser -u munge -- /usr/sbin/munged --num-threads=10 --force </dev/null >>"$STATE_DIR/log/munged.stdout" 2>&1 9>&- ||
		{ show_log "$STATE_DIR/log/munged.stdout" /var/log/munge/munged.log; die "munged failed to start"; }
	pid=$(wait_for_pidfile "$MUNGE_RUN/munged.pid" "$(readlink -f /usr/sbin/munged)") ||
		{ show_log /var/log/munge/munged.log; die "munged did not write $MUNGE_RUN/munged.pid"; }
	munge_answers || { show_log /var/log/munge/munged.log; die "munged runs (pid $pid) but munge -n | unmunge fails"; }
	record_started munged "$pid"
}

# --- slurm daemons --------------------------------------------------------------

start_daemon() { # name pidfile command...
	local name=$1 pidfile=$2 pid
	shift 2
	if pid=$(recorded_pid "$name"); then
		log "$name already running (pid $pid, started by up.sh)"
		return 0
	fi
	pid=$(live_pids "$name" | head -n 1)
	if [[ -n $pid ]]; then
		log "$name already running (pid $pid, not started by up.sh; left alone)"
		return 0
	fi
	rm -f "$pidfile"
	"$@" </dev/null >>"$STATE_DIR/log/$name.stdout" 2>&1 9>&- ||
		{ show_log "$STATE_DIR/log/$name.stdout" "$STATE_DIR/log/$name.log"; die "$name failed to start"; }
	pid=$(wait_for_pidfile "$pidfile" "$(readlink -f "$1")") ||
		{ show_log "$STATE_DIR/log/$name.stdout" "$STATE_DIR/log/$name.log"; die "$name did not come up (no live pid in $pidfile after ${TIMEOUT}s)"; }
	record_started "$name" "$pid"
}

wait_until() { # description command...
	local what=$1 deadline=$((SECONDS + TIMEOUT))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
	log "$what"
}

dbd_answers() { sacctmgr -n -P list cluster format=cluster; }
ctld_answers() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }

start_munged

if [[ $USE_DBD == yes ]]; then
	start_daemon slurmdbd "$STATE_DIR/run/slurmdbd.pid" /usr/sbin/slurmdbd
	wait_until "slurmdbd answers (MariaDB $DB_HOST:$DB_PORT, database $DB_NAME)" dbd_answers ||
		{ show_log "$STATE_DIR/log/slurmdbd.log"; die "slurmdbd does not answer sacctmgr after ${TIMEOUT}s"; }
	if ! grep -qx "$CLUSTER" <<<"$(dbd_answers)"; then
		sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
		log "registered cluster $CLUSTER in the accounting database"
	fi
else
	log "MariaDB does not answer on $DB_HOST:$DB_PORT (or SKYBATCH_SLURM_DBD=no): running without slurmdbd, so no sacct"
	if recorded_pid slurmdbd >/dev/null; then "$SCRIPT_DIR/down.sh" slurmdbd; fi
fi

start_daemon slurmctld "$STATE_DIR/run/slurmctld.pid" /usr/sbin/slurmctld
wait_until "slurmctld answers scontrol ping" ctld_answers ||
	{ show_log "$STATE_DIR/log/slurmctld.log"; die "slurmctld does not answer scontrol ping after ${TIMEOUT}s"; }

start_daemon slurmd "$STATE_DIR/run/slurmd.pid" /usr/sbin/slurmd

# --- wait for the node ----------------------------------------------------------

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }
deadline=$((SECONDS + TIMEOUT))
resumed=no
while :; do
	state=$(node_state)
	case $state in
	idle | mixed | allocated | completing) break ;;
	down | drained | draining | drain | fail | failing)
		# Registered but unusable (e.g. drained after an unclean stop): resume once.
		if [[ $resumed == no ]]; then
			log "node $NODE is $state ($(sinfo -h -N -n "$NODE" -o %E)): resuming it"
			scontrol update NodeName="$NODE" State=RESUME || true
			resumed=yes
		fi
		;;
	esac
	if ((SECONDS >= deadline)); then
		sinfo -N -l >&2 || true
		show_log "$STATE_DIR/log/slurmd.log" "$STATE_DIR/log/slurmctld.log"
		die "node $NODE is not usable after ${TIMEOUT}s (state '${state:-unknown}')"
	fi
	sleep 0.2
done

# --- report ---------------------------------------------------------------------

if ((${#STARTED[@]})); then
	log "started: ${STARTED[*]}"
else
	log "everything was already running; nothing started"
fi
log "node $NODE is $state: CPUs=$CPUS RealMemory=${REAL_MEMORY}M, partition debug"
log "cgroup v1 confinement: $USE_CGROUP; slurmdbd/sacct: $USE_DBD; config $CONF_DIR/slurm.conf; logs $STATE_DIR/log/"
