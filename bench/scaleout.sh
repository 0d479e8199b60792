#!/usr/bin/env bash
# bench/scaleout.sh: Letterbox on one PostgreSQL with 1, 2 and 3 nodes, next
# to the embedded (sqlite) store, in one run.
#
# For each configuration (embedded: one node; postgres: N nodes, one
# database, one shared blob directory) and each step, a fresh store: the
# LMTP delivery of the message mix of bench/run.sh at each --conc level,
# then the IMAP mixed client profile on user1's INBOX holding the mix. The
# load generator spreads its connections round-robin over the nodes, like a
# TCP load balancer. Steps are interleaved (every configuration at one step,
# then the next step), so background load hits all of them alike.
#
# Recorded per step: the mailbench result (rate, latency, load average
# before), the CPU seconds of PostgreSQL, of the nodes, of the load
# generator and of the whole machine over exactly the measured interval;
# for postgres the top statements of pg_stat_statements (reset before the
# step), WAL writes and syncs (pg_stat_wal), commits, and what the
# database's backends were doing (pg_stat_activity sampled every 0.2 s);
# with perf present, a system-wide CPU profile. Summary JSON:
# bench/results/<date>-scaleout.json. See bench/README.md.
#
# Usage: bench/scaleout.sh [--messages N] [--nodes "1 2 3"] [--conc "8 32"] ...
#        bench/scaleout.sh --help
set -euo pipefail

MESSAGES=5000
SEED=1
USERS=4
CONCS="8 32"
NODES="1 2 3"
EMBEDDED=1
STEPS="lmtp imap"
IMAP_CLIENTS=8
IMAP_DURATION=30
WORKROOT=${BENCH_WORKDIR:-/var/tmp}
PASSWORD="bench-pw-1"
DOMAIN=bench.test
STEP_LIMIT=900  # seconds, limit of one mailbench step
MAX_MINUTES=40  # the whole run stops measuring after this long
TOP=15          # statements kept per step
SAMPLE=0.2      # seconds between pg_stat_activity samples
PERF=auto
PERF_FREQ=99
KEEP=0
SAVE=1

usage() {
	cat <<EOF
usage: bench/scaleout.sh [options]

  --messages N         messages in the mix (default $MESSAGES; bench/run.sh uses 10,000)
  --seed N             PRNG seed of the mix (default $SEED)
  --users N            bench users; messages go to 1-3 of them (default $USERS)
  --steps "LIST"       lmtp and/or imap (default "$STEPS")
  --conc "LIST"        LMTP connection counts, spread over the nodes (default "$CONCS")
  --nodes "LIST"       postgres node counts (default "$NODES"; "" for none)
  --no-embedded        skip the embedded-store baseline
  --imap-clients N     IMAP clients of the mixed profile, spread over the nodes (default $IMAP_CLIENTS)
  --imap-duration S    seconds the mixed profile runs (default $IMAP_DURATION)
  --top N              pg_stat_statements entries kept per step (default $TOP)
  --no-perf            no perf profile (default: system-wide perf record -F $PERF_FREQ
                       during every measured step when perf works)
  --workdir DIR        where stores, the PostgreSQL cluster and logs go; a real disk,
                       not tmpfs (default \$BENCH_WORKDIR or /var/tmp)
  --max-minutes M      stop measuring after M minutes; later steps are skipped (default $MAX_MINUTES)
  --keep               keep stores and the database cluster (default: delete, keep logs)
  --no-save            do not write bench/results/<date>-scaleout.json

Needs Go, PostgreSQL server binaries (Debian: postgresql, /usr/lib/postgresql/N/bin)
and psql; as root the cluster runs as the postgres user (scripts/testpg).
EOF
}

