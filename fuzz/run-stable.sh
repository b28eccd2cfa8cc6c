#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain (libFuzzer with sanitizer coverage,
# without AddressSanitizer, which needs nightly). Usage:
#   fuzz/run-stable.sh TARGET [SECONDS]     TARGET: pdu_decoder | login | negotiation
# With nightly and cargo-fuzz installed, `cargo +nightly fuzz run TARGET` adds ASan.
set -euo pipefail
target=${1:?target: pdu_decoder, login or negotiation}
secs=${2:-60}
cd "$(dirname "$0")"
# --target keeps the instrumentation flags off build scripts.
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing" \
    cargo build --release --target "$triple" --bin "$target"
mkdir -p "corpus/$target"
"target/$triple/release/$target" -max_total_time="$secs" "corpus/$target"
