#!/bin/sh
# Stop the services on removal (not on upgrade: postinstall restarts them then).
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
	for unit in tributary-edge.service tributary-central.service; do
		systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
