#!/bin/sh
# Installs imds-tun as a service, and uninstalls exactly what it installed.
#
#   sudo install/install.sh                      build (cargo, release) and install to /usr/local
#   sudo install/install.sh --binary ./imds-tun  install a binary built elsewhere
#   sudo install/install.sh --uninstall          remove what the install added (an edited
#                                                configuration is kept)
#   sudo install/install.sh --uninstall --purge  ... and the configuration (edited or not) and
#                                                the signing keys (/var/lib/imds-tun)
#
# Options: --prefix DIR (default /usr/local), --root DIR (install into DIR as if it were /,
# for packaging and tests: no systemctl start, no daemon-reload), --no-enable (install the unit
# but do not enable or start it).
#
# What it installs: PREFIX/bin/imds-tun, the systemd unit (/etc/systemd/system/imds-tun.service,
# its ExecStart pointing at PREFIX), the man page and bash completion under PREFIX/share, and
# /etc/imds-tun/config.json from `imds-tun default-config` only if there is none. Every file and
# directory it creates is listed in PREFIX/share/imds-tun/install-manifest, with the checksum of
# the configuration it wrote; --uninstall removes those and nothing else (a directory only when
# empty), and the configuration only while it still has that checksum, unless --purge.
set -eu

prefix=/usr/local
root=
binary=
action=install
purge=no
enable=yes

usage() { sed -n '2,/^set -eu/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=yes; shift ;;
    --no-enable) enable=no; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
if [ -n "$root" ]; then
  [ -d "$root" ] || die "--root $root: no such directory"
  root=$(cd "$root" && pwd)
fi

here=$(cd "$(dirname "$0")" && pwd)
manifest_rel=$prefix/share/imds-tun/install-manifest
manifest=$root$manifest_rel
unit_rel=/etc/systemd/system/imds-tun.service
config_rel=/etc/imds-tun/config.json

# systemd is the service manager of this system (not of a --root tree).
systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# Creates directory $1 (relative to the root) and its missing parents, recording each one made.
make_dir() {
  d=$1 missing=
  while [ ! -d "$root$d" ]; do missing="$d $missing"; d=$(dirname "$d"); done
  for d in $missing; do
    mkdir -m 0755 "$root$d"
    echo "dir $d" >> "$new"
  done
}

# Installs file $2 (relative to the root) from $1 with mode $3, recording it.
put_file() {
  make_dir "$(dirname "$2")"
  [ -e "$root$2" ] && ! grep -qx "file $2" "$manifest" 2>/dev/null \
    && die "$root$2 exists and was not installed by this script; remove it or use another --prefix"
  install -m "$3" "$1" "$root$2"
  grep -qx "file $2" "$new" || echo "file $2" >> "$new"
}

install_all() {
  if [ -z "$binary" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust, or pass --binary PATH"
    (cd "$here/.." && cargo build --release --locked) || die "cargo build failed"
    binary=$here/../target/release/imds-tun
  fi
  [ -x "$binary" ] || die "$binary is not an executable"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  new=$tmp/manifest
  # Entries of an earlier install carry over, so a re-install never forgets what it made.
  if [ -f "$manifest" ]; then cp "$manifest" "$new"; else : > "$new"; fi
  make_dir "$(dirname "$manifest_rel")"

  put_file "$binary" "$prefix/bin/imds-tun" 0755
  "$binary" man > "$tmp/imds-tun.1"
  put_file "$tmp/imds-tun.1" "$prefix/share/man/man1/imds-tun.1" 0644
  "$binary" completions bash > "$tmp/imds-tun.bash"
  put_file "$tmp/imds-tun.bash" "$prefix/share/bash-completion/completions/imds-tun" 0644
  sed "s|/usr/local/bin/imds-tun|$prefix/bin/imds-tun|g" "$here/imds-tun.service" > "$tmp/unit"
  put_file "$tmp/unit" "$unit_rel" 0644

  if [ -e "$root$config_rel" ]; then
    echo "keeping the existing $config_rel"
  else
    "$binary" default-config > "$tmp/config.json"
    "$binary" check "$tmp/config.json" >/dev/null
    put_file "$tmp/config.json" "$config_rel" 0644
    sum=$(sha256sum "$root$config_rel" | cut -d' ' -f1)
    echo "config $config_rel $sum" >> "$new"
  fi

  if [ "$enable" = yes ] && [ -z "$root" ] && systemd_running; then
    systemctl daemon-reload
    systemctl enable --now imds-tun.service
    echo "enabled and started imds-tun.service (systemctl status imds-tun)"
  elif [ "$enable" = yes ] && command -v systemctl >/dev/null 2>&1; then
    # Offline (--root, or no systemd running): the enablement symlink only.
    systemctl --root="${root:-/}" enable imds-tun.service >/dev/null 2>&1 \
      && echo "enabled imds-tun.service (it starts at the next boot)"
  fi
  install -m 0644 "$new" "$manifest"
  echo "installed imds-tun $("$binary" --version | cut -d' ' -f2-) to $root$prefix"
  echo "undo with: $0 --uninstall${root:+ --root $root}$( [ "$prefix" = /usr/local ] || echo " --prefix $prefix")"
}

uninstall_all() {
  [ -f "$manifest" ] || die "no install manifest at $manifest: nothing installed by this script"
  if systemd_running; then
    systemctl disable --now imds-tun.service 2>/dev/null || true
  elif command -v systemctl >/dev/null 2>&1; then
    systemctl --root="${root:-/}" disable imds-tun.service >/dev/null 2>&1 || true
  fi
  written=$(grep "^config $config_rel " "$manifest" | cut -d' ' -f3 || true)
  grep '^file ' "$manifest" | cut -d' ' -f2 | while read -r path; do
    if [ "$path" = "$config_rel" ] && [ "$purge" = no ] && [ -f "$root$path" ] \
      && [ "$(sha256sum "$root$path" | cut -d' ' -f1)" != "$written" ]; then
      echo "keeping $root$path: it was edited since the install (--purge removes it)"
    else
      rm -f "$root$path"
    fi
  done
  if [ "$purge" = yes ]; then
    # The configuration whoever wrote it (a kept one from an earlier install included), and
    # what the service itself made: its signing keys, and its record if it never stopped.
    rm -f "$root$config_rel"
    rmdir "$root$(dirname "$config_rel")" 2>/dev/null || true
    rm -rf "$root/var/lib/imds-tun" "$root/run/imds-tun"
  fi
  # Directories last, deepest first, and only when empty (a kept file keeps its directory).
  dirs=$(grep '^dir ' "$manifest" | cut -d' ' -f2 | sort -r)
  rm -f "$manifest"
  for d in $dirs; do rmdir "$root$d" 2>/dev/null || true; done
  if systemd_running; then systemctl daemon-reload; fi
  echo "uninstalled imds-tun from $root$prefix"
}

case "$action" in
  install) install_all ;;
  uninstall) uninstall_all ;;
esac
