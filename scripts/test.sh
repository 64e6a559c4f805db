#!/usr/bin/env bash
# Every test, on any machine with Rust (the README's test command; .ci/run calls it too).
#
# First it provides what the tests drive from outside, checked by version, not by name:
#   - chromium >= 112 (the web UI tests drive it headless): Debian's package, installed with
#     apt-get when missing or too old; TERN_TEST_CHROMIUM may name another binary.
#   - rabbitmqadmin 2.35.0 (RabbitMQ's Rust CLI, tests/rabbitmqadmin.rs): `cargo install --root`
#     into .tools/rabbitmqadmin-2.35.0 (a few minutes, once per checkout) and called by that
#     path, so no other rabbitmqadmin on the PATH is ever picked up (Debian's rabbitmq-server
#     puts the old Python v1 at /usr/bin/rabbitmqadmin).
# Then it runs `cargo test --workspace`, with any arguments given here added
# (scripts/test.sh -p tern-server --test web_ui).
set -euo pipefail
cd "$(dirname "$0")/.."

RABBITMQADMIN_VERSION=2.35.0
CHROMIUM_MIN_MAJOR=112

say() { echo "scripts/test.sh: $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The major version a Chromium or Chrome binary reports ("Chromium 120.0.6099.224 built on
# Debian ..."), or nothing.
chromium_major() {
  "$1" --version 2>/dev/null | sed -nE 's/^(Chromium|Google Chrome) ([0-9]+)\..*/\2/p' | head -n 1
}

provide_chromium() {
  local chromium=${TERN_TEST_CHROMIUM:-$(command -v chromium || true)}
  local major=""
  [ -n "$chromium" ] && major=$(chromium_major "$chromium")
  if [ "${major:-0}" -ge "$CHROMIUM_MIN_MAJOR" ]; then
    export TERN_TEST_CHROMIUM=$chromium
    return
  fi
  if [ -n "${TERN_TEST_CHROMIUM:-}" ]; then
    say "TERN_TEST_CHROMIUM=$TERN_TEST_CHROMIUM is not Chromium $CHROMIUM_MIN_MAJOR or later"
    exit 1
  fi
  say "installing chromium (Debian package) for the web UI tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  chromium=$(command -v chromium)
  major=$(chromium_major "$chromium")
  if [ "${major:-0}" -lt "$CHROMIUM_MIN_MAJOR" ]; then
    say "the installed $chromium says version '${major:-none}'; the tests need $CHROMIUM_MIN_MAJOR or later"
    exit 1
  fi
  export TERN_TEST_CHROMIUM=$chromium
}

provide_rabbitmqadmin() {
  if [ -n "${TERN_TEST_RABBITMQADMIN:-}" ]; then
    case "$("$TERN_TEST_RABBITMQADMIN" --version 2>/dev/null)" in
      "rabbitmqadmin 2."*) return ;;
      *) say "TERN_TEST_RABBITMQADMIN=$TERN_TEST_RABBITMQADMIN is not rabbitmqadmin 2.x"; exit 1 ;;
    esac
  fi
  local root=$PWD/.tools/rabbitmqadmin-$RABBITMQADMIN_VERSION
  local bin=$root/bin/rabbitmqadmin
  if [ "$("$bin" --version 2>/dev/null)" != "rabbitmqadmin $RABBITMQADMIN_VERSION" ]; then
    say "installing rabbitmqadmin $RABBITMQADMIN_VERSION into $root (cargo install, once)"
    cargo install --locked --quiet rabbitmqadmin --version "$RABBITMQADMIN_VERSION" --root "$root"
  fi
  export TERN_TEST_RABBITMQADMIN=$bin
}

provide_chromium
provide_rabbitmqadmin
say "chromium: $TERN_TEST_CHROMIUM; rabbitmqadmin: $TERN_TEST_RABBITMQADMIN"
exec cargo test --workspace "$@"
