//! The rule every name rota stores follows (node ids, tasks, services, caches, labels):
//! names are keys in the store and words in logs, so they stay plain.

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
