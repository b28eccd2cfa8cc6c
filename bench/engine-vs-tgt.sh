#!/usr/bin/env bash
# engine-vs-tgt.sh — isctl's userspace engine and tgt side by side on loopback.
#
# Both targets serve the SAME 1 GiB backing file in /dev/shm; the same clients
# (QEMU's iscsi driver through `qemu-img bench`, and libiscsi's `iscsi-perf`) run each
# case against one target and then the other, round after round, so that outside
# load on this shared machine hits both alike. Prints, per case: IOPS, MiB/s and the
# target's CPU time per I/O (utime+stime of the target process from /proc), the
# median of N runs, and the engine/tgt ratio.
#
#   bench/engine-vs-tgt.sh [-n RUNS] [-s SECONDS] [-o OUT.md] [-d DIR]
#
# -d DIR: the real-disk cases instead (issue 11): a 2 GiB file of random data in DIR (on
# the disk to measure, e.g. /work), durable writes on both sides (the engine's extent
# write_back = false, tgt's LUN bsoflags=sync), the page cache dropped before every run
# (cache-cold reads; needs root), and the device's own limit measured with fio on the
# same file (O_DIRECT: psync QD1, libaio QD32; writes with O_DSYNC like the targets').
#
# Needs: tgt (tgtd, tgtadm), qemu-utils + qemu-block-extra, libiscsi-bin, a release
# build of isctl (built here if ISCTL is not set). Linux only (/proc for CPU time).
# Fairness: tgt's file backing store writes through the page cache without syncing,
# so the engine's extent is given write_back = true (the same durability contract:
# data reaches the disk on SYNCHRONIZE CACHE / FUA). Each target negotiates its own
# parameters (tgt: InitialR2T=Yes, no MaxRecvDataSegmentLength of its own; the engine:
# immediate data, 256 KiB segments): that difference is part of what is measured.
set -euo pipefail

RUNS=3
SECS=4
OUT=""
DISK_DIR=""
while getopts "n:s:o:d:h" opt; do
    case $opt in
        n) RUNS=$OPTARG ;;
        s) SECS=$OPTARG ;;
        o) OUT=$OPTARG ;;
        d) DISK_DIR=$OPTARG ;;
        *) sed -n '2,20p' "$0"; exit 0 ;;
    esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
tools=(tgtd tgtadm qemu-img iscsi-perf)
[ -n "$DISK_DIR" ] && tools+=(fio)
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run tests/install-deps.sh (packages tgt, qemu-utils, qemu-block-extra, libiscsi-bin)" >&2; exit 1; }
done
if [ -z "${ISCTL:-}" ]; then
    (cd "$here" && cargo build --release --quiet)
    ISCTL=$here/target/release/isctl
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ENGINE_PORT=$(free_port)
TGT_PORT=$(free_port)
# tgtadm accepts only small control port numbers (they name its management socket).
TGT_CTL=$(( $$ % 20000 + 1000 ))
if [ -n "$DISK_DIR" ]; then
    [ -w /proc/sys/vm/drop_caches ] || { echo "-d needs root: the page cache is dropped before each run" >&2; exit 1; }
    work=$(mktemp -d "$DISK_DIR/isctl-bench.XXXXXX")
    SIZE=2G WRITE_BACK=false BSOFLAGS=(--bsoflags sync)
else
    work=$(mktemp -d /dev/shm/isctl-bench.XXXXXX)
    SIZE=1G WRITE_BACK=true BSOFLAGS=()
