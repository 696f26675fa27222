#!/usr/bin/env bash
# Install what itt_sweep.execution needs to run generated code: bubblewrap (the sandbox) and the compilers /
# runtimes of the MBXP languages, plus the npm packages the JavaScript/TypeScript tests `require` and the C#
# stand-in for CompareNetObjects that the C# tests call.
#
# Run:   scripts/install_toolchains.sh                 # every MBXP language (`make toolchains`)
#        scripts/install_toolchains.sh python java     # only these
# Needs: root for apt-get (Debian/Ubuntu); npm for the JS/TS packages. Idempotent: what is present is skipped,
# and apt-get update runs first whenever something is to be installed. Swift has no Debian package: it is
# reported and skipped (its recipe runs wherever swiftc is on PATH).
# npm packages go to $ITT_TOOLCHAIN_DIR/node_modules (default ./.cache/toolchains), which the recipes put on
# NODE_PATH. Afterwards `itt-sweep doctor` (or itt_sweep.execution.doctor()) says which languages are ready; the
# last line, `summary: N languages ready, ...`, counts them (the line `make toolchains` shows).
set -euo pipefail

TOOLCHAIN_DIR="${ITT_TOOLCHAIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/.cache/toolchains}"
ALL_LANGUAGES=(python javascript typescript java kotlin scala csharp cpp perl ruby php go swift)
LANGUAGES=("${@:-${ALL_LANGUAGES[@]}}")

# language -> "what-must-exist=debian-package ..." (a command on PATH, a Perl module, or dpkg:<package>)
declare -A APT=(
  [python]="python3=python3"
  [javascript]="node=nodejs npm=npm"
  [typescript]="node=nodejs npm=npm"
  [java]="javac=default-jdk-headless"
  [cpp]="g++=g++"
  [perl]="perl=perl Data::Compare=libdata-compare-perl"
  [ruby]="ruby=ruby"
  [php]="php=php-cli"
  [go]="go=golang-go"
  [kotlin]="kotlinc=kotlin java=default-jdk-headless"
  [scala]="scalac=scala java=default-jdk-headless"
  [csharp]="mcs=mono-mcs mono=mono-runtime dpkg:mono-devel=mono-devel"
  [swift]=""
)
PYTHON="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
declare -A NPM=(
  [javascript]="lodash@4"
  [typescript]="lodash@4 typescript@5 @types/node@20 mathjs@12 heap-js@2"
)

have() {  # have THING: a command on PATH, (with ::) an installed Perl module, or dpkg:<installed package>
  case "$1" in
    dpkg:*) dpkg -s "${1#dpkg:}" >/dev/null 2>&1 ;;
    *::*) perl -M"$1" -e 1 2>/dev/null ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

packages=()
command -v bwrap >/dev/null 2>&1 || packages+=(bubblewrap)
npm_packages=()
for language in "${LANGUAGES[@]}"; do
  if [[ -z "${APT[$language]+set}" ]]; then
    echo "no toolchain recipe for '$language' (known: ${ALL_LANGUAGES[*]})" >&2
    exit 2
  fi
  if [[ $language == swift ]] && ! have swiftc; then
    echo "swift: cannot be installed on this machine kind (Debian has no swift package); skipped" >&2
  fi
  for pair in ${APT[$language]}; do
    have "${pair%%=*}" || packages+=("${pair#*=}")
  done
  for package in ${NPM[$language]:-}; do
    npm_packages+=("$package")
  done
done

