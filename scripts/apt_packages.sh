# Sourced by install.sh and test.sh: apt_install PKG... installs the Debian packages that
# are missing (sudo when not root); without apt-get it names them and carries on.
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$(basename "$0"): apt-get not found; install these system packages yourself: $*" >&2
    return 0
  fi
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
