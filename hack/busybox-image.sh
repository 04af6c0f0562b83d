#!/usr/bin/env bash
# Builds a container image from busybox-static (no registry is needed):
# a root filesystem with /bin/busybox and its applet links, imported into
# Podman's default storage. Usage: busybox-image.sh [NAME] (default
# localhost/busybox:latest). Does nothing when the image exists.
set -euo pipefail
name=${1:-localhost/busybox:latest}
if podman image exists "$name"; then
	exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/tmp" "$dir/rootfs/www" "$dir/rootfs/etc"
cp /bin/busybox "$dir/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
	[ "$applet" = busybox ] || ln -s busybox "$dir/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/rootfs/etc/passwd"
echo 'root:x:0:' >"$dir/rootfs/etc/group"
tar -C "$dir/rootfs" -cf "$dir/rootfs.tar" .
podman import --quiet --change 'CMD ["/bin/sh"]' "$dir/rootfs.tar" "$name" >/dev/null
echo "built image $name from /bin/busybox"