COMMAND="bench/scaleout.sh${*:+ $*}"
while [ $# -gt 0 ]; do
	case "$1" in
	--messages) MESSAGES=$2; shift 2 ;;
	--seed) SEED=$2; shift 2 ;;
	--users) USERS=$2; shift 2 ;;
	--steps) STEPS=$2; shift 2 ;;
	--conc) CONCS=$2; shift 2 ;;
	--nodes) NODES=$2; shift 2 ;;
	--no-embedded) EMBEDDED=0; shift ;;
	--imap-clients) IMAP_CLIENTS=$2; shift 2 ;;
	--imap-duration) IMAP_DURATION=$2; shift 2 ;;
	--top) TOP=$2; shift 2 ;;
	--no-perf) PERF=0; shift ;;
	--workdir) WORKROOT=$2; shift 2 ;;
	--max-minutes) MAX_MINUTES=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--no-save) SAVE=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "scaleout.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done

isnum() { [[ "$1" =~ ^[0-9]+$ && "$1" -ge 1 ]]; }
for v in "$MESSAGES" "$SEED" "$USERS" "$IMAP_CLIENTS" "$IMAP_DURATION" "$TOP" "$MAX_MINUTES"; do
	isnum "$v" || { echo "scaleout.sh: --messages, --seed, --users, --imap-clients, --imap-duration, --top and --max-minutes take positive numbers" >&2; exit 2; }
done
for c in $CONCS $NODES; do isnum "$c" || { echo "scaleout.sh: bad --conc/--nodes entry $c" >&2; exit 2; }; done
for st in $STEPS; do
	case "$st" in lmtp | imap) ;; *) echo "scaleout.sh: unknown step $st in --steps" >&2; exit 2 ;; esac
done
step() { [[ " $STEPS " == *" $1 "* ]]; }

# Configurations: "embedded" (0 postgres nodes) and "pg-N-node(s)".
CONFIGS=()
[ "$EMBEDDED" = 0 ] || CONFIGS+=(embedded)
for n in $NODES; do
	if [ "$n" = 1 ]; then CONFIGS+=(pg-1-node); else CONFIGS+=("pg-$n-nodes"); fi
