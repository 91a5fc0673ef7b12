#!/bin/sh
# ferrocast session validation handler, without PHP.
#
#   "validate": {"handler": "exec",
#                "command": ["/bin/sh", "/srv/app/examples/validate.sh", "/var/lib/myapp/sessions"]}
#
# The web application writes one file per session: <session dir>/<session id>, whose first line is
# the user id (or "banned:<id>"). This script finds the session id in the `sid` cookie
# ($HTTP_COOKIE, from the handshake's Cookie header) and answers on stdout:
#   <user id> + exit 0 → 101 (the connection belongs to that user)
#   forbidden + exit 1 → 403
#   anything else      → 401
# The environment holds only the handshake's CGI variables (HTTP_*, REQUEST_URI, QUERY_STRING,
# REMOTE_ADDR, REMOTE_PORT, SERVER_PORT, FERROCAST_SOCKET_ID, PATH): configuration comes as
# arguments. stderr goes to ferrocast's log.
set -u
dir=${1:-/var/lib/myapp/sessions}
cookie=sid

# Cookie: a=1; sid=abc; b=2  →  abc
sid=
old_ifs=$IFS
IFS=';'
for pair in ${HTTP_COOKIE:-}; do
    pair=${pair# }
    case $pair in
        "$cookie="*) sid=${pair#"$cookie="}; break ;;
    esac
done
IFS=$old_ifs

# Session ids are [A-Za-z0-9,-] only: nothing that could walk out of $dir.
case $sid in
    '' | *[!A-Za-z0-9,-]*)
        echo "validate.sh: no usable $cookie cookie from ${REMOTE_ADDR:-?}" >&2
        exit 1 ;;
esac
[ -r "$dir/$sid" ] || exit 1

IFS= read -r user < "$dir/$sid" || [ -n "${user:-}" ] || exit 1
case $user in
    banned:*) echo forbidden; exit 1 ;;
    '') exit 1 ;;
esac
printf '%s\n' "$user"
