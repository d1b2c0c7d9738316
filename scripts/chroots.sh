# Sourced by scripts/install-deps.
# ensure_chroots DIR SUITE...: a Debian chroot per SUITE at DIR/SUITE holding
# that suite's rabbitmq-server (the test harness runs RabbitMQ of every
# version Debian ships in them: tests/e2e/harness/versions.rs). Missing ones
# are built in parallel (network- and dpkg-bound: about the time of the
# slowest instead of the sum); each is built in DIR/SUITE.tmp and renamed
# when complete, so an interrupted build is never mistaken for a chroot.
ensure_chroots() {
    local dir=$1 suite pids=() failed=0
    shift
    mkdir -p "$dir"
    for suite in "$@"; do
        [ -x "$dir/$suite/usr/lib/rabbitmq/bin/rabbitmq-server" ] && ensure_hosts "$dir/$suite" && continue
        build_chroot "$dir" "$suite" > "$dir/$suite.log" 2>&1 &
        pids+=("$!:$suite")
    done
    for p in "${pids[@]}"; do
        if ! wait "${p%%:*}"; then
            echo "building the ${p#*:} chroot failed; its log:" >&2
            tail -20 "$dir/${p#*:}.log" >&2
            failed=1
        fi
    done
    return $failed
}

build_chroot() {
    local dir=$1 suite=$2 mirror=()
    echo "building a $suite chroot with RabbitMQ in $dir/$suite (mmdebstrap)" >&2
    # The mirror this machine's apt uses, if it names one.
    local uri
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] && mirror=("$uri")
    rm -rf "${dir:?}/$suite.tmp"
    local started=$SECONDS
    # sid's Release file may be past its Valid-Until; the rest is signed.
    mmdebstrap --variant=apt --include=rabbitmq-server,ca-certificates \
        --aptopt 'Acquire::Check-Valid-Until "false"' \
        "$suite" "$dir/$suite.tmp" "${mirror[@]}"
    ensure_hosts "$dir/$suite.tmp"
    mv "$dir/$suite.tmp" "$dir/$suite"
    echo "built the $suite chroot in $((SECONDS - started)) s" >&2
}

# Nodes are named name@localhost: the chroot must resolve it.
ensure_hosts() {
    [ -f "$1/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$1/etc/hosts"
}
