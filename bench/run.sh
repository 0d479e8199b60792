#!/usr/bin/env bash
# bench/run.sh: Letterbox vs Dovecot, side by side in one run.
#
# Delivers the same deterministic message mix over LMTP to each server at
# 1, 8 and 32 connections (a fresh, empty store for every level), then
# downloads the delivered mailboxes over POP3 (1 session, then one session
# per user in parallel). The IMAP steps then fill one user's INBOX with the
# whole mix and run the IMAP commands with 1 and 8 clients, 5,000 idle IDLE
# connections (server memory, EXISTS fan-out), and a 100,000-message INBOX.
# Prints a table with the ratio Letterbox/Dovecot. Raw results and server
# logs stay in a temp dir; a summary JSON goes to bench/results/<date>.json.
# See bench/README.md.
#
# Usage: bench/run.sh [--messages N] [--steps "lmtp pop3 imap idle big"] [--only dovecot|letterbox] ...
#        bench/run.sh --help
set -euo pipefail

MESSAGES=10000
SEED=1
REPEAT=1
CONCS="1 8 32"
USERS=4
ONLY=""
DOVECOT_FORMAT=maildir
KEEP=0
SAVE=1
INSTALL=1
WORKROOT=${BENCH_WORKDIR:-/var/tmp}
PASSWORD="bench-pw-1"
DOMAIN=bench.test
STEP_LIMIT=1800  # seconds, limit of one mailbench step
MAX_MINUTES=150  # the whole run stops measuring after this long
STEPS="lmtp pop3 imap idle big"
IMAP_CLIENTS="1 8"
IMAP_DURATION=10
IDLE_CONNS=5000
IDLE_USERS=100
IDLE_WAIT=180
BIG_MESSAGES=100000
BIG_CONC=8
SYSCTL=1

usage() {
	cat <<EOF
usage: bench/run.sh [options]

  --messages N           messages in the mix (default $MESSAGES; use 500 for a quick run)
  --seed N               PRNG seed of the mix (default $SEED)
  --steps "LIST"         what to run (default "$STEPS"):
                           lmtp  LMTP delivery at each --conc level
                           pop3  POP3 download of the last level's mailboxes
                                 (without lmtp: only the last level is delivered)
                           imap  IMAP steps on one user's INBOX holding the mix
                           idle  --idle-conns connections in IDLE: memory, EXISTS
                           big   a --big-messages INBOX: SELECT and full FETCHes
  --conc "LIST"          LMTP connection counts (default "$CONCS")
  --imap-clients "LIST"  IMAP client counts (default "$IMAP_CLIENTS")
  --imap-duration S      seconds each IMAP step runs (default $IMAP_DURATION)
  --idle-conns N         idle IMAP connections (default $IDLE_CONNS)
  --idle-users N         spread over this many users, each with ~114 small messages
                         (default $IDLE_USERS; the one delivery goes to all of them)
  --idle-wait S          seconds to watch the memory once all are idle; the last
                         sample counts (default $IDLE_WAIT: past Go's 2-minute forced GC)
  --big-messages N       messages of the large INBOX (default $BIG_MESSAGES; 0 skips it)
  --big-conc N           LMTP connections filling it (default $BIG_CONC)
  --no-sysctl            do not raise fs.inotify.max_user_instances for Dovecot's
                         idle connections (it is restored at exit)
  --users N              bench users; messages go to 1-3 of them (default $USERS)
  --repeat R             run every step R times (interleaved); the table shows the fastest
  --only SERVER          run only dovecot or only letterbox
  --dovecot-format F     maildir or sdbox (default $DOVECOT_FORMAT)
  --workdir DIR          where temp stores go; must be a real disk, not tmpfs
                         (default \$BENCH_WORKDIR or /var/tmp)
  --max-minutes M        stop measuring after M minutes; later steps are skipped
                         (default $MAX_MINUTES; a full 10,000-message run takes ~75-90,
                         the LMTP and POP3 steps alone ~6 on an idle machine)
  --keep                 keep the mail stores (default: delete them, keep logs)
  --no-save              do not write bench/results/<date>.json
  --no-install           do not apt-get install dovecot when missing
EOF
}

COMMAND="bench/run.sh${*:+ $*}"
while [ $# -gt 0 ]; do
	case "$1" in
	--messages) MESSAGES=$2; shift 2 ;;
	--seed) SEED=$2; shift 2 ;;
	--conc) CONCS=$2; shift 2 ;;
	--steps) STEPS=$2; shift 2 ;;
	--imap-clients) IMAP_CLIENTS=$2; shift 2 ;;
	--imap-duration) IMAP_DURATION=$2; shift 2 ;;
	--idle-conns) IDLE_CONNS=$2; shift 2 ;;
	--idle-users) IDLE_USERS=$2; shift 2 ;;
	--idle-wait) IDLE_WAIT=$2; shift 2 ;;
	--big-messages) BIG_MESSAGES=$2; shift 2 ;;
	--big-conc) BIG_CONC=$2; shift 2 ;;
	--no-sysctl) SYSCTL=0; shift ;;
	--users) USERS=$2; shift 2 ;;
	--repeat) REPEAT=$2; shift 2 ;;
	--only) ONLY=$2; shift 2 ;;
	--dovecot-format) DOVECOT_FORMAT=$2; shift 2 ;;
	--workdir) WORKROOT=$2; shift 2 ;;
	--max-minutes) MAX_MINUTES=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	--no-save) SAVE=0; shift ;;
	--no-install) INSTALL=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
