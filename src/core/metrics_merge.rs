//! `/metrics`, `/up` and the console for a whole process of several loops: this loop's
//! samples added to the other loops' (pinned on the shared board, `board.rs`).

use std::collections::HashMap;

/// Families every loop holds a copy of (the bus replicates them): the process has one of
/// each, not one per loop, so the largest copy stands for it.
const COPIES: [&str; 5] = [
    "ferrocast_channels",
    "ferrocast_cache_channels",
    "ferrocast_cache_bytes",
    "ferrocast_history_messages",
    "ferrocast_history_bytes",
];

/// A sample line's key (name and labels) and value.
fn sample(line: &str) -> Option<(&str, u64)> {
    if line.starts_with('#') {
        return None;
    }
    let (key, value) = line.rsplit_once(' ')?;
    Some((key, value.trim().parse().ok()?))
}

fn family(key: &str) -> &str {
    key.split('{').next().unwrap_or(key)
}

fn combine(key: &str, a: u64, b: u64) -> u64 {
    if COPIES.contains(&family(key)) {
        a.max(b)
    } else {
        a.saturating_add(b)
    }
}

/// The other loops' samples, combined.
fn theirs(others: &[Vec<u8>]) -> HashMap<String, u64> {
    let mut all: HashMap<String, u64> = HashMap::new();
    for text in others {
        for line in String::from_utf8_lossy(text).lines() {
            if let Some((key, value)) = sample(line) {
                let sum = all.get(key).map_or(value, |&v| combine(key, v, value));
                all.insert(key.to_string(), sum);
            }
        }
    }
    all
}

/// This loop's exposition with every sample made the whole process's; a sample only other
/// loops have (an app with no connection here) joins its family.
pub fn merge(own: &str, others: &[Vec<u8>]) -> String {
    let mut theirs = theirs(others);
    let mut out = String::with_capacity(own.len() + 256);
    let lines: Vec<&str> = own.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        match sample(line) {
            Some((key, mine)) => {
                let value = theirs.remove(key).map_or(mine, |v| combine(key, mine, v));
                out.push_str(&format!("{key} {value}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
        // After a family's last line, the samples only the others have.
        let this = lines[i].strip_prefix("# TYPE ").map_or_else(
            || sample(line).map(|(k, _)| family(k)),
            |t| t.split(' ').next(),
        );
        let next = lines
            .get(i + 1)
            .and_then(|l| sample(l))
            .map(|(k, _)| family(k));
        if let Some(name) = this.filter(|&n| Some(n) != next) {
            let mut extra: Vec<(String, u64)> = theirs
                .iter()
                .filter(|(k, _)| family(k) == name)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            extra.sort();
            for (key, value) in extra {
                theirs.remove(&key);
                out.push_str(&format!("{key} {value}\n"));
            }
        }
    }
    out
}

/// One sample of the other loops, added up (`/up` and the console).
pub fn others_sum(others: &[Vec<u8>], key: &str) -> u64 {
    theirs(others).get(key).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_copies_do_not_and_missing_labels_join_their_family() {
        let own = "# HELP ferrocast_connections x\n# TYPE ferrocast_connections gauge\n\
                   ferrocast_connections 2\n# TYPE ferrocast_channels gauge\nferrocast_channels 5\n\
                   # TYPE ferrocast_app_connections gauge\nferrocast_app_connections{app=\"a\"} 1\n";
        let other = b"ferrocast_connections 3\nferrocast_channels 7\n\
                      ferrocast_app_connections{app=\"a\"} 4\nferrocast_app_connections{app=\"b\"} 6\n"
            .to_vec();
        let merged = merge(own, std::slice::from_ref(&other));
        assert!(merged.contains("ferrocast_connections 5\n"), "{merged}");
        assert!(merged.contains("ferrocast_channels 7\n"), "{merged}");
        assert!(
            merged.contains("ferrocast_app_connections{app=\"a\"} 5\n"),
            "{merged}"
        );
        assert!(
            merged.contains("ferrocast_app_connections{app=\"b\"} 6\n"),
            "{merged}"
        );
        assert!(
            merged.starts_with("# HELP ferrocast_connections x\n"),
            "{merged}"
        );
        assert_eq!(others_sum(&[other], "ferrocast_connections"), 3);
    }
}
