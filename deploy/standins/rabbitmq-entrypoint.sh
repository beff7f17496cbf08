#!/bin/sh
set -eu
# As the official image: a mounted rabbitmq.conf is used as it is.
if [ ! -s /etc/rabbitmq/rabbitmq.conf ]; then
cat > /etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
CONF
fi
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec rabbitmq-server