done
[ ${#CONFIGS[@]} -gt 0 ] || { echo "scaleout.sh: nothing to run (--no-embedded and --nodes \"\")" >&2; exit 2; }
nodes_of() { case "$1" in embedded) echo 0 ;; *) local n=${1#pg-}; echo "${n%%-*}" ;; esac; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=""
PGDIR=""
PGURL_BASE=""
PGPID=""
NODE_PIDS=()
SAMPLER_PID=""
PERF_PID=""
FAILED=0
START_TIME=$(date +%s)
DEADLINE=$((START_TIME + MAX_MINUTES * 60)) # reset after the builds

log() { printf '== %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'scaleout.sh: %s\n' "$*" >&2; exit 1; }

# psql_at DB [psql args...]: run psql against DB of the private cluster,
# bounded, unaligned tuples only, errors fatal to that call.
psql_at() {
	local db=$1
	shift
	timeout 120 psql -X -q -At -v ON_ERROR_STOP=1 "${PGURL_BASE}/$db?sslmode=disable" "$@"
}

stop_pid() { # stop_pid PID WHAT: TERM, 20 s, then KILL
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "$2 ($pid) ignored SIGTERM for 20s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stop_helpers() {
	if [ -n "$PERF_PID" ]; then
		kill -INT "$PERF_PID" 2>/dev/null || true
		wait "$PERF_PID" 2>/dev/null || true
		PERF_PID=""
	fi
	if [ -n "$SAMPLER_PID" ]; then
		kill -TERM "$SAMPLER_PID" 2>/dev/null || true
		wait "$SAMPLER_PID" 2>/dev/null || true
		SAMPLER_PID=""
	fi
}

stop_nodes() {
	local p
	for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${NODE_PIDS[@]}"; do stop_pid "$p" "node"; done
	NODE_PIDS=()
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_helpers
	stop_nodes
	if [ -n "$PGDIR" ] && [ -f "$PGDIR/data/postmaster.pid" ]; then
		timeout 90 "$ROOT/scripts/testpg" stop "$PGDIR" >/dev/null 2>&1 || {
			log "WARNING: PostgreSQL did not stop; killing its postmaster $PGPID"
			[ -z "$PGPID" ] || kill -KILL "$PGPID" 2>/dev/null || true
		}
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ ! -s "$WORK/results.jsonl" ] && [ "$FAILED" = 0 ] && [ "$KEEP" != 1 ]; then
			rm -rf "$WORK" # nothing was measured (e.g. the build failed, already reported)
		elif [ "$KEEP" = 1 ]; then
			log "kept everything in $WORK"
		else
			find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'step-*' -exec sh -c 'rm -rf "$1"/blobs "$1"/node*/data' _ {} \; 2>/dev/null || true
			rm -rf "$WORK/bin" "$WORK/pg/data" "$WORK"/perf/*.data
			log "raw results and logs: $WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup

mkdir -p "$WORKROOT"
WORK=$(mktemp -d "$WORKROOT/lbscale.XXXXXX")
chmod 755 "$WORK" # the cluster runs as the postgres user and must reach its directory
FSTYPE=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
if [ "$FSTYPE" = tmpfs ] || [ "$FSTYPE" = ramfs ]; then
	log "WARNING: $WORK is on $FSTYPE: fsync costs nothing there, results are not about durability"
fi
LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 1.0) }'; then
	log "WARNING: load average is $LOAD1: something else is using the CPUs, numbers will be noisy"
fi
RESULTS=$WORK/results.jsonl
EXTRA=$WORK/extra.jsonl
: >"$RESULTS"
: >"$EXTRA"
mkdir -p "$WORK/perf"

if [ "$PERF" = auto ]; then
	PERF=0
	if command -v perf >/dev/null && timeout 20 perf record -q -a -F "$PERF_FREQ" -o "$WORK/perf/probe.data" -- sleep 0.2 >/dev/null 2>&1; then
		PERF=1
	fi
	rm -f "$WORK/perf/probe.data"
	[ "$PERF" = 1 ] || log "perf not usable here: no CPU profiles"
fi

log "building mailbench and letterbox"
mkdir -p "$WORK/bin"
MB=$WORK/bin/mailbench
LB=$WORK/bin/letterbox
(cd "$ROOT" && go build -o "$MB" ./bench/cmd/mailbench)
(cd "$ROOT" && go build -o "$LB" ./cmd/letterbox)
TREE=$(cd "$ROOT" && git describe --always --dirty=+dirty 2>/dev/null || echo unknown)
LETTERBOX_VERSION=$("$LB" version 2>/dev/null | head -1 || true)
PG_VERSION=""

PG_SETTINGS=""
if [ -n "$NODES" ]; then
	command -v psql >/dev/null || die "psql is missing (Debian: postgresql-client)"
	log "starting a private PostgreSQL cluster in $WORK/pg"
	PGDIR=$WORK/pg
	env_out=$(timeout 120 "$ROOT/scripts/testpg" start "$PGDIR") || die "scripts/testpg start failed"
	PGURL_BASE="postgres://letterbox@127.0.0.1:$(cat "$PGDIR/port")"
	# pg_stat_statements must be preloaded: set it, restart, create the view.
	psql_at postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'" \
		-c "ALTER SYSTEM SET track_wal_io_timing = on" >/dev/null
	timeout 120 "$ROOT/scripts/testpg" restart "$PGDIR" || die "PostgreSQL did not restart (see $PGDIR/postgres.log)"
	psql_at postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
		-c "CREATE UNLOGGED TABLE bench_waits (sample bigint, ev text)" \
		-c "CREATE SEQUENCE bench_sample" >/dev/null
	PGPID=$(head -1 "$PGDIR/data/postmaster.pid")
	PG_VERSION=$(psql_at postgres -c "SHOW server_version")
	PG_SETTINGS=$(psql_at postgres -c "SELECT name || '=' || current_setting(name) FROM pg_settings WHERE name IN
		('shared_buffers', 'synchronous_commit', 'fsync', 'wal_sync_method', 'max_connections', 'max_wal_size',
		 'checkpoint_timeout', 'commit_delay', 'wal_buffers', 'shared_preload_libraries', 'work_mem') ORDER BY name" | paste -sd' ')
	log "PostgreSQL $PG_VERSION, postmaster $PGPID: $PG_SETTINGS"
	unset env_out
fi

DEADLINE=$(($(date +%s) + MAX_MINUTES * 60))
MIXFLAGS=(-messages "$MESSAGES" -seed "$SEED" -users "$USERS" -domain "$DOMAIN")
IMAPMIX=(-messages "$MESSAGES" -seed "$SEED" -users 1 -domain "$DOMAIN")

# ---------------------------------------------------------------- nodes

# start_config CONFIG DIR DB: a fresh store and the configuration's nodes.
# Sets NODE_PIDS, LMTP_ADDRS and IMAP_ADDRS (comma-separated, node order),
# WATCH (mailbench -cpu-watch).
start_config() {
	local cfg=$1 dir=$2 db=$3 n i lport iport conf store="" ports
	n=$(nodes_of "$cfg")
	# All ports in one call, so that no two nodes get the same one.
	read -r -a ports < <("$MB" freeport -n $((2 * (n > 0 ? n : 1))))
	LMTP_ADDRS=""
	IMAP_ADDRS=""
	if [ "$n" -gt 0 ]; then
		psql_at postgres -c "CREATE DATABASE $db" >/dev/null
		mkdir -p "$dir/blobs"
		store="
[store]
backend      = \"postgres\"
postgres_url = \"$PGURL_BASE/$db?sslmode=disable\"
blob_dir     = \"$dir/blobs\""
	fi
	for i in $(seq 1 "$((n > 0 ? n : 1))"); do
		lport=${ports[$((2 * i - 2))]}
		iport=${ports[$((2 * i - 1))]}
		mkdir -p "$dir/node$i/data"
		conf=$dir/node$i/letterbox.toml
		# [limits] raised so that the bench is not what a limit measures
		# (as in bench/run.sh; loopback is exempt from the per-address one).
		cat >"$conf" <<EOF
# Generated by bench/scaleout.sh ($cfg, node $i).
hostname = "node$i.$DOMAIN"
data_dir = "$dir/node$i/data"
domains  = ["$DOMAIN"]

[listen]
smtp       = ""
lmtp       = "127.0.0.1:$lport"
submission = ""
imap       = "127.0.0.1:$iport"
imaps      = ""
pop3       = ""
pop3s      = ""

[limits]
max_connections          = 10000
max_sessions_per_account = 1000
max_recipients           = 100
login_block_after        = 0
$store
EOF
		LMTP_ADDRS+="${LMTP_ADDRS:+,}127.0.0.1:$lport"
		IMAP_ADDRS+="${IMAP_ADDRS:+,}127.0.0.1:$iport"
	done
	# Accounts go into the shared store once, through node 1's config.
	for i in $(seq 1 "$USERS"); do
		if ! printf '%s\n' "$PASSWORD" | timeout 120 "$LB" user add --config "$dir/node1/letterbox.toml" "user$i@$DOMAIN" >>"$dir/node1/letterbox.log" 2>&1; then
			tail -n 20 "$dir/node1/letterbox.log" >&2
			return 1
		fi
	done
	NODE_PIDS=()
	for i in $(seq 1 "$((n > 0 ? n : 1))"); do
		"$LB" serve --config "$dir/node$i/letterbox.toml" >>"$dir/node$i/letterbox.log" 2>&1 &
		NODE_PIDS+=($!)
	done
	WATCH=""
	[ -z "$PGPID" ] || WATCH="postgres=$PGPID"
	for i in "${!NODE_PIDS[@]}"; do
		WATCH+="${WATCH:+,}nodes=${NODE_PIDS[$i]}"
		local a
		a="$(echo "$LMTP_ADDRS" | cut -d, -f$((i + 1))),$(echo "$IMAP_ADDRS" | cut -d, -f$((i + 1)))"
		if ! "$MB" wait -addr "$a" -timeout 60s -pid "${NODE_PIDS[$i]}" 2>&1; then
			log "FAILED: node $((i + 1)) of $cfg not ready; last log lines:"
			tail -n 20 "$dir/node$((i + 1))/letterbox.log" >&2 || true
			return 1
		fi
	done
}

# drop_config DIR DB: stop the nodes, delete the store.
drop_config() {
	local dir=$1 db=$2
	stop_nodes
	log "store: $(du -sh "$dir" 2>/dev/null | cut -f1) on disk${db:+, database $(psql_at postgres -c "SELECT pg_size_pretty(pg_database_size('$db'))" 2>/dev/null || echo '?')}"
	if [ -n "$db" ] && [ "$KEEP" != 1 ]; then
		psql_at postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || log "WARNING: could not drop database $db"
	fi
	if [ "$KEEP" != 1 ]; then
		rm -rf "$dir/blobs" "$dir"/node*/data
	fi
}

# ---------------------------------------------------------------- measuring

# mb STEPNAME ARGS...: run one bounded mailbench step, append its JSON line.
mb() {
	local name=$1 left
	shift
	left=$((DEADLINE - $(date +%s)))
	if [ "$left" -lt 20 ]; then
		log "SKIPPED: $name (--max-minutes $MAX_MINUTES reached)"
		FAILED=1
		return 1
	fi
	[ "$left" -le "$STEP_LIMIT" ] || left=$STEP_LIMIT
	if timeout --foreground --signal=TERM --kill-after=30 $((left + 60)) "$MB" "$@" -timeout "${left}s" \
		>>"$RESULTS" 2> >(tee -a "$WORK/mailbench.log" >&2); then
		return 0
	fi
	log "FAILED: $name"
	FAILED=1
	return 1
}

# before_step CONFIG STEP DB: reset the statistics, start the samplers.
before_step() {
	local cfg=$1 stp=$2 db=$3
	log "$cfg $stp: load average $(cut -d' ' -f1-3 /proc/loadavg)"
	if [ -n "$db" ]; then
		COMMITS0=$(psql_at postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$db'")
		psql_at postgres -c "SELECT pg_stat_statements_reset()" -c "SELECT pg_stat_reset_shared('wal')" \
			-c "TRUNCATE bench_waits" -c "SELECT setval('bench_sample', 1, false)" >/dev/null
		# What the bench database's backends do, every $SAMPLE s: one row per
		# backend that is active (its wait event, or CPU) or idle inside a
		# transaction (waiting for its node); an empty sample counts too.
		printf '%s\n' "INSERT INTO bench_waits SELECT s.n, a.ev FROM (SELECT nextval('bench_sample') AS n) s
			LEFT JOIN LATERAL (SELECT CASE WHEN state = 'active' THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
				ELSE state END AS ev FROM pg_stat_activity
				WHERE datname = '$db' AND state IN ('active', 'idle in transaction')) a ON true \\watch $SAMPLE" |
			psql -X -q "${PGURL_BASE}/postgres?sslmode=disable" >/dev/null 2>>"$WORK/sampler.log" &
		SAMPLER_PID=$!
	fi
	if [ "$PERF" = 1 ]; then
		perf record -q -a -g -F "$PERF_FREQ" -o "$WORK/perf/$cfg-$stp.data" >/dev/null 2>>"$WORK/perf/perf.log" &
		PERF_PID=$!
	fi
}

# after_step CONFIG STEP DB: stop the samplers, save what they found.
after_step() {
	local cfg=$1 stp=$2 db=$3 pd=$WORK/perf/$cfg-$stp
	stop_helpers
	if [ -n "$db" ]; then
		sleep 2 # backends report their cumulative statistics within about a second of going idle
		psql_at postgres -v cfg="$cfg" -v stp="$stp" -v db="$db" -v top="$TOP" -v sample="$SAMPLE" -v commits0="${COMMITS0:-0}" >>"$EXTRA" <<'EOF' || log "WARNING: could not read the statistics of $db"
WITH st AS (
	SELECT s.* FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :'db'
), samples AS (
	SELECT count(DISTINCT sample) AS n FROM bench_waits
)
SELECT json_build_object(
	'kind', 'postgres', 'config', :'cfg', 'step', :'stp', 'database', :'db',
	'statements_total_exec_ms', (SELECT round(sum(total_exec_time)::numeric, 1) FROM st),
	'statements_calls', (SELECT sum(calls) FROM st),
	'top', (SELECT coalesce(json_agg(t), '[]') FROM (
		SELECT round(total_exec_time::numeric, 1) AS total_ms,
			round((100 * total_exec_time / nullif(sum(total_exec_time) OVER (), 0))::numeric, 1) AS pct,
			calls, round(mean_exec_time::numeric, 3) AS mean_ms, rows,
			shared_blks_hit, shared_blks_read, wal_bytes,
			left(regexp_replace(query, '\s+', ' ', 'g'), 300) AS query
		FROM st ORDER BY total_exec_time DESC LIMIT :top) t),
	'wal', (SELECT row_to_json(w) FROM (SELECT wal_records, wal_fpi, wal_bytes, wal_write, wal_sync,
		round(wal_write_time::numeric, 1) AS wal_write_ms, round(wal_sync_time::numeric, 1) AS wal_sync_ms
		FROM pg_stat_wal) w),
	'xact_commit', (SELECT xact_commit FROM pg_stat_database WHERE datname = :'db') - :commits0,
	'activity_samples', (SELECT n FROM samples),
	'activity_sample_s', :sample,
	'activity_mean_backends', (SELECT coalesce(json_object_agg(ev, round(c::numeric / greatest((SELECT n FROM samples), 1), 2)), '{}')
		FROM (SELECT ev, count(*) AS c FROM bench_waits WHERE ev IS NOT NULL GROUP BY ev ORDER BY count(*) DESC) e)
)::jsonb; -- jsonb prints on one line
EOF
	fi
	if [ "$PERF" = 1 ] && [ -s "$pd.data" ]; then
		# By process name, then the hottest functions of the nodes and of
		# PostgreSQL (self time), then the nodes' inclusive time.
		{
			echo "# perf: CPU samples of the whole machine by command ($cfg, $stp)"
			timeout 300 perf report -i "$pd.data" --stdio --no-children -g none --sort comm --percent-limit 0.5 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
		} >"$pd-comm.txt" || true
		{
			echo "# perf: hottest functions of the letterbox nodes, self time, % of all samples ($cfg, $stp)"
			timeout 300 perf report -i "$pd.data" --stdio --no-children -g none --comm letterbox --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
		} >"$pd-letterbox.txt" || true
		{
			echo "# perf: letterbox nodes, inclusive (children) time, % of all samples ($cfg, $stp)"
			timeout 300 perf report -i "$pd.data" --stdio --children -g none --comm letterbox --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
		} >"$pd-letterbox-children.txt" || true
		if [ -n "$db" ]; then
			{
				echo "# perf: hottest functions of postgres, self time, % of all samples ($cfg, $stp)"
				timeout 300 perf report -i "$pd.data" --stdio --no-children -g none --comm postgres --sort dso,sym 2>/dev/null | grep -v '^#' | grep -v '^$' | head -30
			} >"$pd-postgres.txt" || true
		fi
		[ "$KEEP" = 1 ] || rm -f "$pd.data"
	fi
}

# run_step CONFIG STEP: one configuration, one step, on a fresh store.
run_step() {
	local cfg=$1 stp=$2 c dir db="" n
	n=$(nodes_of "$cfg")
	dir=$WORK/step-$stp-$cfg
	[ "$n" = 0 ] || db=lb_$(echo "$stp-$cfg" | tr -c 'a-z0-9\n' '_')
	mkdir -p "$dir"
	log "$cfg: fresh store, $stp ($([ "$n" = 0 ] && echo "embedded, 1 node" || echo "postgres, $n node(s)"))"
	if ! start_config "$cfg" "$dir" "$db"; then
		log "FAILED: $cfg did not start"
		FAILED=1
		drop_config "$dir" "$db"
		return 1
	fi
	case "$stp" in
	lmtp-c*)
		c=${stp#lmtp-c}
		before_step "$cfg" "$stp" "$db"
		mb "$cfg $stp" lmtp -server "$cfg" -addr "$LMTP_ADDRS" -c "$c" -cpu-watch "$WATCH" "${MIXFLAGS[@]}" || true
		after_step "$cfg" "$stp" "$db"
		;;
	imap)
		if mb "$cfg imap fill" lmtp -kind lmtp-fill -server "$cfg" -addr "$LMTP_ADDRS" -c 8 -cpu-watch "$WATCH" "${IMAPMIX[@]}"; then
			before_step "$cfg" "$stp" "$db"
			mb "$cfg imap mixed" imap -server "$cfg" -addr "$IMAP_ADDRS" -password "$PASSWORD" -ops mixed \
				-clients "$IMAP_CLIENTS" -duration "${IMAP_DURATION}s" -cpu-watch "$WATCH" "${IMAPMIX[@]}" || true
			after_step "$cfg" "$stp" "$db"
		fi
		;;
	esac
	drop_config "$dir" "$db"
}

out_of_time() {
	if [ "$(date +%s)" -ge $((DEADLINE - 20)) ]; then
		log "SKIPPED: $1 (--max-minutes $MAX_MINUTES reached)"
		FAILED=1
		return 0
	fi
	return 1
}

ALLSTEPS=()
if step lmtp; then for c in $CONCS; do ALLSTEPS+=("lmtp-c$c"); done; fi
if step imap; then ALLSTEPS+=(imap); fi
for stp in "${ALLSTEPS[@]}"; do
	for cfg in "${CONFIGS[@]}"; do
		out_of_time "$cfg $stp" && continue
		run_step "$cfg" "$stp" || true
	done
done

# ---------------------------------------------------------------- report

DISK=$(df -P "$WORK" | awk 'NR==2 {print $1}')
OUT_ARGS=()
if [ "$SAVE" = 1 ]; then
	mkdir -p "$ROOT/bench/results"
	OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d)-scaleout.json"
	[ ! -e "$OUT" ] || OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d-%H%M%S)-scaleout.json"
	OUT_ARGS=(-out "$OUT")
