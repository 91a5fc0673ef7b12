#!/bin/sh
# ferrocast application router, without PHP.
#
#   "route": {"handler": "exec", "command": ["/bin/sh", "/srv/app/examples/route.sh"]}
#
# Run once per text message of a raw-mode client (not for `ping`, which the server answers).
# REQUEST_URI is the message (it is also on stdin), FERROCAST_USER_ID the validated user (else
# the socket id); the handshake's CGI variables are there too. Whatever this prints goes back to
# that client only; no output, a non-zero exit or a crash gets a "[ferrocast] ..." notice instead.
set -u
uri=${REQUEST_URI:-}
user=${FERROCAST_USER_ID:-}

# JSON string escaping for the few characters that need it in these answers.
json() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037'; }

case $uri in
    /whoami)   printf '{"route":"/whoami","user":"%s"}\n' "$(json "$user")" ;;
    /time)     printf '{"route":"/time","time":%s}\n' "$(date +%s)" ;;
    /echo\?text=*)
               printf '{"route":"/echo","echo":"%s"}\n' "$(json "${uri#/echo?text=}")" ;;
    /silent)   ;;  # matched, nothing to say
    *)         printf '{"route":null,"error":"no route","uri":"%s"}\n' "$(json "$uri")" ;;
esac
