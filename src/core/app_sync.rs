//! Apps from the app store's table (`app_store`), kept in step with it: a forked worker
//! (`ferrocast app-store all`) reads the whole table when the server starts, every
//! `cache_ttl_secs`, and at once on SIGHUP; the outcome comes back as a job like any other.
//! New apps are added, changed ones take their new settings (a rotated secret signs the next
//! request), and an app disabled or gone from the table has its connections closed with 4003.
//! While the database does not answer, the apps already read keep working and `/up` says
//! degraded. The loop never waits on the database.

use std::time::Duration;

use log::{debug, info, warn};

use super::conns::Conn;
use super::conns::{Conns, Mode};
use super::jobs::JobFor;
use super::pending::Closing;
use super::state::State;
use super::store_sync::{Due, Lookup, Wait};
use crate::config::AppConfig;
use crate::job::{Handler, Job, Outcome};
use crate::pusher::protocol as pp;

/// How long one read of the table may take.
const DEADLINE: Duration = Duration::from_secs(20);
/// How long one worker waits for the table's NOTIFY before it ends (and another starts).
const WATCH: Duration = Duration::from_secs(50);
/// After waiting for changes failed, how long before trying again.
const WATCH_BACKOFF: Duration = Duration::from_secs(5);
/// How long a connection waits for the store to say whether its app exists.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);
/// The most a read of the table may print (hundreds of apps are a few hundred KiB).
const MAX_OUTPUT: usize = 64 << 20;

/// Once a second: starts a read of the table when one is due.
pub fn tick(st: &mut State) {
    if st.cfg.app_store.driver == "file" {
        return;
    }
    let ttl = Duration::from_secs(st.cfg.app_store.cache_ttl_secs.max(1));
    let now = st.clock.now();
    if st.store_sync.due(now, ttl) == Due::Now {
        let job = read_job(&st.cfg.app_store);
        st.start_job(job, JobFor::AppSync);
    }
    // PostgreSQL tells of changes (the table's trigger): a worker waits for them, so a change
    // takes effect at once rather than within cache_ttl_secs.
    if st.cfg.app_store.driver == "postgres" && st.store_sync.watch(now) {
        let secs = WATCH.as_secs().to_string();
        let job = store_job(&st.cfg.app_store, &["changes", &secs], WATCH + DEADLINE);
        st.start_job(job, JobFor::AppChanges);
    }
}

/// The worker that waited for the table's changes ended: what changed is read at once.
pub fn watched(st: &mut State, outcome: Option<&Outcome>) {
    let now = st.clock.now();
    match outcome {
        Some(Outcome::Exited {
            code: 0, stdout, ..
        }) => {
            let changed = stdout.iter().any(|b| !b.is_ascii_whitespace());
            if changed {
                debug!("app store: the table changed; reading it again");
            }
            st.store_sync.watched(true, changed, now, WATCH_BACKOFF);
        }
        other => {
            debug!("app store: waiting for changes failed ({})", why(other));
            st.store_sync.watched(false, false, now, WATCH_BACKOFF);
        }
    }
}

/// The app a request names (`/app/{key}` to connect, `/apps/{id}/…` for REST) when the store
/// may have it and it was not read yet.
pub fn missing(st: &State, rel: &str) -> Option<Lookup> {
    if st.cfg.app_store.driver == "file" {
        return None;
    }
    // A key or id the table could hold (its columns are VARCHAR(64)): anything else is unknown
    // without asking the database.
    let segment = |rest: &str| {
        let s = rest.split(['/', '?']).next().unwrap_or("");
        let plausible = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic());
        plausible.then(|| s.to_string())
    };
    if let Some(rest) = rel.strip_prefix("/app/") {
        let key = segment(rest)?;
        return st.apps.by_key(&key).is_none().then_some(Lookup::Key(key));
    }
    let id = segment(rel.strip_prefix("/apps/")?)?;
    st.apps.by_id(&id).is_none().then_some(Lookup::Id(id))
}

/// A request for an app not read yet waits for the store's answer (its connection reads
/// nothing meanwhile). Returns whether it waits; if not, it goes on as for an unknown app.
pub fn look_up(st: &mut State, conn: &mut Conn, key: usize, what: Lookup) -> bool {
    let now = st.clock.now();
    match st.store_sync.wait_for(&what, (key, conn.id), now) {
        Wait::No => return false,
        Wait::Joined => {}
        Wait::Start => {
            let (by, value) = match &what {
                Lookup::Key(k) => ("key", k.clone()),
                Lookup::Id(i) => ("id", i.clone()),
            };
            let job = store_job(&st.cfg.app_store, &[by, &value], LOOKUP_DEADLINE);
            st.start_job(job, JobFor::AppLookup(what));
        }
    }
    conn.wait();
    true
}