fi
IMG=$work/lun.img
ENGINE_PID=""
TGT_PID=""
cleanup() {
    [ -n "$ENGINE_PID" ] && kill "$ENGINE_PID" 2>/dev/null && wait "$ENGINE_PID" 2>/dev/null
    if [ -n "$TGT_PID" ]; then
        # tgtd does not always exit on SIGTERM while it has targets: give it 2 s.
        kill "$TGT_PID" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$TGT_PID" 2>/dev/null || true
        wait "$TGT_PID" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "preparing a $SIZE backing file in $work ..." >&2
head -c "$SIZE" /dev/urandom > "$IMG"
sync

# tgt: LUN 1 (LUN 0 is its controller).
tgtd -f -C "$TGT_CTL" --iscsi portal=127.0.0.1:"$TGT_PORT" > "$work/tgtd.log" 2>&1 &
TGT_PID=$!
for _ in $(seq 50); do tgtadm -C "$TGT_CTL" --lld iscsi --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
T="tgtadm -C $TGT_CTL --lld iscsi"
$T --op new --mode target --tid 1 -T iqn.2026-11.io.isctl:bench-tgt
$T --op new --mode logicalunit --tid 1 --lun 1 -b "$IMG" "${BSOFLAGS[@]}"
$T --op bind --mode target --tid 1 -I ALL

cat > "$work/model.toml" <<EOF
[portal.bench]
listen = ["127.0.0.1:$ENGINE_PORT"]
[extent.lun]
type = "file"
path = "$IMG"
write_back = $WRITE_BACK
[target."iqn.2026-11.io.isctl:bench"]
luns = { 0 = "lun" }
[[target."iqn.2026-11.io.isctl:bench".group]]
portal = "bench"
EOF
"$ISCTL" --socket "$work/engine.sock" -q serve "$work/model.toml" > "$work/engine.log" 2>&1 &
ENGINE_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$ENGINE_PORT") 2>/dev/null && break; sleep 0.1; done

declare -A URL PID
URL[engine]=iscsi://127.0.0.1:$ENGINE_PORT/iqn.2026-11.io.isctl:bench/0
URL[tgt]=iscsi://127.0.0.1:$TGT_PORT/iqn.2026-11.io.isctl:bench-tgt/1
PID[engine]=$ENGINE_PID
PID[tgt]=$TGT_PID

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# case name | tool | qemu-img args or iscsi-perf args | bytes per I/O
CASES=(
    "4 KiB random read, QD1 (qemu-img)|qi|-d 1 -s 4k -S 104729k|4096"
    "4 KiB random read, QD32 (qemu-img)|qi|-d 32 -s 4k -S 104729k|4096"
    "4 KiB random write, QD32 (qemu-img)|qi|-d 32 -s 4k -S 104729k -w --pattern=165|4096"
    "1 MiB sequential read, QD8 (qemu-img)|qi|-d 8 -s 1M|1048576"
    "1 MiB sequential write, QD8 (qemu-img)|qi|-d 8 -s 1M -w --pattern=165|1048576"
    "4 KiB random read, QD32 (iscsi-perf)|ip|-m 32 -b 8 -r|4096"
    "1 MiB sequential read, QD8 (iscsi-perf)|ip|-m 8 -b 2048|1048576"
)
# Real disk (issue 11's table): durable writes, cache-cold reads. The 4 KiB I/Os are
# 4 KiB-aligned (the step is 26182 pages), as a file system or a database issues them:
# with the in-memory cases' 1 KiB-aligned step every I/O straddles two pages, and on a
# cold cache each write first reads both from the disk (measured: 6.5k against 16k
# durable writes per second for the engine).
DISK_CASES=(
    "4 KiB random write, QD32, durable|qi|-d 32 -s 4k -S 104728k -w --pattern=165|4096"
    "4 KiB random read, QD32, cache-cold|qi|-d 32 -s 4k -S 104728k|4096"
    "4 KiB random read, QD1, cache-cold|qi|-d 1 -s 4k -S 104728k|4096"
    "1 MiB sequential write, QD8, durable|qi|-d 8 -s 1M -w --pattern=165|1048576"
)
if [ -n "$DISK_DIR" ]; then CASES=("${DISK_CASES[@]}"); fi

# One measurement: prints "iops cpu_us_per_io".
measure() {
    local target=$1 tool=$2 args=$3 count=$4 url=${URL[$1]} pid=${PID[$1]}
    local c0 c1 t0 t1 ios secs
    drop_caches
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    if [ "$tool" = qi ]; then
        # shellcheck disable=SC2086
        out=$(qemu-img bench -f raw -c "$count" $args "$url" 2>&1) || { echo "qemu-img bench failed on $target: $out" >&2; exit 1; }
        secs=$(sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
        ios=$count
    else
        # shellcheck disable=SC2086
        out=$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" $args "$url" 2>&1 | tr '\r' '\n') || true
        local avg
        avg=$(grep -o 'iops average [0-9]*' <<<"$out" | tail -1 | awk '{print $3}')
        [ -n "$avg" ] || { echo "iscsi-perf failed on $target: $out" >&2; exit 1; }
        secs=$SECS
        ios=$((avg * SECS))
    fi
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    awk -v ios="$ios" -v s="$secs" -v c=$((c1 - c0)) -v tick="$TICK" \
        'BEGIN { printf "%.0f %.1f\n", ios / s, (c / tick) * 1e6 / ios }'
}

# qemu-img bench runs a count, not a time: calibrate the count per case on the engine.
calibrate() {
    local args=$1 out secs
    # shellcheck disable=SC2086
    out=$(qemu-img bench -f raw -c 2000 $args "${URL[engine]}" 2>&1)
    secs=$(sed -n 's/.*Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    awk -v s="$secs" -v t="$SECS" 'BEGIN { n = int(2000 * t / (s > 0 ? s : 0.001)); if (n < 200) n = 200; print n }'
}

# Real disk: every run starts cache-cold (what the targets read comes from the disk).
drop_caches() {
    if [ -n "$DISK_DIR" ]; then
        sync
        echo 3 > /proc/sys/vm/drop_caches
    fi
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RES
for c in "${CASES[@]}"; do
    IFS='|' read -r name tool args bytes <<<"$c"
    count=0
    [ "$tool" = qi ] && count=$(calibrate "$args")
    for run in $(seq "$RUNS"); do
        for target in engine tgt; do
            r=$(measure "$target" "$tool" "$args" "$count")
            RES["$name|$target|iops"]+="${r% *} "
            RES["$name|$target|cpu"]+="${r#* } "
            echo "  $name  run $run  $target: $r" >&2
        done
    done
done

{
    echo "| case | engine IOPS | engine MiB/s | engine CPU/IO | tgt IOPS | tgt MiB/s | tgt CPU/IO | engine/tgt |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CASES[@]}"; do
        IFS='|' read -r name tool args bytes <<<"$c"
        ei=$(tr ' ' '\n' <<<"${RES["$name|engine|iops"]}" | grep . | median)
        ti=$(tr ' ' '\n' <<<"${RES["$name|tgt|iops"]}" | grep . | median)
        ec=$(tr ' ' '\n' <<<"${RES["$name|engine|cpu"]}" | grep . | median)
        tc=$(tr ' ' '\n' <<<"${RES["$name|tgt|cpu"]}" | grep . | median)
        awk -v n="$name" -v ei="$ei" -v ti="$ti" -v ec="$ec" -v tc="$tc" -v b="$bytes" 'BEGIN {
            printf "| %s | %d | %.0f | %.1f µs | %d | %.0f | %.1f µs | %.2fx |\n",
                n, ei, ei * b / 1048576, ec, ti, ti * b / 1048576, tc, ei / ti }'
    done
    echo
    echo "median of $RUNS runs, ~${SECS}s each, interleaved; $(nproc) CPUs; $(date -u +%Y-%m-%dT%H:%MZ)"
} | tee ${OUT:+"$OUT"}

# Real disk: the device's own limit on the same file, with fio (O_DIRECT; writes also
# O_DSYNC, the durability the targets give), per case of the table, and engine/fio.
if [ -n "$DISK_DIR" ]; then
    FIO_CASES=(
        "--rw=randwrite --bs=4k --ioengine=libaio --iodepth=32 --sync=dsync"
        "--rw=randread --bs=4k --ioengine=libaio --iodepth=32"
        "--rw=randread --bs=4k --ioengine=psync --iodepth=1"
        "--rw=write --bs=1M --ioengine=libaio --iodepth=8 --sync=dsync"
    )
    {
        echo
        echo "| case | device (fio) | fio IOPS | engine/fio |"
        echo "|---|---|---:|---:|"
        for i in "${!CASES[@]}"; do
            IFS='|' read -r name _ <<<"${CASES[$i]}"
            fio_iops=""
            for _ in $(seq "$RUNS"); do
                drop_caches
                # shellcheck disable=SC2086
                out=$(fio --name=device --filename="$IMG" --direct=1 --runtime="$SECS" --time_based \
                    --norandommap --randrepeat=0 --output-format=json ${FIO_CASES[$i]}) \
                    || { echo "fio failed: $out" >&2; exit 1; }
                fio_iops+="$(python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"] + j["write"]["iops"]))' <<<"$out") "
            done
            fi_med=$(tr ' ' '\n' <<<"$fio_iops" | grep . | median)
            ei=$(tr ' ' '\n' <<<"${RES["$name|engine|iops"]}" | grep . | median)
            awk -v n="$name" -v f="${FIO_CASES[$i]}" -v fi="$fi_med" -v ei="$ei" \
                'BEGIN { printf "| %s | `%s` | %d | %.2fx |\n", n, f, fi, ei / fi }'
        done
    } | tee ${OUT:+-a "$OUT"}
    exit 0
fi

# Memory: each target's resident set with 64 sessions logged in (and held).
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hold_rss() {
    local target=$1 port=$2 iqn=$3 fifo=$work/hold-$1
    mkfifo "$fifo"
    python3 "$here/bench/hold-sessions.py" 127.0.0.1 "$port" "$iqn" 64 < "$fifo" > "$work/hold-$1.out" &
    local holder=$!
    exec 7> "$fifo"
    for _ in $(seq 100); do grep -q "logged in" "$work/hold-$1.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "logged in" "$work/hold-$1.out" || { echo "could not log 64 sessions in to $target" >&2; exit 1; }
    echo "$(rss "${PID[$target]}")"
    exec 7>&-
    wait "$holder" 2>/dev/null || true
}
e_rss=$(hold_rss engine "$ENGINE_PORT" iqn.2026-11.io.isctl:bench)
t_rss=$(hold_rss tgt "$TGT_PORT" iqn.2026-11.io.isctl:bench-tgt)
echo "RSS with 64 sessions logged in: engine $((e_rss / 1024)) MiB ($e_rss kB), tgt $((t_rss / 1024)) MiB ($t_rss kB)" | tee ${OUT:+-a "$OUT"}
