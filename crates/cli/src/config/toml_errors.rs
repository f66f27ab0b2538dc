//! TOML errors as config problems: located at their table and key, with the line and column
//! the parser gave.

use std::collections::HashMap;

use rota::store::redact_url;

use super::checks::ConfigProblem;

/// One problem from a TOML error, located as precisely as the error allows.
pub(super) fn toml_problem(text: &str, e: &toml::de::Error) -> ConfigProblem {
    // One line: the parser's message may run over several.
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let Some(span) = e
        .span()
        .filter(|s| s.start <= text.len() && s.end <= text.len())
    else {
        return ConfigProblem::new("config", "", message, "correct the TOML");
    };
    let line_start = text[..span.start].rfind('\n').map_or(0, |n| n + 1);
    let line_end = text[span.start..]
        .find('\n')
        .map_or(text.len(), |n| span.start + n);
    let line_no = text[..span.start].matches('\n').count() + 1;
    let column = text[line_start..span.start].chars().count() + 1;
    let prefix = &text[line_start..span.start];
    // An error in a table header is about the header itself, not about the table before it.
    let header = text[line_start..line_end].trim();
    if header.starts_with('[') {
        return ConfigProblem::new(
            "config",
            redact_url(header),
            format!("line {line_no}, column {column}: {message}"),
            "write the header as [section] or [[task]] / [[service]]",
        );
    }

    // The key: named by the message for unknown or duplicate keys, else the one before `=`.
    let named = ["unknown field `", "duplicate key `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next());
    let key_before = |s: &str| -> Option<String> {
        let k = s.trim_end().trim_end_matches('=').trim_end();
        let k = k
            .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()?;
        (!k.is_empty()).then(|| k.trim_matches('"').to_string())
    };
    let mut keys = Vec::new();
    // Inside an inline table (`http = { ... }`), the table's key comes first.
    if let Some(brace) = prefix.find('{') {
        keys.extend(key_before(&prefix[..brace]));
    }
    match named {
        Some(k) => keys.push(k.to_string()),
        None => {
            if let Some(eq) = prefix.rfind('=') {
                keys.extend(key_before(&prefix[..=eq]));
            }
        }
    }
    keys.dedup();
    let mut path: Vec<String> = section_at(text, line_start).into_iter().collect();
    path.extend(keys);
    let field = if path.is_empty() {
        "config".to_string()
    } else {
        path.join(".")
    };

    // A key named by the message is already in `field`.
    // The whole value: a span may point at its first character only (a number too large).
    let value: String = if named.is_some() {
        String::new()
    } else {
        let token_end = text[span.start..line_end]
            .find([' ', '\t', '\r', ',', '}', ']', '#'])
            .map_or(line_end, |n| span.start + n);
        text[span.start..span.end.max(token_end)]
            .chars()
            .take(80)
            .collect()
    };
    let fix = if named.is_some_and(|_| message.starts_with("unknown field")) {
        "correct or remove the key; the allowed keys are listed above"
    } else {
        "correct the TOML at that place"
    };
    ConfigProblem::new(
        field,
        redact_url(value.trim()),
        format!("line {line_no}, column {column}: {message}"),
        fix,
    )
}

/// The table a position is in (`store`, `task[1]`, `task[1].http`), from the headers before it.
fn section_at(text: &str, pos: usize) -> Option<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut current = None;
    for line in text[..pos].lines() {
        let l = line.trim();
        let (name, array) = if let Some(rest) = l.strip_prefix("[[") {
            (rest.split("]]").next().unwrap_or("").trim(), true)
        } else if let Some(rest) = l.strip_prefix('[') {
            (rest.split(']').next().unwrap_or("").trim(), false)
        } else {
            continue;
        };
        if array {
            *counts.entry(name.to_string()).or_default() += 1;
        }
        // Index array tables by their occurrence: `[[task]]` -> `task[n]`, `[task.http]` -> `task[n].http`.
        let (head, tail) = name
            .split_once('.')
            .map_or((name, None), |(h, t)| (h, Some(t)));
        let head = match counts.get(head) {
            Some(n) => format!("{head}[{}]", n - 1),
            None => head.to_string(),
        };
        current = Some(match tail {
            Some(t) => format!("{head}.{t}"),
            None => head,
        });
    }
    current
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    /// A TOML syntax error names the place it is at: a broken table header is not a key of
    /// the table before it, and a number too large is shown whole.
    #[test]
    fn toml_errors_name_their_place_and_show_the_whole_value() {
        let header =
            parse("[store]\nurl = \"sqlite:///x.db\"\n[[task]\nname = \"a\"\n").unwrap_err();
        assert_eq!(header[0].field, "config", "{}", header[0]);
        assert_eq!(header[0].value, "[[task]", "{}", header[0]);
        assert!(!header[0].reason.contains('\n'), "{}", header[0]);
        let number = parse(
            "[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\nstate = 99999999999999999999\n",
        )
        .unwrap_err();
        assert_eq!(number[0].value, "99999999999999999999", "{}", number[0]);
    }

    #[test]
    fn unknown_field_is_named_with_its_place() {
        let text = "[node]\nid = \"n\"\ncluster = \"c\"\n[[task]]\nname = \"a\"\nevery = \"1s\"\nlog = {}\n[[task]]\nname = \"b\"\ncrn = \"0 * * * * *\"\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.field, "task[1].crn", "{p}");
        assert!(
            p.reason.contains("line 10") && p.reason.contains("crn"),
            "{p}"
        );
        let inline = parse("[[task]]\nname = \"a\"\nhttp = { methd = \"GET\" }\n").unwrap_err();
        assert_eq!(inline[0].field, "task[0].http.methd", "{}", inline[0]);
        let typed = parse("[timing]\nheartbeat = 200\n").unwrap_err();
        assert_eq!(typed[0].field, "timing.heartbeat", "{}", typed[0]);
        let syntax = parse("[store]\nurl = \"postgres://u:pw@db/x\n").unwrap_err();
        assert!(!syntax[0].to_string().contains("pw@"), "{}", syntax[0]);
    }
}
