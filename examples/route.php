<?php
/**
 * ferrocast application router (CarbonPHP's startApplication($uri), as a program).
 *
 * ferrocast runs this for every text message a raw-mode client sends (except `ping`, which the
 * server answers itself), through php-fpm or in a php-cli child process, and sends whatever it
 * prints back to that client only:
 *
 *     "route": {"handler": "fastcgi", "socket": "/run/php/ferrocast.sock",
 *               "script": "/srv/app/examples/route.php"}
 *     "route": {"handler": "exec", "command": ["php", "/srv/app/examples/route.php"]}
 *
 * What it gets, in $_SERVER:
 *   - REQUEST_URI        the message itself (also the body, php://input, for messages that are
 *                        not URIs)
 *   - FERROCAST_USER_ID  the user validate.php returned (else the connection's socket id)
 *   - the handshake's CGI variables: HTTP_COOKIE, QUERY_STRING, REMOTE_ADDR, FERROCAST_SOCKET_ID...
 * and nothing else of the server's environment.
 *
 * Output goes back as one text message (cut at max_worker_output_bytes). No output → the client
 * gets a "[ferrocast] the application produced no output" notice; a non-zero exit, an error
 * status or a crash → a "[ferrocast] the application failed/crashed" notice. The connection stays open either way.
 * No state survives between messages except what you store (session, database, files) — like
 * CarbonPHP's forked startApplication.
 *
 * With "user_fifo": "route", a line written to <fifo dir>/users/<id>.fifo is routed here too, on
 * behalf of that user (FERROCAST_USER_ID set, no handshake variables), and the output goes to all
 * of the user's connections.
 */

declare(strict_types=1);

ini_set('display_errors', 'stderr'); // warnings to ferrocast's log, never to the client

$uri = trim((string)($_SERVER['REQUEST_URI'] ?? ''));
$user = (string)($_SERVER['FERROCAST_USER_ID'] ?? '');

// A JSON message {"route": "/path?query", ...} is routed by its "route" field.
$payload = null;
if ($uri !== '' && $uri[0] === '{') {
    $payload = json_decode($uri, true);
    if (is_array($payload) && isset($payload['route']) && is_string($payload['route'])) {
        $uri = $payload['route'];
    }
}

$path = parse_url($uri, PHP_URL_PATH) ?: '/';
parse_str((string)(parse_url($uri, PHP_URL_QUERY) ?? ''), $query);

/** One JSON answer for this request. */
function reply(array $data): void
{
    echo json_encode($data, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE), "\n";
}

// A tiny startApplication(): match the path, print the answer.
switch (true) {
    case $path === '/whoami':
        reply(['route' => $path, 'user' => $user, 'socket' => $_SERVER['FERROCAST_SOCKET_ID'] ?? null]);
        break;

    case $path === '/time':
        reply(['route' => $path, 'time' => time()]);
        break;

    case $path === '/echo':
        reply(['route' => $path, 'echo' => (string)($query['text'] ?? ($payload['text'] ?? ''))]);
        break;

    case (bool)preg_match('#^/users/(\d+)$#', $path, $m):
        // Here a real application would load the record (and check $user may see it).
        reply(['route' => '/users/{id}', 'id' => (int)$m[1], 'requested_by' => $user]);
        break;

    case $path === '/silent':
        // Matched, but nothing to say: ferrocast tells the client there was no output.
        break;

    default:
        reply(['route' => null, 'error' => 'no route', 'uri' => $uri]);
}
exit(0);
