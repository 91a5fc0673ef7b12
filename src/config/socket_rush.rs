//! Socket Rush's variable names in an env file (`--env-file`), read as ferrocast's, so a Socket
//! Rush `.env` works as it did.
//!
//! Only in the env file (the process environment is shared with too much else), and below the
//! `FERROCAST_*` names. `APP_ID`, `APP_KEY` and `APP_SECRET` count only together, as Socket Rush
//! requires them: the `.env` of a Laravel application has an `APP_KEY` of its own (its
//! encryption key) and no `APP_ID` or `APP_SECRET`, and that key must never become a Pusher key.

/// Socket Rush's name → ferrocast's.
const NAMES: [(&str, &str); 9] = [
    ("PORT", "FERROCAST_PORT"),
    ("BIND_ADDRESS", "FERROCAST_HOST"),
    ("APP_ID", "FERROCAST_APP_ID"),
    ("APP_KEY", "FERROCAST_APP_KEY"),
    ("APP_SECRET", "FERROCAST_APP_SECRET"),
    ("APP_ACTIVITY_TIMEOUT", "FERROCAST_ACTIVITY_TIMEOUT_SECS"),
    ("ADAPTER_DRIVER", "FERROCAST_SCALING_DRIVER"),
    ("REDIS_URL", "FERROCAST_SCALING_REDIS_URL"),
    ("REDIS_PREFIX", "FERROCAST_SCALING_PREFIX"),
];

const CREDENTIALS: [&str; 3] = ["APP_ID", "APP_KEY", "APP_SECRET"];

/// The variables of an env file that ferrocast reads, lowest priority first: Socket Rush's
/// names as ferrocast's, then the file's own `FERROCAST_*` lines. Also returns the names read
/// the Socket Rush way, for the log.
pub fn variables(pairs: Vec<(String, String)>) -> (Vec<(String, String)>, Vec<&'static str>) {
    let has = |name: &str| pairs.iter().any(|(k, _)| k == name);
    let credentials = CREDENTIALS.iter().all(|c| has(c));
    let mut aliased = Vec::new();
    let mut read = Vec::new();
    let mut own = Vec::new();
    for (key, value) in pairs {
        if key.starts_with("FERROCAST_") {
            own.push((key, value));
            continue;
        }
        let Some((theirs, ours)) = NAMES.iter().find(|(theirs, _)| *theirs == key) else {
            continue;
        };
        if CREDENTIALS.contains(theirs) && !credentials {
            continue;
        }
        if !read.contains(theirs) {
            read.push(*theirs);
        }
        aliased.push((ours.to_string(), value));
    }
    aliased.extend(own);
    (aliased, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn socket_rush_names_read_below_ferrocast_names() {
        let (vars, read) = variables(pairs(&[
            ("PORT", "6001"),
            ("APP_ID", "123"),
            ("APP_KEY", "k"),
            ("APP_SECRET", "s"),
            ("FERROCAST_PORT", "7001"),
            ("APP_ENV", "production"),
        ]));
        assert_eq!(
            vars,
            pairs(&[
                ("FERROCAST_PORT", "6001"),
                ("FERROCAST_APP_ID", "123"),
                ("FERROCAST_APP_KEY", "k"),
                ("FERROCAST_APP_SECRET", "s"),
                ("FERROCAST_PORT", "7001"),
            ])
        );
        assert_eq!(read, ["PORT", "APP_ID", "APP_KEY", "APP_SECRET"]);
    }

    #[test]
    fn a_lone_app_key_is_laravels_not_ours() {
        let (vars, read) = variables(pairs(&[
            ("APP_NAME", "Shop"),
            ("APP_KEY", "base64:abc"),
            ("REDIS_URL", "redis://cache:6379"),
        ]));
        assert_eq!(
            vars,
            pairs(&[("FERROCAST_SCALING_REDIS_URL", "redis://cache:6379")])
        );
        assert_eq!(read, ["REDIS_URL"]);
    }
}
