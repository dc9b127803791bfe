#!/usr/bin/env bash
# Security and bad input: an unknown key gets nothing through in either role, a subscriber's
# key cannot publish, a publisher's key cannot subscribe, and junk bytes thrown at both
# endpoints leave the broker serving the legitimate clients.
source "$(dirname "$0")/lib.sh" "$1"

master=$ROOT/vault.db
make_keys || { log "keygen failed"; exit 1; }
sqlite3 -cmd ".timeout 10000" "$master" "CREATE TABLE secrets(id INTEGER PRIMARY KEY, value TEXT);
                   INSERT INTO secrets VALUES (1, 'one'), (2, 'two');"
cp "$master" "$ROOT/intruder.db"
cp "$master" "$ROOT/stranger.db"

start_broker || { log "broker did not start"; cat "$ROOT/broker.log"; exit 1; }
start_publisher pub "$master" pub1
start_subscriber good "$ROOT/good.db" sub1 --stream vault
start_subscriber stranger_sub "$ROOT/stranger-slave.db" stranger --stream vault
start_subscriber publisher_as_sub "$ROOT/pub-slave.db" pub2 --stream vault
start_publisher sub_as_pub "$ROOT/intruder.db" sub2 --stream intruder
start_publisher stranger_pub "$ROOT/stranger.db" stranger --stream strangers

check "the authorised subscriber converges" wait_until 20 tables_equal "$master" "$ROOT/good.db" secrets

junk() {   # junk PORT: random bytes, a fake ZMTP greeting, and an oversized length
    head -c 65536 /dev/urandom >/dev/tcp/127.0.0.1/"$1" 2>/dev/null
    printf '\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00CURVE\x00\x00\x00junk' \
        >/dev/tcp/127.0.0.1/"$1" 2>/dev/null
    printf '\xdd\xff\xff\xff\xff' >/dev/tcp/127.0.0.1/"$1" 2>/dev/null
    oversized "$1"
    return 0
}

# oversized PORT: a well-formed ZMTP 3.0 CURVE greeting (signature, version, mechanism, filler:
# 64 bytes), then a long frame header that declares 2^48 bytes: ZMQ_MAXMSGSIZE must refuse
# it before anything is allocated for it.
oversized() {
    {
        printf '\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00'
        printf 'CURVE'; head -c 15 /dev/zero
        head -c 32 /dev/zero
        printf '\x06\x00\x01\x00\x00\x00\x00\x00\x00'
        head -c 4096 /dev/urandom
    } >/dev/tcp/127.0.0.1/"$1" 2>/dev/null
}
for _ in $(seq 1 20); do junk "$PORT"; junk $((PORT + 1)); done
check "the broker survives junk on both endpoints" running broker

sqlite3 -cmd ".timeout 10000" "$master" "INSERT INTO secrets VALUES (3, 'three'); UPDATE secrets SET value = 'uno' WHERE id = 1;"
check "after the junk the broker still replicates new writes" \
    wait_until 20 tables_equal "$master" "$ROOT/good.db" secrets

check "a subscriber's key that publishes is refused: the publisher stops with an error" \
    wait_until 20 bash -c "! kill -0 ${PIDS[sub_as_pub]} 2>/dev/null"
check "nothing from the subscriber's key was stored" test "$(head_of intruder)" == 0
check "nothing from an unknown publisher key was stored" test "$(head_of strangers)" == 0
check "an unknown subscriber key received no row" \
    test "$(count_rows "$ROOT/stranger-slave.db" secrets)" == 0
check "a publisher's key cannot subscribe" test "$(count_rows "$ROOT/pub-slave.db" secrets)" == 0
check "the broker reports a reason for the refused publisher" \
    grep -qi "publish" "$ROOT/sub_as_pub.log"
check "the broker is still running" running broker
finish
