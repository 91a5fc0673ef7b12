//! Webhooks from the core's side: noticing what happened on an app's channels, deciding what
//! the cluster should fire once, and handing signed batches to workers.

use std::time::Duration;

use serde_json::{Value, json};

use super::hub::ChannelId;
use super::jobs::JobFor;
use super::state::State;
use super::webhooks::{Delivery, Vacating};
use super::{cluster, console};
use crate::config::fastcgi_target;
use crate::job::{Handler, Job, Outcome};

/// How long a node waits, after occupying a channel, for the other nodes to say whether they
/// held it first. Occupancy news crosses Redis in about a millisecond; this leaves room for a
/// busy node.
const OCCUPY_WINDOW: Duration = Duration::from_millis(500);

/// Whether anyone listens to this app's webhooks (cheap: checked before building events).
pub fn enabled(st: &State, app: usize) -> bool {
    let cfg = &st.apps.get(app).cfg;
    cfg.webhooks_enabled && !cfg.webhooks.is_empty()
}

/// Records an event for the app's webhooks that want it.
pub fn emit(st: &mut State, app: usize, event: Value) {
    if !enabled(st, app) {
        return;
    }
    emit_to_targets(st, app, event);
}

/// Records an event for the app's targets (webhooks and hooks) that want it.
pub fn emit_to_targets(st: &mut State, app: usize, event: Value) {
    let target = st.apps.get(app);
    let now = st.clock.now();
    let batching = target.cfg.webhook_batching;
    st.webhooks.emit(app, &target.targets, batching, event, now);
}

/// A channel got its first subscriber on this node.
///
/// With several nodes, the cluster fires `channel_occupied` once: each node tells the others at
/// once when it occupies a channel, waits [`OCCUPY_WINDOW`] for their word, and fires only if
/// no node held the channel earlier (or emptied it within the grace period).
pub fn occupied(st: &mut State, app: usize, id: ChannelId, channel: &str) {
    if !enabled(st, app) {
        return;
    }
    let news = st.webhooks.occupied(app, channel);
    if st.cluster.is_none() {
        if news {
            emit(
                st,
                app,
                json!({"name": "channel_occupied", "channel": channel}),
            );
        }
        return;
    }
    // A quick return within the grace period keeps the earlier occupation's time.
    let at_ms = if news { st.clock.wall_ms() } else { 0 };
    st.hub.set_occupied_at(app, id, at_ms);
    cluster::occupancy(st, app, channel, at_ms, None);
    if news {
        let due = st.clock.now() + OCCUPY_WINDOW;
        st.webhooks.occupy_later(app, channel, at_ms, due);
    }
}

/// A channel lost its last subscriber on this node (announced after the grace period). With
/// several nodes the record is kept, and shown to the others, for a node timeout: long enough
/// for every node to see who emptied the channel last.
pub fn vacated(st: &mut State, app: usize, channel: &str, occupied_at: u64) {
    let grace = Duration::from_millis(st.cfg.webhooks.vacate_grace_ms);
    let keep = st
        .cluster
        .as_ref()
        .map_or(Duration::ZERO, |c| c.node_timeout());
    let when = Vacating {
        grace,
        keep,
        now: st.clock.now(),
        at_ms: st.clock.wall_ms(),
    };
    let at_ms = st.webhooks.vacated(app, channel, occupied_at, when);
    cluster::occupancy(st, app, channel, occupied_at, Some(at_ms));
}

pub fn count(st: &mut State, app: usize, channel: &str, count: usize) {
    if st.webhooks.hold_count(app, channel, count) {
        return;
    }
    emit(
        st,
        app,
        json!({"name": "subscription_count", "channel": channel, "subscription_count": count}),
    );
}