done

case "$ONLY" in
"") SERVERS="dovecot letterbox" ;;
dovecot | letterbox) SERVERS=$ONLY ;;
*) echo "run.sh: --only takes dovecot or letterbox" >&2; exit 2 ;;
esac
case "$DOVECOT_FORMAT" in maildir | sdbox) ;; *) echo "run.sh: --dovecot-format takes maildir or sdbox" >&2; exit 2 ;; esac
[[ "$MESSAGES" =~ ^[0-9]+$ && "$MESSAGES" -ge 1 ]] || { echo "run.sh: --messages takes a positive number" >&2; exit 2; }
[[ "$USERS" =~ ^[0-9]+$ && "$USERS" -ge 1 ]] || { echo "run.sh: --users takes a positive number" >&2; exit 2; }
[[ "$MAX_MINUTES" =~ ^[0-9]+$ && "$MAX_MINUTES" -ge 1 ]] || { echo "run.sh: --max-minutes takes a positive number" >&2; exit 2; }
[[ "$REPEAT" =~ ^[0-9]+$ && "$REPEAT" -ge 1 ]] || { echo "run.sh: --repeat takes a positive number" >&2; exit 2; }
for c in $CONCS $IMAP_CLIENTS; do [[ "$c" =~ ^[0-9]+$ && "$c" -ge 1 ]] || { echo "run.sh: bad --conc/--imap-clients entry $c" >&2; exit 2; }; done
for st in $STEPS; do
	case "$st" in lmtp | pop3 | imap | idle | big) ;; *) echo "run.sh: unknown step $st in --steps" >&2; exit 2 ;; esac
done
for v in "$IMAP_DURATION" "$IDLE_CONNS" "$IDLE_USERS" "$IDLE_WAIT" "$BIG_MESSAGES" "$BIG_CONC"; do
	[[ "$v" =~ ^[0-9]+$ ]] || { echo "run.sh: --imap-duration, --idle-conns, --idle-users, --idle-wait, --big-messages and --big-conc take numbers" >&2; exit 2; }
done
[ "$IDLE_USERS" -ge 1 ] || { echo "run.sh: --idle-users must be at least 1" >&2; exit 2; }
NUSERS=$USERS # users the next start_SERVER creates
step() { [[ " $STEPS " == *" $1 "* ]]; }
if [ "$BIG_MESSAGES" = 0 ]; then STEPS=${STEPS/big/}; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER_PID=""
POLICY_RCD_CREATED=0
INOTIFY_OLD=""
WORK=""
FAILED=0
START_TIME=$(date +%s)
DEADLINE=$((START_TIME + MAX_MINUTES * 60)) # reset after the builds

