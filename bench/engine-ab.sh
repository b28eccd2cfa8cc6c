#!/usr/bin/env bash
# engine-ab.sh — two builds of the engine side by side on the I/O-worker path: what a
# change to the connection or worker code costs or saves, with the device out of the way.
#
# Both binaries serve the same 1 GiB file (DIR, default /work or the current directory)
# with write_back = true and the page cache warm, so each command goes through the LU's
# I/O workers (the file is not in memory as far as the engine is concerned: it is on a
# disk) but the device never waits. libiscsi's `iscsi-perf` (4 KiB random reads, QD32)
# and `qemu-img bench` (4 KiB writes, QD32) run against A, then B, round after round
# (which goes first alternates). Prints per case the median IOPS and the engine's CPU
# time per I/O (utime+stime from /proc) of each, and B/A.
#
#   bench/engine-ab.sh A_BINARY B_BINARY [-n RUNS] [-s SECONDS] [-d DIR] [-D]
#
# -D: durable writes instead (write_back = false: every write is on the disk before its
# response, the LU's group commit), the write case then measures the device path too.
#
# Needs libiscsi-bin, qemu-utils + qemu-block-extra. Linux only (/proc for CPU time).
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,17p' "$0"; exit 2; }
declare -A BIN=([A]=$(realpath "$1") [B]=$(realpath "$2"))
shift 2
RUNS=6
SECS=4
DIR=/work
[ -d "$DIR" ] || DIR=$PWD
WRITE_BACK=true
while getopts "n:s:d:Dh" opt; do
    case $opt in
        n) RUNS=$OPTARG ;;
        s) SECS=$OPTARG ;;
        d) DIR=$OPTARG ;;
        D) WRITE_BACK=false ;;
        *) sed -n '2,17p' "$0"; exit 0 ;;
    esac
done
for t in iscsi-perf qemu-img; do
    command -v $t >/dev/null || { echo "missing $t: run tests/install-deps.sh" >&2; exit 1; }
done

work=$(mktemp -d "$DIR/isctl-ab.XXXXXX")
declare -A PORT=([A]=43261 [B]=43262) PID
cleanup() {
    for v in A B; do [ -n "${PID[$v]:-}" ] && kill "${PID[$v]}" 2>/dev/null; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

IMG=$work/img
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none
for v in A B; do
    cat > "$work/$v.toml" <<EOT
[portal.p]
listen = ["127.0.0.1:${PORT[$v]}"]
[extent.lun]
type = "file"
path = "$IMG"
write_back = $WRITE_BACK
[target."iqn.2026-11.io.isctl:ab"]
luns = { 0 = "lun" }
[[target."iqn.2026-11.io.isctl:ab".group]]
portal = "p"
EOT
    "${BIN[$v]}" --socket "$work/$v.sock" -q serve "$work/$v.toml" > "$work/$v.log" 2>&1 &
    PID[$v]=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"${PORT[$v]}") 2>/dev/null && break; sleep 0.1; done
done
cat "$IMG" > /dev/null # warm: the device must not be what is measured

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
WRITES=100000
[ "$WRITE_BACK" = false ] && WRITES=30000

# One measurement: prints "iops cpu_us_per_io".
measure() {
    local v=$1 case=$2 url=iscsi://127.0.0.1:${PORT[$1]}/iqn.2026-11.io.isctl:ab/0
    local c0 c1 out ios secs
    c0=$(cpu_ticks "${PID[$v]}")
    if [ "$case" = read ]; then
        out=$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" -m 32 -b 8 -r "$url" 2>&1 | tr '\r' '\n') || true
        ios=$(( $(grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}') * SECS ))
        secs=$SECS
    else
        out=$(qemu-img bench -f raw -w -c $WRITES -d 32 -s 4096 "$url" 2>&1)
        secs=$(sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
        ios=$WRITES
    fi
    c1=$(cpu_ticks "${PID[$v]}")
    awk -v ios="$ios" -v s="$secs" -v c=$((c1 - c0)) -v tick="$TICK" \
        'BEGIN { if (ios == 0 || s == 0) exit 1; printf "%.0f %.1f\n", ios / s, (c / tick) * 1e6 / ios }'
}

median() { sort -n | awk '{v[NR] = $1} END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A IOPS CPU
for r in $(seq "$RUNS"); do
    order="A B"; [ $((r % 2)) -eq 0 ] && order="B A"
    for case in read write; do
        for v in $order; do
            read -r iops cpu < <(measure "$v" "$case")
            IOPS[$case.$v]+="$iops "
            CPU[$case.$v]+="$cpu "
            echo "  $case run $r $v: $iops IOPS, $cpu µs CPU/IO" >&2
        done
    done
done

echo
echo "| case | A IOPS | B IOPS | B/A | A CPU/IO | B CPU/IO | B/A |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for case in read write; do
    name="4 KiB random read, QD32 (iscsi-perf)"
    [ "$case" = write ] && name="4 KiB sequential write, QD32 (qemu-img)"
    [ "$case" = write ] && [ "$WRITE_BACK" = false ] && name="4 KiB sequential write, QD32, durable (qemu-img)"
    ia=$(tr ' ' '\n' <<<"${IOPS[$case.A]}" | grep . | median)
    ib=$(tr ' ' '\n' <<<"${IOPS[$case.B]}" | grep . | median)
    ca=$(tr ' ' '\n' <<<"${CPU[$case.A]}" | grep . | median)
    cb=$(tr ' ' '\n' <<<"${CPU[$case.B]}" | grep . | median)
    awk -v n="$name" -v ia="$ia" -v ib="$ib" -v ca="$ca" -v cb="$cb" \
        'BEGIN { printf "| %s | %.0f | %.0f | %.2fx | %.1f µs | %.1f µs | %.2fx |\n", n, ia, ib, ib / ia, ca, cb, cb / ca }'
done
echo
echo "median of $RUNS runs; A = ${BIN[A]}, B = ${BIN[B]}; $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ)"
