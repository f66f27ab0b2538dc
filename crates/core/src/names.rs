//! The rule every name rota stores follows (node ids, tasks, services, caches, labels):
//! names are keys in the store and words in logs, so they stay plain.

/// FNV-1a: a small hash of a name or a definition that is the same across builds,
/// platforms and nodes (unlike `std`'s hasher), for digests and a jitter's offset.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Checks `value` against the rule; the message says what is wrong and how to fix it.
pub fn check_name(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a valid name; use 1 to 128 letters, digits, `-`, `_` or `.`"
        ))
    }
}