log() { printf '== %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# tree_pids PID: the descendants of PID (Dovecot's service processes).
tree_pids() {
	ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
		END { n = split(kids[root], q, " "); for (i = 1; i <= n; i++) { print q[i]; m = split(kids[q[i]], more, " "); for (j = 1; j <= m; j++) q[++n] = more[j] } }'
}

# alive PIDS...: the ones still running.
alive() {
	local p
	for p in "$@"; do kill -0 "$p" 2>/dev/null && echo "$p"; done
	return 0
}

stop_server() {
	[ -n "$SERVER_PID" ] || return 0
	local pid=$SERVER_PID i kids
	SERVER_PID=""
	# Dovecot's children (thousands of imap processes after the idle step)
	# can outlive the master by a while: wait for them too.
	kids=$(tree_pids "$pid")
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 1 200); do # 20 s
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "server $pid ignored SIGTERM for 20s, sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	if [ -n "$kids" ]; then
		# shellcheck disable=SC2086 # a list of pids
		for i in $(seq 1 100); do # 20 s
			[ -n "$(alive $kids)" ] || break
			sleep 0.2
		done
		# shellcheck disable=SC2086
		kids=$(alive $kids)
		if [ -n "$kids" ]; then
			log "$(echo "$kids" | wc -l) processes of server $pid still running 20s after it, sending SIGKILL"
			# shellcheck disable=SC2086
			kill -KILL $kids 2>/dev/null || true
			sleep 1
		fi
	fi
}