if ((${#packages[@]})); then
  mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
  echo "apt-get install: ${packages[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    echo "need root for apt-get; run: sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
else
  echo "system toolchains: all present"
fi

if ((${#npm_packages[@]})); then
  mapfile -t npm_packages < <(printf '%s\n' "${npm_packages[@]}" | sort -u)
  mkdir -p "$TOOLCHAIN_DIR"
  missing=()
  for spec in "${npm_packages[@]}"; do
    name="${spec%@*}"
    [[ -d "$TOOLCHAIN_DIR/node_modules/$name" ]] || missing+=("$spec")
  done
  if ((${#missing[@]})); then
    echo "npm install into $TOOLCHAIN_DIR: ${missing[*]}"
    [[ -f "$TOOLCHAIN_DIR/package.json" ]] || echo '{"private": true}' >"$TOOLCHAIN_DIR/package.json"
    npm install --prefix "$TOOLCHAIN_DIR" --no-audit --no-fund --silent "${missing[@]}"
  else
    echo "npm packages: all present in $TOOLCHAIN_DIR"
  fi
fi

# A precompiled <bits/stdc++.h> makes each C++ compile ~3x faster. The flags must equal CPP_FLAGS in
# src/itt_sweep/execution/recipes.py, or g++ silently ignores the header.
if [[ " ${LANGUAGES[*]} " == *" cpp "* ]]; then
  pch="$TOOLCHAIN_DIR/pch/bits/stdc++.h.gch"
  includes=$(echo '#include <bits/stdc++.h>' | g++ -std=c++17 -x c++ -H -fsyntax-only - 2>&1)
  header=$(awk '/bits\/stdc\+\+\.h$/ {print $2; exit}' <<<"$includes")
  if [[ -f "$pch" && "$pch" -nt "$header" ]]; then
    echo "c++ precompiled header: present"
  else
    mkdir -p "$(dirname "$pch")"
    g++ -std=c++17 -O1 -x c++-header "$header" -o "$pch.tmp" && mv "$pch.tmp" "$pch"
    echo "c++ precompiled header: built $pch"
  fi
fi

# Harness pieces we compile ourselves, once, into the toolchain dir (execution/toolchains.py, SUPPORTS):
# C#: our stand-in for NuGet's CompareNetObjects (the tests call CompareLogic) and the batch launcher;
# Scala: the driver that settles a batch's compile errors in one JVM.
for language in csharp scala; do
  [[ " ${LANGUAGES[*]} " == *" $language "* ]] || continue
  if [[ -x "$PYTHON" ]]; then
    ITT_TOOLCHAIN_DIR="$TOOLCHAIN_DIR" "$PYTHON" -c \
      "from itt_sweep.execution.toolchains import build_support as b; print('$language support:', b('$language'))"
  else
    echo "$language support: no $PYTHON yet; the executor builds it on first use"
  fi
done

# The executor runs bwrap as an unprivileged user (when root, a leased uid), so probe it as one.
as_user=()
[[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null && as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups)
sandbox=""
if (cd / && "${as_user[@]}" bwrap --unshare-all --die-with-parent --ro-bind / / --proc /proc --dev /dev true); then
  echo "bwrap: works"
else
  echo "bwrap: installed but cannot create namespaces here (execute() will refuse unless allow_unsandboxed)" >&2
  sandbox="; bwrap cannot create namespaces here"
fi

# The line `make toolchains` shows (scripts/step.sh): which of the requested languages can run now, by
# itt_sweep's own check (doctor()) when the venv has it, else by what this script installs being present.
unavailable=()
if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import itt_sweep' 2>/dev/null; then
  report=$(ITT_TOOLCHAIN_DIR="$TOOLCHAIN_DIR" "$PYTHON" -c '
import sys
from itt_sweep.execution.recipes import doctor
report = doctor()
print(" ".join(language for language in sys.argv[1:] if not report.get(language, (False,))[0]))' "${LANGUAGES[@]}")
  read -r -a unavailable <<<"$report"
else
  for language in "${LANGUAGES[@]}"; do
    needs=()
    for pair in ${APT[$language]}; do needs+=("${pair%%=*}"); done
    [[ $language == swift ]] && needs+=(swiftc)
    ready=1
    for thing in "${needs[@]}"; do have "$thing" || ready=0; done
    for spec in ${NPM[$language]:-}; do [[ -d "$TOOLCHAIN_DIR/node_modules/${spec%@*}" ]] || ready=0; done
    ((ready)) || unavailable+=("$language")
  done
fi
n_ready=$((${#LANGUAGES[@]} - ${#unavailable[@]}))
summary="$n_ready language$( ((n_ready == 1)) || echo s) ready"
if ((${#unavailable[@]} == 1)); then
  summary+=", ${unavailable[0]} unavailable on this machine"
elif ((${#unavailable[@]})); then
  summary+=", ${#unavailable[@]} unavailable on this machine: ${unavailable[*]} (itt-sweep doctor says why)"
fi
echo "summary: $summary$sandbox"
