#!/bin/sh
# Initialises the cluster on the first start (superuser password from POSTGRES_PASSWORD; with
# POSTGRES_APP_ROLE and POSTGRES_APP_PASSWORD also that role, owner of POSTGRES_APP_DATABASES, a
# comma-separated list), drops the passwords from the environment, then runs PostgreSQL as
# `postgres` on PGPORT, on 127.0.0.1 only.
set -eu
: "${PGPORT:?PGPORT is required (host networking: choose a free port)}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
DATA=/var/lib/postgresql/data
BIN=/usr/lib/postgresql/15/bin
name_ok() { case "$1" in *[!a-z0-9_]* | "") return 1 ;; esac; }
if [ ! -s "$DATA/PG_VERSION" ]; then
    chown postgres:postgres "$DATA" && chmod 0700 "$DATA"
    pwfile=$(mktemp) && chown postgres "$pwfile"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    runuser -u postgres -- "$BIN/initdb" -D "$DATA" -U postgres --auth=scram-sha-256 \
        --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    if [ -n "${POSTGRES_APP_ROLE:-}" ]; then
        role=$POSTGRES_APP_ROLE
        password=${POSTGRES_APP_PASSWORD:?POSTGRES_APP_PASSWORD is required with the role}
        databases=$(printf '%s' "${POSTGRES_APP_DATABASES:-}" | tr ',' ' ')
        for name in "$role" $databases; do
            name_ok "$name" || { echo "not a plain lowercase name: $name" >&2; exit 2; }
        done
        case "$password" in *"'"* | *"\\"*) echo "POSTGRES_APP_PASSWORD: no quotes" >&2; exit 2 ;; esac
        {   # single-user mode, -j: a statement ends with a semicolon and an empty line
            printf "create role %s login password '%s';\n\n" "$role" "$password"
            for db in $databases; do printf 'create database %s owner %s;\n\n' "$db" "$role"; done
        } | runuser -u postgres -- "$BIN/postgres" --single -j -D "$DATA" postgres >/dev/null
    fi
fi
unset POSTGRES_PASSWORD POSTGRES_APP_PASSWORD
exec runuser -u postgres -- "$BIN/postgres" -D "$DATA" -p "$PGPORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories=/run/postgresql
