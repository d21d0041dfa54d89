#!/usr/bin/env bash
# Start a real one-node Slurm cluster on this Debian/Ubuntu machine (for trying the sbatch
# scripts on a laptop or VM, and for CI's Slurm tests):
#
#   sudo bash slurm/local-cluster.sh          # then: sbatch slurm/wordcount.sh
#
# Idempotent: installs slurmctld/slurmd/slurm-client/munge with apt-get only if missing, creates
# a munge key only if there is none, (re)writes /etc/slurm/slurm.conf only if its content would
# change, starts munged, slurmctld and slurmd only if they are not running, and returns once
# `sinfo` shows this node idle and `srun hostname` works. When everything is already up it
# takes about a second.
#
# The daemons run as plain background daemons (no systemd needed: works in containers), as
# root (SlurmUser=root: fine for a throwaway test cluster, never for a real one), talking over
# 127.0.0.1 (so the hostname need not resolve). State and
# spool live under /var/spool/slurm-local, logs under /var/log/slurm-local.
# Stop the daemons (slurmd, slurmctld, munged) with:  bash slurm/local-cluster.sh --stop
#
# Environment: SLURM_LOCAL_WAIT (seconds to wait for the node, default 60).
set -euo pipefail

CLUSTER=mpitiny-local
STATE=/var/spool/slurm-local
LOGS=/var/log/slurm-local
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
WAIT=${SLURM_LOCAL_WAIT:-60}

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: ERROR: $*" >&2; exit 1; }
T0=$(date +%s.%N)
took() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# The daemons are found and stopped through their pid files only (never by name).
pidfile() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "/run/$1.pid" ;; esac; }
running() {   # running DAEMON: its pid file names a live process of that name
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] && pid=$(<"$f") && [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$1" ]]
}
stop() {      # stop DAEMON: SIGTERM by pid, wait up to 10 s
    running "$1" || return 0
    local pid
    pid=$(<"$(pidfile "$1")")
    say "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do running "$1" || return 0; sleep 0.1; done
    die "$1 (pid $pid) did not stop"
}

if [[ ${1:-} == --stop ]]; then
    for d in slurmd slurmctld munged; do stop "$d"; done
    exit 0
fi

[[ $(id -u) == 0 ]] || die "must run as root (sudo bash $0): it installs packages and starts daemons"
command -v apt-get >/dev/null || die "needs apt-get (Debian/Ubuntu); on other systems install Slurm and munge yourself"

# ---- 1. packages -------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null || [[ -x /usr/sbin/$cmd ]] || need+=("$pkg")
done
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only when the package lists do not know the packages yet.
    if ! apt-cache show "${need[@]}" >/dev/null 2>&1; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
    fi
    say "apt-get install -y ${need[*]}"
    # policy-rc.d: on a machine with an init system, do not let the packages start the daemons
    # (with the default config) behind our back; we start them ourselves below.
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        created_policy=1
    fi
    rc=0
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/tmp/local-cluster-apt.log 2>&1 || rc=$?
    ((created_policy)) && rm -f /usr/sbin/policy-rc.d
    if ((rc)); then
        tail -20 /tmp/local-cluster-apt.log >&2
        die "apt-get install ${need[*]} failed (exit $rc; full log: /tmp/local-cluster-apt.log)"
    fi
    say "installed ${need[*]} ($(took)s so far)"
else
    say "packages already installed"
fi
SLURMCTLD=$(command -v slurmctld || echo /usr/sbin/slurmctld)
SLURMD=$(command -v slurmd || echo /usr/sbin/slurmd)
MUNGED=$(command -v munged || echo /usr/sbin/munged)
say "$("$SLURMD" -V 2>/dev/null || echo 'slurm ?')"

# ---- 2. munge ----------------------------------------------------------------------------------
KEY=/etc/munge/munge.key
if [[ ! -s $KEY ]]; then
    say "creating $KEY"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$KEY" --force
    else
        dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
    fi
fi
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
chown "$MUNGE_USER:" "$KEY" && chmod 400 "$KEY"
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown "$MUNGE_USER:" /run/munge /var/lib/munge /var/log/munge /etc/munge
chmod 755 /run/munge
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    say "starting munged"
    if [[ $MUNGE_USER == munge ]]; then
        runuser -u munge -- "$MUNGED" --force || die "munged failed to start (see /var/log/munge/munged.log)"
    else
        "$MUNGED" --force || die "munged failed to start (see /var/log/munge/munged.log)"
    fi
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n </dev/null | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"
fi