# drop_store DIR: delete the mail store of DIR (not with --keep).
drop_store() {
	[ "$KEEP" != 1 ] || return 0
	rm -rf "$1/mail" "$1/data" 2>/dev/null || { sleep 2; rm -rf "$1/mail" "$1/data"; } || log "WARNING: could not delete the store in $1"
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_server
	if [ "$POLICY_RCD_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
	if [ -n "$INOTIFY_OLD" ]; then
		echo "$INOTIFY_OLD" >/proc/sys/fs/inotify/max_user_instances 2>/dev/null &&
			log "restored fs.inotify.max_user_instances = $INOTIFY_OLD"
	fi
	if [ -n "$WORK" ] && [ -d "$WORK" ]; then
		if [ ! -s "$WORK/results.jsonl" ] && [ "$FAILED" = 0 ] && [ "$KEEP" != 1 ]; then
			rm -rf "$WORK" # nothing was measured (e.g. the build failed, already reported)
		elif [ "$KEEP" = 1 ]; then
			log "kept everything in $WORK"
		else
			# Mail stores are large: drop them, keep logs and raw results.
			find "$WORK" -mindepth 2 -maxdepth 2 \( -name mail -o -name data \) -type d -exec rm -rf {} + 2>/dev/null || true
			rm -rf "$WORK/bin"
			log "raw results and logs: $WORK"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites

install_dovecot() {
	if command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/lmtp ] && [ -x /usr/lib/dovecot/pop3 ] && [ -x /usr/lib/dovecot/imap ]; then
		return 0
	fi
	[ "$INSTALL" = 1 ] || die "dovecot (dovecot-core, dovecot-lmtpd, dovecot-pop3d, dovecot-imapd) is missing and --no-install was given"
	[ "$(id -u)" = 0 ] || die "installing dovecot needs root"
	log "installing dovecot-core dovecot-lmtpd dovecot-pop3d dovecot-imapd"
	# Keep the package from starting the system service (Debian's policy-rc.d
	# convention: exit 101 = action forbidden); we run our own instance.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RCD_CREATED=1
	fi
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-core dovecot-lmtpd dovecot-pop3d dovecot-imapd >&2
	if [ "$POLICY_RCD_CREATED" = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_RCD_CREATED=0
	fi
	# Should it have started anyway, stop and disable the system service.
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true
	else
		if [ -f /run/dovecot/master.pid ]; then
			local pid
			pid=$(cat /run/dovecot/master.pid)
			if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dovecot ]; then
				log "stopping the system dovecot (pid $pid) started by the package"
				kill -TERM "$pid" || true
			fi
		fi
		command -v update-rc.d >/dev/null && update-rc.d dovecot disable >/dev/null 2>&1 || true
	fi
}

if [[ " $SERVERS " == *" dovecot "* ]]; then
	[ "$(id -u)" = 0 ] || die "the Dovecot half needs root (own dovecot instance, vmail user); use --only letterbox otherwise"
	install_dovecot
	if ! id -u vmail >/dev/null 2>&1; then
		log "creating system user vmail"
		useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmail
	fi
	if [ -f /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
		log "WARNING: a system dovecot is running; it competes for the same CPUs"
	fi
	# Each Dovecot imap process in IDLE holds an inotify instance, all of
	# them as vmail; past fs.inotify.max_user_instances (128 by default)
	# Dovecot falls back to polling every mailbox_idle_check_interval (30 s).
	want=$((IDLE_CONNS + 1024))
	INOTIFY_CUR=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
	if step idle && [ "$SYSCTL" = 1 ] && [ "$INOTIFY_CUR" -lt "$want" ]; then
		if echo "$want" >/proc/sys/fs/inotify/max_user_instances 2>/dev/null; then
			INOTIFY_OLD=$INOTIFY_CUR
			log "raised fs.inotify.max_user_instances from $INOTIFY_CUR to $want for this run"
		else
			log "WARNING: cannot raise fs.inotify.max_user_instances ($INOTIFY_CUR); Dovecot's idle connections beyond it poll every 30 s"
		fi
	fi
fi

# Thousands of idle IMAP connections: the client and the servers need more
# descriptors than the usual 1024 (the servers inherit this limit).
if step idle; then
	ulimit -Hn 65536 2>/dev/null || true
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	[ "$(ulimit -n)" -gt $((IDLE_CONNS * 2 + 1000)) ] || log "WARNING: ulimit -n is $(ulimit -n), low for $IDLE_CONNS idle connections"
fi

mkdir -p "$WORKROOT"
WORK=$(mktemp -d "$WORKROOT/lbbench.XXXXXX")
chmod 755 "$WORK" # dovecot's unprivileged processes must traverse it
FSTYPE=$(findmnt -n -o FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")
if [ "$FSTYPE" = tmpfs ] || [ "$FSTYPE" = ramfs ]; then
	log "WARNING: $WORK is on $FSTYPE: fsync costs nothing there, results are not about durability"
fi
LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 1.0) }'; then
	log "WARNING: load average is $LOAD1: something else is using the CPUs, numbers will be noisy"
fi
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

log "building mailbench and letterbox"
mkdir -p "$WORK/bin"
MB=$WORK/bin/mailbench
LB=$WORK/bin/letterbox
(cd "$ROOT" && go build -o "$MB" ./bench/cmd/mailbench)
if [[ " $SERVERS " == *" letterbox "* ]]; then
	if ! (cd "$ROOT" && go build -o "$LB" ./cmd/letterbox) 2>"$WORK/letterbox-build.log"; then
		cat "$WORK/letterbox-build.log" >&2
		die "go build ./cmd/letterbox failed (use --only dovecot to measure Dovecot alone)"
	fi
fi

# What was built: the commit, "+dirty" when the work tree had changes.
TREE=$(cd "$ROOT" && git describe --always --dirty=+dirty 2>/dev/null || echo unknown)
DEADLINE=$(($(date +%s) + MAX_MINUTES * 60))
MIXFLAGS=(-messages "$MESSAGES" -seed "$SEED" -users "$USERS" -domain "$DOMAIN")
DOVECOT_VERSION=""
LETTERBOX_VERSION=""

# ---------------------------------------------------------------- servers
# start_SERVER DIR [VARIANT] sets SERVER_PID, LMTP_ADDR, POP3_ADDR and IMAP_ADDR.

start_dovecot() {
	local dir=$1 variant=${2:-} lport pport iport uid gid i loc hib=""
	read -r lport pport iport < <("$MB" freeport -n 3)
	uid=$(id -u vmail)
	gid=$(id -g vmail)
	mkdir -p "$dir/run" "$dir/state" "$dir/mail"
	chown vmail:vmail "$dir/mail"
	: >"$dir/users"
	for i in $(seq 1 "$NUSERS"); do
		printf 'user%d@%s:{PLAIN}%s:%d:%d::%s/mail/user%d::\n' "$i" "$DOMAIN" "$PASSWORD" "$uid" "$gid" "$dir" "$i" >>"$dir/users"
	done
	chmod 644 "$dir/users"
	case "$DOVECOT_FORMAT" in
	maildir) loc="maildir:~/Maildir" ;;
	sdbox) loc="sdbox:~/sdbox" ;;
	esac
	if [ "$variant" = hibernate ]; then
		# Dovecot's own answer to many IDLE connections (wiki
		# IMAPServer.Hibernation): after 5 s in IDLE the connection moves to
		# the one imap-hibernate process and the imap process exits.
		hib="
