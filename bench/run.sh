#!/usr/bin/env bash
# bench/run.sh: Letterbox vs Dovecot, side by side in one run.
#
# Delivers the same deterministic message mix over LMTP to each server at
# 1, 8 and 32 connections (a fresh, empty store for every level), then
# downloads the delivered mailboxes over POP3 (1 session, then one session
# per user in parallel), and prints a table with the ratio Letterbox/Dovecot.
# Raw results and server logs stay in a temp dir; a summary JSON goes to
# bench/results/<date>.json. See bench/README.md.
#
# Usage: bench/run.sh [--messages N] [--conc "1 8 32"] [--only dovecot|letterbox] ...
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
STEP_LIMIT=840   # seconds, limit of one mailbench step
MAX_MINUTES=30   # the whole run stops measuring after this long

usage() {
	cat <<EOF
usage: bench/run.sh [options]

  --messages N           messages in the mix (default $MESSAGES; use 500 for a quick run)
  --seed N               PRNG seed of the mix (default $SEED)
  --conc "LIST"          LMTP connection counts (default "$CONCS")
  --users N              bench users; messages go to 1-3 of them (default $USERS)
  --repeat R             run every step R times (interleaved); the table shows the fastest
  --only SERVER          run only dovecot or only letterbox
  --dovecot-format F     maildir or sdbox (default $DOVECOT_FORMAT)
  --workdir DIR          where temp stores go; must be a real disk, not tmpfs
                         (default \$BENCH_WORKDIR or /var/tmp)
  --max-minutes M        stop measuring after M minutes; later steps are skipped
                         (default $MAX_MINUTES; a 10,000-message run takes ~6 on an idle machine)
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
for c in $CONCS; do [[ "$c" =~ ^[0-9]+$ && "$c" -ge 1 ]] || { echo "run.sh: bad --conc entry $c" >&2; exit 2; }; done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER_PID=""
POLICY_RCD_CREATED=0
WORK=""
FAILED=0
START_TIME=$(date +%s)
DEADLINE=$((START_TIME + MAX_MINUTES * 60)) # reset after the builds

log() { printf '== %s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

stop_server() {
	[ -n "$SERVER_PID" ] || return 0
	local pid=$SERVER_PID i
	SERVER_PID=""
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
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_server
	if [ "$POLICY_RCD_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
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
	if command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/lmtp ] && [ -x /usr/lib/dovecot/pop3 ]; then
		return 0
	fi
	[ "$INSTALL" = 1 ] || die "dovecot (dovecot-core, dovecot-lmtpd, dovecot-pop3d) is missing and --no-install was given"
	[ "$(id -u)" = 0 ] || die "installing dovecot needs root"
	log "installing dovecot-core dovecot-lmtpd dovecot-pop3d"
	# Keep the package from starting the system service (Debian's policy-rc.d
	# convention: exit 101 = action forbidden); we run our own instance.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_RCD_CREATED=1
	fi
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-core dovecot-lmtpd dovecot-pop3d >&2
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
# start_SERVER DIR sets SERVER_PID, LMTP_ADDR and POP3_ADDR.

start_dovecot() {
	local dir=$1 lport pport uid gid i loc
	read -r lport pport < <("$MB" freeport -n 2)
	uid=$(id -u vmail)
	gid=$(id -g vmail)
	mkdir -p "$dir/run" "$dir/state" "$dir/mail"
	chown vmail:vmail "$dir/mail"
	: >"$dir/users"
	for i in $(seq 1 "$USERS"); do
		printf 'user%d@%s:{PLAIN}%s:%d:%d::%s/mail/user%d::\n' "$i" "$DOMAIN" "$PASSWORD" "$uid" "$gid" "$dir" "$i" >>"$dir/users"
	done
	chmod 644 "$dir/users"
	case "$DOVECOT_FORMAT" in
	maildir) loc="maildir:~/Maildir" ;;
	sdbox) loc="sdbox:~/sdbox" ;;
	esac
	cat >"$dir/dovecot.conf" <<EOF
# Generated by bench/run.sh: a private Dovecot instance on loopback ports.
base_dir = $dir/run
state_dir = $dir/state
instance_name = lbbench-$$-$(basename "$dir")
protocols = lmtp pop3
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
protocol lmtp {
  postmaster_address = postmaster@$DOMAIN
}
EOF
	dovecot -F -c "$dir/dovecot.conf" >>"$dir/dovecot.out" 2>&1 &
	SERVER_PID=$!
	LMTP_ADDR=127.0.0.1:$lport
	POP3_ADDR=127.0.0.1:$pport
	DOVECOT_VERSION=$(dovecot --version 2>/dev/null || true)
}

start_letterbox() {
	local dir=$1 lport pport i conf=$1/letterbox.toml
	read -r lport pport < <("$MB" freeport -n 2)
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
imap       = ""
imaps      = ""
pop3       = "127.0.0.1:$pport"
pop3s      = ""
EOF
	for i in $(seq 1 "$USERS"); do
		if ! printf '%s\n' "$PASSWORD" | "$LB" user add --config "$conf" "user$i@$DOMAIN" >>"$dir/letterbox.log" 2>&1; then
			cat "$dir/letterbox.log" >&2
			return 1
		fi
	done
	"$LB" serve --config "$conf" >>"$dir/letterbox.log" 2>&1 &
	SERVER_PID=$!
	LMTP_ADDR=127.0.0.1:$lport
	POP3_ADDR=127.0.0.1:$pport
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

LAST_CONC=${CONCS##* }
for c in $CONCS; do
	for rep in $(seq 1 "$REPEAT"); do
		for server in $SERVERS; do
			if [ "$(date +%s)" -ge $((DEADLINE - 20)) ]; then
				log "SKIPPED: $server c=$c run $rep (--max-minutes $MAX_MINUTES reached)"
				FAILED=1
				continue
			fi
			dir=$WORK/$server-c$c-r$rep
			mkdir -p "$dir"
			log "$server: fresh store, LMTP with $c connection(s), $MESSAGES messages (run $rep/$REPEAT)"
			if ! "start_$server" "$dir"; then
				log "FAILED: $server did not start (see $(server_log "$server" "$dir"))"
				FAILED=1
				stop_server
				continue
			fi
			if ! "$MB" wait -addr "$LMTP_ADDR,$POP3_ADDR" -timeout 30s -pid "$SERVER_PID" 2>&1; then
				log "FAILED: $server not ready; last log lines:"
				tail -n 20 "$(server_log "$server" "$dir")" >&2 || true
				tail -n 20 "$dir/dovecot.out" >&2 2>/dev/null || true
				FAILED=1
				stop_server
				continue
			fi
			mb "$server lmtp c=$c" lmtp -server "$server" -addr "$LMTP_ADDR" -c "$c" "${MIXFLAGS[@]}" || true
			if [ "$c" = "$LAST_CONC" ]; then
				log "$server: POP3 download, 1 session, then $USERS in parallel"
				mb "$server pop3 1" pop3 -server "$server" -addr "$POP3_ADDR" -sessions 1 -password "$PASSWORD" -verify-mix "${MIXFLAGS[@]}" || true
				if [ "$USERS" -gt 1 ]; then
					mb "$server pop3 $USERS" pop3 -server "$server" -addr "$POP3_ADDR" -sessions "$USERS" -password "$PASSWORD" -verify-mix "${MIXFLAGS[@]}" || true
				fi
			fi
			stop_server
			log "$server: store size $(du -sh "$dir" 2>/dev/null | cut -f1)"
			if [ "$KEEP" != 1 ]; then rm -rf "$dir/mail" "$dir/data"; fi
		done
	done
done

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
	-info "concurrency=$CONCS" -info "dovecot_version=$DOVECOT_VERSION" -info "dovecot_format=$DOVECOT_FORMAT" \
	-info "letterbox_version=$LETTERBOX_VERSION" -info "letterbox_commit=$TREE" \
	-info "workdir_fs=$FSTYPE" -info "workdir_device=$DISK" -info "kernel=$(uname -r)" -info "nproc=$(nproc)" \
	-info "wall_seconds=$(($(date +%s) - START_TIME))"
[ "$SAVE" = 1 ] && log "summary written to ${OUT#"$ROOT"/}"
log "done in $(($(date +%s) - START_TIME))s"
if [ "$FAILED" = 1 ]; then
	log "some steps FAILED (see above)"
	exit 1
fi
