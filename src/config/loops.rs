//! The `loops` setting: how many event loops one process runs (`loops/`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most loops one process forks: far past any machine's useful count, and small enough that a
/// typo cannot fork thousands of processes.
pub const MAX_LOOPS: usize = 256;

/// A number of loops, or `auto`: one per core this process may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    Auto,
    Count(usize),
}

impl Loops {
    /// How many loops to run on this machine.
    pub fn resolve(self) -> usize {
        match self {
            // Honours CPU affinity and cgroup quotas (a container limited to 2 CPUs runs 2).
            Loops::Auto => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_LOOPS),
            Loops::Count(n) => n,
        }
    }

    pub fn validate(self) -> Result<(), String> {
        match self {
            Loops::Count(n) if n == 0 || n > MAX_LOOPS => Err(format!(
                "loops: {n} is not between 1 and {MAX_LOOPS} (or \"auto\")"
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Loops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loops::Auto => f.write_str("auto"),
            Loops::Count(n) => write!(f, "{n}"),
        }
    }
}

// Written as a string ("auto", "2") so that a flag or an environment variable may give either.
impl Serialize for Loops {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Loops {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Loops, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!("loops: expected a number or \"auto\", got {what}"))
        };
        match Raw::deserialize(d)? {
            Raw::Number(n) => usize::try_from(n)
                .map(Loops::Count)
                .map_err(|_| bad(&n.to_string())),
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("auto") => Ok(Loops::Auto),
            Raw::Text(t) => t
                .trim()
                .parse::<usize>()
                .map(Loops::Count)
                .map_err(|_| bad(&format!("\"{t}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_auto_are_read_from_json_and_strings() {
        let read = |j: &str| serde_json::from_str::<Loops>(j);
        assert_eq!(read("2").unwrap(), Loops::Count(2));
        assert_eq!(read("\"3\"").unwrap(), Loops::Count(3));
        assert_eq!(read("\"auto\"").unwrap(), Loops::Auto);
        assert!(read("\"many\"").is_err());
        assert!(read("-1").is_err());
        assert_eq!(serde_json::to_string(&Loops::Count(4)).unwrap(), "\"4\"");
        assert!(Loops::Count(0).validate().is_err());
        assert!(Loops::Count(MAX_LOOPS + 1).validate().is_err());
        assert!(Loops::Auto.resolve() >= 1);
    }
}
