#!/usr/bin/env bash
# Makes sure the C libraries of the media codecs are there: libopus and
# libvpx with their pkg-config files (spec §7.6), used by the cgo packages
# internal/media/opus and internal/media/vp8.
#
#   scripts/ensure-codecs.sh         check; when something is missing and we
#                                    are root (or have passwordless sudo),
#                                    apt-get install it; else say exactly what
#                                    to install. Prints a one-line notice when
#                                    the build goes without codecs.
#   scripts/ensure-codecs.sh --test  the same, and ffmpeg too (the media
#                                    end-to-end tests decode with it).
#   scripts/ensure-codecs.sh --tags  print the go flag this machine needs:
#                                    nothing, or -tags=nocodecs (or noopus /
#                                    novpx when just one library is missing).
#
# It never fails the build: a build without codecs is allowed (§7.9), and
# `go build -tags nocodecs ./...` or `CGO_ENABLED=0 go build ./...` always
# work. Set ENSURE_CODECS_NO_INSTALL=1 to never install anything.
set -uo pipefail
export PATH="/usr/local/go/bin:$PATH"

cgo_on() { [ "$(go env CGO_ENABLED 2>/dev/null)" = 1 ]; }
have() { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1" 2>/dev/null; }

# missing prints the Debian packages still needed, space-separated.
missing() {
  local m=()
  command -v pkg-config >/dev/null 2>&1 || m+=(pkg-config)
  have opus || m+=(libopus-dev)
  have vpx || m+=(libvpx-dev)
  # --test: the media end-to-end tests decode with an independent decoder.
  if [ -n "${want_tools:-}" ]; then command -v ffmpeg >/dev/null 2>&1 || m+=(ffmpeg); fi
  echo "${m[*]}"
}

# tags prints the build-tag flag for the codecs that are missing.
tags() {
  cgo_on || return 0 # without cgo the codec-less twins build anyway
  local o=1 v=1
  have opus || o=0
  have vpx || v=0
  if [ $o = 0 ] && [ $v = 0 ]; then
    echo "-tags=nocodecs"
  elif [ $o = 0 ]; then
    echo "-tags=noopus"
  elif [ $v = 0 ]; then
    echo "-tags=novpx"
  fi
}

want_tools=
if [ "${1:-}" = "--test" ]; then
  want_tools=1
fi

if [ "${1:-}" = "--tags" ]; then
  tags
  exit 0
fi

if ! cgo_on; then
  echo "notice: cgo is disabled (CGO_ENABLED=0 or no C compiler): building without media codecs (spec §7.9)" >&2
  exit 0
fi

need=$(missing)
if [ -n "$need" ] && [ -z "${ENSURE_CODECS_NO_INSTALL:-}" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
      sudo=(sudo -n)
    fi
  fi
  if [ "$(id -u)" = 0 ] || [ ${#sudo[@]} -gt 0 ]; then
    echo "ensure-codecs: installing $need with apt-get" >&2
    log=$(mktemp)
    # shellcheck disable=SC2086 # $need is a list of package names
    install() { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need >"$log" 2>&1; }
    if ! install; then
      # Usually an empty or stale package list: refresh it once and retry.
      "${sudo[@]}" apt-get update -q >>"$log" 2>&1
      install || { echo "ensure-codecs: apt-get failed:" >&2; tail -n 5 "$log" >&2; }
    fi
    rm -f "$log"
    need=$(missing)
  fi
fi

if [ -n "$need" ]; then
  echo "ensure-codecs: to build with media codecs install: $need" >&2
  echo "  (Debian/Ubuntu: sudo apt-get install -y $need; Fedora: opus-devel libvpx-devel pkgconf; macOS: brew install opus libvpx pkg-config)" >&2
  case "$(tags)" in
    -tags=noopus) echo "notice: libopus missing: building without Opus (-tags noopus), raw audio is not transcoded (spec §7.9)" >&2 ;;
    -tags=novpx) echo "notice: libvpx missing: building without VP8 (-tags novpx), raw video is not transcoded (spec §7.9)" >&2 ;;
    *) echo "notice: libopus/libvpx missing: building without media codecs (-tags nocodecs), raw media is not transcoded (spec §7.9)" >&2 ;;
  esac
fi
exit 0