fi
ATTACH=()
for f in "$WORK"/perf/*.txt; do
	[ -s "$f" ] || continue
	ATTACH+=(-attach "perf/$(basename "$f" .txt)=$f")
done
echo >&2
CONFIG_LIST=$(
	IFS=,
	echo "${CONFIGS[*]}"
)
"$MB" scalereport -in "$RESULTS" -extra "$EXTRA" "${OUT_ARGS[@]}" "${ATTACH[@]}" -markdown "$WORK/table.md" \
	-configs "$CONFIG_LIST" -baseline "${CONFIGS[0]}" \
	-info "command=$COMMAND" -info "messages=$MESSAGES" -info "seed=$SEED" -info "users=$USERS" \
	-info "concurrency=$CONCS" -info "nodes=$NODES" -info "steps=$STEPS" -info "imap_clients=$IMAP_CLIENTS" \
	-info "imap_duration_s=$IMAP_DURATION" -info "perf=$PERF" -info "perf_freq=$PERF_FREQ" \
	-info "postgres_version=$PG_VERSION" -info "postgres_settings=$PG_SETTINGS" \
	-info "letterbox_version=$LETTERBOX_VERSION" -info "letterbox_commit=$TREE" \
	-info "workdir_fs=$FSTYPE" -info "workdir_device=$DISK" -info "kernel=$(uname -r)" -info "nproc=$(nproc)" \
	-info "wall_seconds=$(($(date +%s) - START_TIME))"
[ "$SAVE" = 1 ] && log "summary written to ${OUT#"$ROOT"/}"
log "done in $(($(date +%s) - START_TIME))s"
if [ "$FAILED" = 1 ]; then
	log "some steps FAILED (see above)"
	exit 1
fi
