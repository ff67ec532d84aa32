#!/bin/sh
# Create the tributary system user before dpkg unpacks files it owns.
set -e
if ! getent group tributary >/dev/null; then
	addgroup --system tributary
fi
if ! getent passwd tributary >/dev/null; then
	adduser --system --ingroup tributary --home /var/lib/tributary --no-create-home \
		--shell /usr/sbin/nologin --gecos "Tributary edge/central" tributary
fi
