<?php
/**
 * ferrocast session validation handler (CarbonPHP's $validateUserCallback, as a program).
 *
 * ferrocast runs this once per WebSocket handshake, before it answers 101: through php-fpm, or
 * in a php-cli child process. The same file works both ways:
 *
 *     "validate": {"handler": "fastcgi", "socket": "/run/php/ferrocast.sock",
 *                  "script": "/srv/app/examples/validate.php"}
 *     "validate": {"handler": "exec",
 *                  "command": ["php", "-d", "session.save_path=/var/lib/php/sessions",
 *                              "/srv/app/examples/validate.php"]}
 *
 * What it gets in $_SERVER: what a web request would give it — HTTP_COOKIE, HTTP_AUTHORIZATION,
 * HTTP_USER_AGENT (every request header as HTTP_*), REQUEST_METHOD, REQUEST_URI, QUERY_STRING,
 * REMOTE_ADDR, REMOTE_PORT, SERVER_PORT — and FERROCAST_SOCKET_ID; nothing else: none of the
 * server's own environment (secrets included) reaches it. php-fpm fills $_COOKIE, php-cli does
 * not, so the cookie header is parsed here.
 *
 * What it answers (first line of output; with exec, the exit status too):
 *   - the user id (and exit 0)        → the connection is accepted (101) and belongs to that user
 *   - "forbidden", or status 403      → 403
 *   - anything else / no output       → 401
 * It must answer within validate_timeout_secs (default 5), or it is killed and the client gets 401.
 *
 * The session is only read (read_and_close): the web application keeps writing it, and the lock
 * of PHP's files handler is released at once. Run ferrocast as the web server's user (or a member
 * of its group with readable session files), or the session files cannot be opened.
 */

declare(strict_types=1);

// Messages for the operator go to ferrocast's log; the output is the answer.
ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');

/** A line for ferrocast's log: stderr under php-cli, the FastCGI error stream under php-fpm. */
function note(string $line): void
{
    if (PHP_SAPI === 'cli') {
        fwrite(STDERR, $line . "\n");
    } else {
        error_log($line);
    }
}

// session_name() is "PHPSESSID" unless session.name says otherwise (php.ini or -d).
$cookieName = session_name();

/** Cookie header → [name => value], like PHP fills $_COOKIE for a web request. */
function parse_cookie_header(string $header): array
{
    $cookies = [];
    foreach (explode(';', $header) as $pair) {
        $pair = trim($pair);
        if ($pair === '' || !str_contains($pair, '=')) {
            continue;
        }
        [$name, $value] = explode('=', $pair, 2);
        $name = trim($name);
        if ($name !== '' && !array_key_exists($name, $cookies)) {
            $cookies[$name] = urldecode(trim($value, " \t\""));
        }
    }
    return $cookies;
}

$cookies = parse_cookie_header($_SERVER['HTTP_COOKIE'] ?? '');
$sessionId = $cookies[$cookieName] ?? '';

// Only what PHP itself would accept as a session id; anything else is not logged in.
if (!preg_match('/^[A-Za-z0-9,-]{1,128}$/', $sessionId)) {
    note("validate.php: no usable $cookieName cookie from {$_SERVER['REMOTE_ADDR']}");
    exit(1);
}

// The session is only read: no cookie or cache header is sent back.
ini_set('session.use_cookies', '0');
ini_set('session.use_only_cookies', '0');
ini_set('session.use_strict_mode', '0'); // the id comes from the web app's own cookie
ini_set('session.cache_limiter', '');

// The files handler creates an empty session file for an id it does not know, even with
// read_and_close: look first, so a made-up cookie leaves nothing behind.
$savePath = (string)session_save_path();
if (session_module_name() === 'files' && !str_contains($savePath, ';')) {
    $file = ($savePath !== '' ? $savePath : sys_get_temp_dir()) . '/sess_' . $sessionId;
    if (!is_file($file)) {
        note("validate.php: unknown session from {$_SERVER['REMOTE_ADDR']}");
        exit(1);
    }
}

session_id($sessionId);
if (!session_start(['read_and_close' => true])) {
    note("validate.php: cannot read session $sessionId");
    exit(1);
}

if (!empty($_SESSION['banned'])) {
    echo "forbidden\n";
    exit(1);
}

$userId = $_SESSION['user_id'] ?? $_SESSION['id'] ?? null;
if ($userId === null || $userId === '' || !is_scalar($userId)) {
    exit(1); // a session, but nobody logged in: 401
}

// One line: the user id. ferrocast keeps it for routing (FERROCAST_USER_ID) and for the per-user
// FIFO <fifo dir>/users/<id>.fifo.
echo $userId, "\n";
exit(0);