# ---- 3. slurm.conf -----------------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc --all)
# slurmd -C prints what it detects (Sockets, CoresPerSocket, ThreadsPerCore, RealMemory): use
# its line so the node never registers with "Low socket*core*thread count" and gets drained.
NODE_LINE=$("$SLURMD" -C 2>/dev/null | grep -m1 '^NodeName=' || true)
if [[ -z $NODE_LINE ]]; then
    MEM=$(awk '/MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)
    NODE_LINE="NodeName=$HOST CPUs=$CPUS RealMemory=$MEM"
fi
# Keep 5% of the memory for the system and the daemons (slurmd -C reports all of it, and a node
# whose RealMemory is above what it has at registration gets drained).
NODE_LINE=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^RealMemory=/) { split($i, a, "="); $i = "RealMemory=" int(a[2] * 0.95) }
                   else if ($i ~ /^UpTime=/) $i = ""; print }' <<<"$NODE_LINE")
MPI_DEFAULT=none
PLUGDIR=$(dirname "$(find /usr/lib -name 'mpi_pmi2.so' -path '*slurm*' 2>/dev/null | head -1)" 2>/dev/null || true)
[[ -n $PLUGDIR && -e $PLUGDIR/mpi_pmi2.so ]] && MPI_DEFAULT=pmi2
mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS"
NEW_CONF=$(cat <<EOF
# Written by mpitiny's slurm/local-cluster.sh: a one-node test cluster. Not for production.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=$MPI_DEFAULT
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
CONF_CHANGED=0
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$NEW_CONF" ]]; then
    say "writing $CONF ($NODE_LINE; MpiDefault=$MPI_DEFAULT)"
    printf '%s\n' "$NEW_CONF" >"$CONF"
    CONF_CHANGED=1
else
    say "$CONF unchanged"
fi
# Only needed by cgroup plugins (not used here), but some builds read it at start: keep it minimal.
if [[ ! -f $CONF_DIR/cgroup.conf ]]; then
    printf '# Written by mpitiny slurm/local-cluster.sh\nCgroupPlugin=autodetect\n' >"$CONF_DIR/cgroup.conf"
fi

# ---- 4. daemons --------------------------------------------------------------------------------
if ((CONF_CHANGED)); then
    for d in slurmd slurmctld; do
        running "$d" && { say "restarting $d (configuration changed)"; stop "$d"; }
    done
fi
if running slurmctld; then
    say "slurmctld already running"
else
    say "starting slurmctld (log: $LOGS/slurmctld.log)"
    "$SLURMCTLD" -f "$CONF" || die "slurmctld failed to start: $(tail -5 "$LOGS/slurmctld.log" 2>/dev/null)"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q 'is UP' \
    || die "slurmctld does not answer: $(tail -5 "$LOGS/slurmctld.log" 2>/dev/null)"
if running slurmd; then
    say "slurmd already running"
else
    say "starting slurmd (log: $LOGS/slurmd.log)"
    "$SLURMD" -f "$CONF" || die "slurmd failed to start: $(tail -5 "$LOGS/slurmd.log" 2>/dev/null)"
fi

# ---- 5. wait for the node ----------------------------------------------------------------------
state=""
for ((i = 0; i < WAIT * 2; i++)); do
    state=$(sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -1)
    case $state in
        idle|mixed|allocated|completing) break ;;
        drain*|down*|fail*)
            say "node $HOST is $state ($(sinfo -h -n "$HOST" -o '%E')): scontrol update state=resume"
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case $state in
    idle|mixed|allocated|completing) ;;
    *) die "node $HOST is '${state:-unknown}' after ${WAIT}s: $(sinfo -h -n "$HOST" -o '%E' 2>/dev/null); see $LOGS/" ;;
esac
out=$(timeout 60 srun -N1 -n1 hostname 2>&1) || die "srun hostname failed: $out"
say "node $HOST is $state, srun works; srun --mpi=list: $(srun --mpi=list 2>&1 | tail -n +2 | tr -s ' \t\n' ' ' | sed 's/^ *//')"
say "ready after $(took)s: try  sbatch slurm/wordcount.sh"