imap_hibernate_timeout = 5s
service imap {
  unix_listener imap-master {
    user = \$default_internal_user
  }
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0660
    group = \$default_internal_group
  }
}"
	fi
	cat >"$dir/dovecot.conf" <<EOF
# Generated by bench/run.sh: a private Dovecot instance on loopback ports.
base_dir = $dir/run
state_dir = $dir/state
instance_name = lbbench-$$-$(basename "$dir")
protocols = imap lmtp pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = $dir/dovecot.log
info_log_path = $dir/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
mail_location = $loc
mail_uid = $uid
mail_gid = $gid
first_valid_uid = $uid
first_valid_gid = $gid
# Durable like Letterbox: fsync every mail file and index write.
mail_fsync = always
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $dir/users
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lport
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $pport
  }
  inet_listener pop3s {
    port = 0
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $iport
  }
  inet_listener imaps {
    port = 0
  }
}
# One imap process per connection (client_limit = 1), as Dovecot
# recommends for mail processes; enough of them for the idle step.
service imap {
  process_limit = $((IDLE_CONNS + 200))
}
# Every process keeps a connection to the log, stats and anvil services.
default_client_limit = $((IDLE_CONNS * 2 + 1000))
protocol imap {
  # All bench connections are one user from one address (default 10).
  mail_max_userip_connections = $((IDLE_CONNS + 200))
}
namespace inbox {
  inbox = yes
  mailbox Trash {
    auto = create
    special_use = \Trash
  }
}
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}$hib
EOF
	dovecot -F -c "$dir/dovecot.conf" >>"$dir/dovecot.out" 2>&1 &
	SERVER_PID=$!
	LMTP_ADDR=127.0.0.1:$lport
	POP3_ADDR=127.0.0.1:$pport
	IMAP_ADDR=127.0.0.1:$iport
	DOVECOT_VERSION=$(dovecot --version 2>/dev/null || true)
}

