<?php
/**
 * ferrocast lifecycle hooks: the application hears of every connection, disconnection,
 * subscription, unsubscription and sign-in (BlazeCast's connection events, what Laravel Reverb
 * users ask for). This example checks each batch's signature and appends its events to a log,
 * one JSON object per line — the place to start for "user connected / left" in PHP.
 *
 * The same file works through php-fpm and as a php-cli child:
 *
 *     "hooks": [{"events": ["connected", "disconnected", "signed_in"],
 *                "handler": "fastcgi", "socket": "/run/php/ferrocast.sock",
 *                "script": "/srv/app/examples/hooks.php"}]
 *     "hooks": [{"handler": "exec",
 *                "command": ["php", "/srv/app/examples/hooks.php"]}]
 *
 * The body is a batch, signed like Pusher webhooks (X-Pusher-Signature: hex HMAC-SHA256 of the
 * body with the app secret; FERROCAST_WEBHOOK_SIGNATURE under exec):
 *
 *     {"time_ms": 1764720000000, "events": [
 *       {"name": "connected", "socket_id": "4242.17", "remote_address": "203.0.113.7",
 *        "protocol": "pusher"},
 *       {"name": "signed_in", "socket_id": "4242.17", "user_id": "42", ...},
 *       {"name": "subscribed", "channel": "private-orders", "socket_id": "4242.17", ...},
 *       {"name": "disconnected", "reason": "peer closed", "duration_secs": 95, ...}]}
 *
 * Environment: PUSHER_APP_SECRET (the app's secret, to check signatures; php-fpm: env[...] in
 * the pool, exec: give it to the command, e.g. ["env", "PUSHER_APP_SECRET=…", "php", …]) and
 * FERROCAST_HOOKS_LOG (where to write; default: the system's temporary directory).
 *
 * Answer: exit 0 (php-cli) or a 2xx status (php-fpm) when the batch is taken; anything else makes
 * ferrocast retry it (webhooks.tries), then drop it, counted. Keep it quick: a slow hook costs
 * batches, never a client's time.
 */

declare(strict_types=1);

ini_set('display_errors', 'stderr');
ini_set('log_errors', '0');

$cli = PHP_SAPI === 'cli';

/** A line for ferrocast's log: stderr under php-cli, the FastCGI error stream under php-fpm. */
function note(string $line): void
{
    if (PHP_SAPI === 'cli') {
        fwrite(STDERR, $line . "\n");
    } else {
        error_log($line);
    }
}

/** Refuses the batch: ferrocast retries it. */
function refuse(int $status, string $why): never
{
    note("hooks.php: $why");
    if (PHP_SAPI === 'cli') {
        exit(1);
    }
    http_response_code($status);
    exit;
}

$body = $cli ? (string) stream_get_contents(STDIN) : (string) file_get_contents('php://input');
$signature = $cli
    ? (string) getenv('FERROCAST_WEBHOOK_SIGNATURE')
    : (string) ($_SERVER['HTTP_X_PUSHER_SIGNATURE'] ?? '');
$secret = (string) getenv('PUSHER_APP_SECRET');
if ($secret === '') {
    refuse(500, 'PUSHER_APP_SECRET is not set: cannot check the signature');
}
if (!hash_equals(hash_hmac('sha256', $body, $secret), $signature)) {
    refuse(401, 'bad signature');
}
$batch = json_decode($body, true);
if (!is_array($batch) || !is_array($batch['events'] ?? null)) {
    refuse(400, 'not a batch of events');
}

$log = (string) getenv('FERROCAST_HOOKS_LOG');
if ($log === '') {
    $log = sys_get_temp_dir() . '/ferrocast-hooks.log';
}
$lines = '';
foreach ($batch['events'] as $event) {
    $event['time_ms'] = $batch['time_ms'] ?? null;
    $lines .= json_encode($event, JSON_UNESCAPED_SLASHES) . "\n";
}
if (file_put_contents($log, $lines, FILE_APPEND | LOCK_EX) === false) {
    refuse(500, "cannot write $log");
}
