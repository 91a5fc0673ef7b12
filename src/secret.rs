//! Secrets: comparing them without leaking, and making new ones.

use sha2::{Digest, Sha256};

/// Compares a secret (a token, a password, a signature) with what a client sent, in a time
/// that depends on neither their contents nor their lengths: both are hashed, and the digests
/// compared without an early exit. The one comparison used for anything secret.
pub fn equal(expected: &[u8], given: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(expected), Sha256::digest(given));
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        // black_box keeps the optimizer from turning this into an early exit.
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// 128 random bits as hex (console logins).
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2) never blocks once the kernel pool is seeded, which it is long before anyone
    // logs in.
    // SAFETY: writes at most `bytes.len()` bytes into the array it is given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        // Unpredictable enough for a local debug session.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes.copy_from_slice(&(t ^ ((std::process::id() as u128) << 64)).to_le_bytes());
    }
    hex::encode(bytes)
}

/// A key made once per process (and shared by the loops a supervisor forks after making it):
/// signs what must be checked later by any loop, such as console logins.
pub fn process_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(random_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_secrets() {
        assert!(equal(b"s3cret", b"s3cret"));
        assert!(!equal(b"s3cret", b"s3cre"));
        assert!(!equal(b"s3cret", b"s3cret "));
        assert!(!equal(b"", b"x"));
        assert!(equal(b"", b""));
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 32);
    }
}