/// Seals due batches and starts sending what is ready. Called every turn while there is work.
pub fn pump(st: &mut State) {
    let now = st.clock.now();
    for (app, channel, at_ms) in st.webhooks.due_occupied(now) {
        if cluster::first_occupation(st, app, &channel, at_ms) {
            emit(
                st,
                app,
                json!({"name": "channel_occupied", "channel": channel}),
            );
        }
        if let Some(n) = st.webhooks.take_held_count(app, &channel) {
            count(st, app, &channel, n);
        }
    }
    for (app, channel, at_ms) in st.webhooks.due_vacated(now) {
        if st.hub.lookup(app, &channel).is_some() {
            st.webhooks.resolve(app, &channel, now);
            continue;
        }
        if cluster::remote_channel(st, app, &channel).0 > 0 {
            // Occupied on another node (as far as its last state says): wait. Whichever node
            // empties the channel last sends the event, so it is sent once.
            continue;
        }
        if !cluster::vacated_later_elsewhere(st, app, &channel, at_ms) {
            emit(
                st,
                app,
                json!({"name": "channel_vacated", "channel": channel}),
            );
        }
        st.webhooks.resolve(app, &channel, now);
    }
    for (app, channel) in std::mem::take(&mut st.webhooks.forgotten) {
        if let Some(cluster) = st.cluster.as_mut() {
            cluster.channel_changed(app, &channel);
        }
    }
    let apps = &st.apps;
    let wall = st.clock.wall_ms();
    st.webhooks.seal(now, wall, &st.cfg.webhooks, |app| {
        apps.get(app).cfg.secret.clone()
    });
    // Leave room for validation and routing: webhooks use at most half the workers.
    let budget = (st.cfg.max_workers / 2).max(1);
    while st.jobs.webhooks_running() < budget {
        let Some(delivery) = st.webhooks.next_ready(now) else {
            break;
        };
        send(st, delivery);
    }
}

fn send(st: &mut State, d: Delivery) {
    let app = st.apps.get(d.app);
    let Some(hook) = app.targets.get(d.hook) else {
        return;
    };
    let timeout = st.cfg.webhooks.timeout_secs;
    let mut env = vec![
        (
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        ),
        ("FERROCAST_WEBHOOK_KEY".to_string(), app.cfg.key.clone()),
        (
            "FERROCAST_WEBHOOK_SIGNATURE".to_string(),
            d.signature.clone(),
        ),
        (
            "FERROCAST_HTTP_TIMEOUT_SECS".to_string(),
            timeout.to_string(),
        ),
        ("CONTENT_TYPE".into(), "application/json".into()),
    ];
    let handler = if !hook.script.is_empty() {
        // What Pusher's POST would carry, as a web server hands it to PHP.
        env.extend([
            ("REQUEST_METHOD".into(), "POST".into()),
            ("HTTP_X_PUSHER_KEY".into(), app.cfg.key.clone()),
            ("HTTP_X_PUSHER_SIGNATURE".into(), d.signature.clone()),
        ]);
        match fastcgi_target(&hook.socket, &hook.address, &hook.script, "webhook") {
            Ok(target) => Handler::FastCgi {
                target,
                script: hook.script.clone().into(),
            },
            Err(e) => return failed(st, d, &e),
        }
    } else if hook.url.is_empty() {
        Handler::Exec {
            argv: hook.exec.clone(),
        }
    } else {
        super::jobs::push_ca_file(&st.cfg, &mut env);
        Handler::Exec {
            argv: vec![
                "/proc/self/exe".into(),
                "http-request".into(),
                "webhook".into(),
                hook.url.clone(),
            ],
        }
    };
    let job = Job {
        handler,
        env,
        stdin: d.body.clone().into_bytes(),
        deadline: Duration::from_secs(timeout + 1),
        max_output: 64 * 1024,
    };
    st.start_job(job, JobFor::Webhook(d));
}

/// A webhook job ended.
pub fn finished(st: &mut State, d: Delivery, outcome: Outcome) {
    let reason = match outcome {
        Outcome::Exited { code: 0, .. }
        | Outcome::Answered {
            status: 200..=299, ..
        } => {
            st.webhooks.sent += 1;
            let detail = format!("sent a batch for app {}", st.apps.get(d.app).cfg.id);
            console::event(st, "webhook", None, None, None, Some(&detail));
            return;
        }
        Outcome::Exited { code, .. } => format!("receiver failed or refused (exit {code})"),
        Outcome::Answered { status, .. } => format!("receiver answered {status}"),
        Outcome::Signaled { signal, .. } => format!("sender killed by signal {signal}"),
        Outcome::TimedOut => "no answer in time".to_string(),
        Outcome::SpawnFailed(e) => e,
    };
    let detail = format!("failed: {reason}");
    console::event(st, "webhook", None, None, None, Some(&detail));
    failed(st, d, &reason);
}

/// A send failed: retried with backoff, or dropped after the last try.
pub fn failed(st: &mut State, d: Delivery, reason: &str) {
    let now = st.clock.now();
    st.webhooks.failed(d, reason, &st.cfg.webhooks, now);
}
