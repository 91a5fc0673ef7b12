//! Channel names: what a channel may be called, whichever protocol names it.

/// Longest channel name accepted.
pub const MAX_NAME_LEN: usize = 200;

/// Names of 1..=200 characters of `[A-Za-z0-9_\-=@,.;]` (the Pusher channel name alphabet).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("orders"));
        assert!(valid_name("private-a_b-c=d@e,f.g;h"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name("slash/no"));
        assert!(!valid_name(&"a".repeat(201)));
        assert!(valid_name(&"a".repeat(200)));
    }
}