start_letterbox() {
	local dir=$1 lport pport iport i conf=$1/letterbox.toml fresh=0
	read -r lport pport iport < <("$MB" freeport -n 3)
	[ -d "$dir/data" ] || fresh=1 # a restart on the same store keeps its users
	mkdir -p "$dir/data"
	cat >"$conf" <<EOF
# Generated by bench/run.sh.
hostname = "mail.$DOMAIN"
data_dir = "$dir/data"
domains  = ["$DOMAIN"]

[listen]
smtp       = ""
lmtp       = "127.0.0.1:$lport"
submission = ""
imap       = "127.0.0.1:$iport"
imaps      = ""
pop3       = "127.0.0.1:$pport"
pop3s      = ""
EOF
	# [limits] (when this Letterbox has it: unknown keys are errors). The
	# defaults (5,000 connections in all, 50 sessions per account, 100
	# recipients) are below what the idle step opens, as Dovecot's are.
	local limits="" key val
	for key in max_connections max_sessions_per_account max_recipients; do
		case $key in
		max_connections) val=$((IDLE_CONNS + 1000)) ;;
		max_sessions_per_account) val=$((IDLE_CONNS + 200)) ;;
		max_recipients) val=$((IDLE_USERS > 100 ? IDLE_USERS : 100)) ;;
		esac
		if grep -qs "toml:\"$key\"" "$ROOT"/internal/config/*.go; then
			limits+="$key = $val"$'\n'
		fi
	done
	[ -z "$limits" ] || printf '\n[limits]\n%s' "$limits" >>"$conf"
	for i in $(seq 1 "$NUSERS"); do
		[ "$fresh" = 1 ] || break
		if ! printf '%s\n' "$PASSWORD" | "$LB" user add --config "$conf" "user$i@$DOMAIN" >>"$dir/letterbox.log" 2>&1; then
			cat "$dir/letterbox.log" >&2
			return 1
		fi
	done
	"$LB" serve --config "$conf" >>"$dir/letterbox.log" 2>&1 &
	SERVER_PID=$!
	LMTP_ADDR=127.0.0.1:$lport
	POP3_ADDR=127.0.0.1:$pport
	IMAP_ADDR=127.0.0.1:$iport
	LETTERBOX_VERSION=$("$LB" version 2>/dev/null | head -1 || true)
}

server_log() {
	case "$1" in
	dovecot) echo "$2/dovecot.log" ;;
	letterbox) echo "$2/letterbox.log" ;;
	esac
}

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
	# --foreground keeps mailbench in our process group, so Ctrl-C reaches it;
	# mailbench stops itself at -timeout, timeout(1) is the backstop.
	if timeout --foreground --signal=TERM --kill-after=30 $((left + 60)) "$MB" "$@" -timeout "${left}s" \
		>>"$RESULTS" 2> >(tee -a "$WORK/mailbench.log" >&2); then
		return 0
	fi
	log "FAILED: $name"
	FAILED=1
	return 1
}

# launch SERVER DIR [VARIANT]: start the server and wait until every
# listener greets; on failure, log why and return 1 (server stopped).
launch() {
	local server=$1 dir=$2
	if ! "start_$server" "$dir" "${3:-}"; then
		log "FAILED: $server did not start (see $(server_log "$server" "$dir"))"
		FAILED=1
		stop_server
		return 1
	fi
	if ! "$MB" wait -addr "$LMTP_ADDR,$POP3_ADDR,$IMAP_ADDR" -timeout 30s -pid "$SERVER_PID" 2>&1; then
		log "FAILED: $server not ready; last log lines:"
		tail -n 20 "$(server_log "$server" "$dir")" >&2 || true
		tail -n 20 "$dir/dovecot.out" >&2 2>/dev/null || true
		FAILED=1
		stop_server
		return 1
	fi
}

out_of_time() {
	if [ "$(date +%s)" -ge $((DEADLINE - 20)) ]; then
		log "SKIPPED: $1 (--max-minutes $MAX_MINUTES reached)"
		FAILED=1
		return 0
	fi
	return 1
}

# ---------------------------------------------------------------- LMTP, POP3

LMTP_CONCS=$CONCS
step lmtp || LMTP_CONCS=${CONCS##* } # pop3 alone: deliver at the last level only
LAST_CONC=${CONCS##* }
if step lmtp || step pop3; then
	for c in $LMTP_CONCS; do
		for rep in $(seq 1 "$REPEAT"); do
			for server in $SERVERS; do
				out_of_time "$server c=$c run $rep" && continue
				dir=$WORK/$server-c$c-r$rep
				mkdir -p "$dir"
				log "$server: fresh store, LMTP with $c connection(s), $MESSAGES messages (run $rep/$REPEAT)"
				launch "$server" "$dir" || continue
				kind=lmtp
				step lmtp || kind=lmtp-fill
				mb "$server lmtp c=$c" lmtp -kind "$kind" -server "$server" -addr "$LMTP_ADDR" -c "$c" "${MIXFLAGS[@]}" || true
				if [ "$c" = "$LAST_CONC" ] && step pop3; then
					log "$server: POP3 download, 1 session, then $USERS in parallel"
					mb "$server pop3 1" pop3 -server "$server" -addr "$POP3_ADDR" -sessions 1 -password "$PASSWORD" -verify-mix "${MIXFLAGS[@]}" || true
					if [ "$USERS" -gt 1 ]; then
						mb "$server pop3 $USERS" pop3 -server "$server" -addr "$POP3_ADDR" -sessions "$USERS" -password "$PASSWORD" -verify-mix "${MIXFLAGS[@]}" || true
					fi
				fi
				stop_server
				log "$server: store size $(du -sh "$dir" 2>/dev/null | cut -f1)"
				drop_store "$dir"
			done
		done
	done
fi

# ---------------------------------------------------------------- IMAP

# The IMAP steps work on user1's INBOX holding the whole mix: the same
# messages as above, all delivered to user1 (-users 1), over LMTP with 8
# connections (recorded as kind lmtp-fill, not in the table).
IMAPMIX=(-messages "$MESSAGES" -seed "$SEED" -users 1 -domain "$DOMAIN")
if step imap; then
	for rep in $(seq 1 "$REPEAT"); do
		for server in $SERVERS; do
			out_of_time "$server IMAP run $rep" && continue
			dir=$WORK/$server-imap-r$rep
			mkdir -p "$dir"
			log "$server: fresh store, $MESSAGES messages into user1's INBOX for IMAP (run $rep/$REPEAT)"
			launch "$server" "$dir" || continue
			if mb "$server imap fill" lmtp -kind lmtp-fill -server "$server" -addr "$LMTP_ADDR" -c 8 "${IMAPMIX[@]}"; then
				log "$server: IMAP steps with $IMAP_CLIENTS client(s), ${IMAP_DURATION}s each"
				mb "$server imap" imap -server "$server" -addr "$IMAP_ADDR" -password "$PASSWORD" \
					-clients "${IMAP_CLIENTS// /,}" -duration "${IMAP_DURATION}s" "${IMAPMIX[@]}" || true
			fi
			stop_server
			log "$server: store size $(du -sh "$dir" 2>/dev/null | cut -f1)"
			drop_store "$dir"
		done
	done
fi

# Idle connections: a fresh store with --idle-users users, each with about
# 114 small messages (the mix with -users N, 2-4 KiB); the connections are
# spread round-robin over the users, and the one delivery goes to all.
IDLEMIX=(-messages $((IDLE_USERS * 100)) -seed "$SEED" -users "$IDLE_USERS" -domain "$DOMAIN" -min-size 2048 -max-size 4096 -huge-frac 0)
if step idle; then
	for rep in $(seq 1 "$REPEAT"); do
		for server in $SERVERS; do
			out_of_time "$server idle run $rep" && continue
			dir=$WORK/$server-idle-r$rep
			mkdir -p "$dir"
			log "$server: fresh store, $IDLE_USERS users with $((IDLE_USERS * 100)) small messages among them (run $rep/$REPEAT)"
			NUSERS=$IDLE_USERS # for every start on this store (Dovecot's passwd-file is rewritten)
			launch "$server" "$dir" || continue
			if ! mb "$server idle fill" lmtp -kind lmtp-fill -server "$server" -addr "$LMTP_ADDR" -c 8 "${IDLEMIX[@]}"; then
				stop_server
				continue
			fi
			variants=""
			[ "$server" = dovecot ] && variants="hibernate"
			for variant in "" $variants; do
				# A fresh server process on the same store, so that the
				# baseline memory is not what the delivery left.
				stop_server
				out_of_time "$server idle $variant" && break
				launch "$server" "$dir" "$variant" || break
				log "$server${variant:+ ($variant)}: $IDLE_CONNS connections over $IDLE_USERS users in IDLE"
				mb "$server imapidle $variant" imapidle -server "$server" -variant "$variant" -addr "$IMAP_ADDR" \
					-lmtp "$LMTP_ADDR" -pid "$SERVER_PID" -conns "$IDLE_CONNS" -idle-wait "${IDLE_WAIT}s" \
					-password "$PASSWORD" "${IDLEMIX[@]}" || true
			done
			stop_server
			log "$server: store size $(du -sh "$dir" 2>/dev/null | cut -f1)"
			drop_store "$dir"
		done
	done
	NUSERS=$USERS
fi

# A large INBOX of small messages (2-4 KiB), filled once per server.
if step big; then
	BIGMIX=(-messages "$BIG_MESSAGES" -seed "$SEED" -users 1 -domain "$DOMAIN" -min-size 2048 -max-size 4096 -huge-frac 0)
	for server in $SERVERS; do
		out_of_time "$server big" && continue
		dir=$WORK/$server-big
		mkdir -p "$dir"
		log "$server: fresh store, $BIG_MESSAGES small messages into user1's INBOX ($BIG_CONC LMTP connections)"
		launch "$server" "$dir" || continue
		if mb "$server big fill" lmtp -kind lmtp-fill -server "$server" -addr "$LMTP_ADDR" -c "$BIG_CONC" "${BIGMIX[@]}"; then
			mb "$server imapbig" imapbig -server "$server" -addr "$IMAP_ADDR" -user "user1@$DOMAIN" -password "$PASSWORD" \
				-expect "$BIG_MESSAGES" || true
		fi
		stop_server
		log "$server: store size $(du -sh "$dir" 2>/dev/null | cut -f1)"
		drop_store "$dir"
	done
fi

# ---------------------------------------------------------------- report

DISK=$(df -P "$WORK" | awk 'NR==2 {print $1}')
OUT_ARGS=()
if [ "$SAVE" = 1 ]; then
	mkdir -p "$ROOT/bench/results"
	OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d).json"
	[ ! -e "$OUT" ] || OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d-%H%M%S).json"
	OUT_ARGS=(-out "$OUT")
fi
echo >&2
"$MB" report -in "$RESULTS" "${OUT_ARGS[@]}" -markdown "$WORK/table.md" \
	-info "command=$COMMAND" -info "messages=$MESSAGES" -info "seed=$SEED" -info "users=$USERS" -info "repeat=$REPEAT" \
	-info "concurrency=$CONCS" -info "steps=$STEPS" -info "imap_clients=$IMAP_CLIENTS" -info "imap_duration_s=$IMAP_DURATION" \
	-info "idle_conns=$IDLE_CONNS" -info "idle_users=$IDLE_USERS" -info "idle_wait_s=$IDLE_WAIT" -info "big_messages=$BIG_MESSAGES" -info "ulimit_n=$(ulimit -n)" \
	-info "dovecot_version=$DOVECOT_VERSION" -info "dovecot_format=$DOVECOT_FORMAT" \
	-info "letterbox_version=$LETTERBOX_VERSION" -info "letterbox_commit=$TREE" \
	-info "workdir_fs=$FSTYPE" -info "workdir_device=$DISK" -info "kernel=$(uname -r)" -info "nproc=$(nproc)" \
	-info "wall_seconds=$(($(date +%s) - START_TIME))"
[ "$SAVE" = 1 ] && log "summary written to ${OUT#"$ROOT"/}"
log "done in $(($(date +%s) - START_TIME))s"
if [ "$FAILED" = 1 ]; then
	log "some steps FAILED (see above)"
	exit 1
fi
