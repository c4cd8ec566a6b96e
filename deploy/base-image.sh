#!/usr/bin/env bash
# A Debian bookworm base image from Debian packages alone (no registry pull), for machines that cannot
# reach Docker Hub: python3 3.11 with venv, CA certificates, OpenMP. Usable as DOCSORT_BASE_IMAGE and as
# the base of deploy/test-images/*. Needs root, mmdebstrap and a Debian mirror; about a minute.
#
#   deploy/base-image.sh [NAME]      (default docsort-base:bookworm; kept if it exists, unless --force)
set -euo pipefail
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
name="${1:-docsort-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
if [ "$force" = 0 ] && docker image inspect "$name" >/dev/null 2>&1; then
  echo "$name exists"
  exit 0
fi
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,ca-certificates,libgomp1 \
  bookworm - \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main" \
  | docker import \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      - "$name"
echo "$name built"
