#!/usr/bin/env bash
# Builds berth as the image ships it, into $CARGO_TARGET_DIR/dist/berth
# (target/dist/berth by default): the `dist` profile of Cargo.toml, with the
# functions laid out in the order scripts/symbol-order.txt lists. The code
# a serving berth runs then sits together: the kernel maps a binary's code
# 64 KiB at a time around each first touch, and scattered, that touched
# most of the binary (idle RSS 18 MiB; 11 in this order).
#
#   scripts/build-dist.sh [cargo options, e.g. --locked -q]
#
# The list names symbols of this profile, toolchain and Cargo.lock; names it
# no longer finds are skipped, so a stale list only lays out less. Remake
# it with scripts/symbol-order.sh. The ordering is rust-lld's, the default
# linker of x86_64 Linux since Rust 1.90.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ORDER="$ROOT/scripts/symbol-order.txt"
# Cargo does not watch a file named in link arguments: the list's hash among
# the arguments (as a cfg nothing reads) links berth again when it changes.
ORDER_HASH="$(sha256sum "$ORDER" | cut -c1-16)"
cd "$ROOT"
exec cargo rustc --profile dist --bin berth "$@" -- \
    -C link-arg=-Wl,--symbol-ordering-file="$ORDER" \
    -C link-arg=-Wl,--no-warn-symbol-ordering \
    --cfg "symbol_order=\"$ORDER_HASH\""
