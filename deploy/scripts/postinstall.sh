#!/bin/sh
# Make sure the data directories exist with the right owner (also when an operator removed them),
# and tell systemd about new or changed units. Running units are restarted on upgrade so the new
# binary takes over; the log on disk carries every buffered reading across the restart.
set -e
install -d -o tributary -g tributary -m 0750 /var/lib/tributary /var/lib/tributary/edge /var/lib/tributary/central
# Central's API token (central.yaml api_token_file): a random one on first install, readable by
# the service and root only. Consumers pass it with --token-file.
if [ ! -e /etc/tributary/central-api.token ]; then
	umask 027
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/tributary/central-api.token
	echo >> /etc/tributary/central-api.token
	chown root:tributary /etc/tributary/central-api.token
	chmod 0640 /etc/tributary/central-api.token
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null || true
	if [ "$1" = "configure" ] && [ -n "$2" ]; then
		for unit in tributary-edge.service tributary-central.service; do
			if systemctl is-active --quiet "$unit"; then
				systemctl restart "$unit" || true
			fi
		done
	fi
fi