/// A lookup ended (`outcome` `None`: it never ran): the app is added (or known not to exist
/// for `negative_ttl_secs`), and the connections that waited go on.
pub fn looked_up(conns: &mut Conns, st: &mut State, what: Lookup, outcome: Option<&Outcome>) {
    let now = st.clock.now();
    let found: Option<AppConfig> = match outcome {
        Some(Outcome::Exited {
            code: 0, stdout, ..
        }) => String::from_utf8_lossy(stdout)
            .lines()
            .find_map(|l| serde_json::from_str(l).ok()),
        other => {
            debug!("app store: lookup of {what:?} failed ({})", why(other));
            None
        }
    };
    let negative = Duration::from_secs(st.cfg.app_store.negative_ttl_secs);
    let waiters = st
        .store_sync
        .looked_up(&what, found.is_some(), now, negative);
    if let Some(cfg) = found {
        let disabled = st.apps.upsert(cfg, now);
        taken(conns, st, disabled);
    }
    for (key, id) in waiters {
        if conns.get(key).is_some_and(|c| c.id == id) {
            conns.unwait(key);
        }
    }
}

/// `ferrocast app-store all`, the store's settings in its environment (not its command line).
fn read_job(cfg: &crate::config::AppStoreConfig) -> Job {
    store_job(cfg, &["all"], DEADLINE)
}

/// `ferrocast app-store ARGS…`.
fn store_job(cfg: &crate::config::AppStoreConfig, args: &[&str], deadline: Duration) -> Job {
    let mut argv = vec!["/proc/self/exe".to_string(), "app-store".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    Job {
        handler: Handler::Exec { argv },
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("FERROCAST_APP_STORE_DRIVER".into(), cfg.driver.clone()),
            ("FERROCAST_APP_STORE_URL".into(), cfg.url.clone()),
            ("FERROCAST_APP_STORE_TABLE".into(), cfg.table.clone()),
            (
                "FERROCAST_APP_STORE_CA_FILE".into(),
                (cfg.ca_file.as_ref()).map_or(String::new(), |p| p.display().to_string()),
            ),
        ],
        stdin: Vec::new(),
        deadline,
        max_output: MAX_OUTPUT,
    }
}

/// A read of the table ended (or never ran: `outcome` is `None`).
pub fn done(conns: &mut Conns, st: &mut State, outcome: Option<&Outcome>) {
    let stdout = match outcome {
        Some(Outcome::Exited {
            code: 0, stdout, ..
        }) => stdout,
        other => {
            if st.store_sync.ended(false) {
                warn!(
                    "app store: cannot read the apps ({}); the apps already read are used",
                    why(other)
                );
            }
            return;
        }
    };
    if st.store_sync.ended(true) {
        info!("app store: reading the apps again");
    }
    let apps: Vec<AppConfig> = String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let now = st.clock.now();
    let disabled = st.apps.sync(apps, now);
    taken(conns, st, disabled);
}

/// After apps were read from the store: room for the new ones, and the disabled ones closed.
fn taken(conns: &Conns, st: &mut State, disabled: Vec<usize>) {
    st.hub.ensure_apps(st.apps.len());
    for app in disabled {
        close_app(conns, st, app);
    }
}

fn why(outcome: Option<&Outcome>) -> String {
    match outcome {
        // The worker's stderr is the server's: its reason is the log line before this one.
        Some(Outcome::Exited { code, .. }) => format!("the worker exited with {code}"),
        Some(Outcome::TimedOut) => format!("no answer within {}s", DEADLINE.as_secs()),
        Some(other) => format!("{other:?}"),
        None => "the worker queue was full".into(),
    }
}

/// An app disabled (or gone from the table): its cached events go, its connections close with
/// 4003, as Pusher closes a disabled app's.
fn close_app(conns: &Conns, st: &mut State, app: usize) {
    st.hub.cache_mut().forget_app(app as u16);
    let text = pp::error(Some(pp::code::APP_DISABLED), "Application is disabled");
    let keys: Vec<usize> = conns
        .keys()
        .filter(|&k| {
            conns
                .get(k)
                .is_some_and(|c| c.mode == Mode::Pusher && c.app() == app)
        })
        .collect();
    info!(
        "app store: app \"{}\" is disabled; closing its {} connection(s)",
        st.apps.get(app).cfg.id,
        keys.len()
    );
    for key in keys {
        let notice = Closing::Notice(text.clone(), pp::code::APP_DISABLED, "app disabled");
        st.pending.closes.push((key, notice));
    }
}
