//! Store URLs as they may be shown: with every secret hidden.

/// The URL with every secret in it replaced by `***`: the password, and the value of each
/// query parameter whose name says it holds a secret (`password`, `api_key`, `token`, `sig`,
/// ...). The one redaction for every URL rota prints, logs or stores, whatever shape it has:
/// a password holding `/`, `?` or `@`, a URL without `//` (`postgres:rota:pw@db`), or no
/// scheme at all (`rota:pw@db`). Where it cannot tell a password from a path it hides too
/// much rather than too little.
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let mut out = String::from(prefix);
    // The userinfo ends at an `@`: the last one in the authority when the authority holds
    // one. Otherwise a password may hold a `/` or `?` that cut the authority short: then it
    // ends at the first run of `@`s when what precedes it holds a `:`, unless what came
    // before the cut is a host and port (`h:8443/notify?to=ops@example.com`).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host_and_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
    });
    let at = authority.rfind('@').or_else(|| {
        if host_and_port && !prefix.is_empty() {
            return None;
        }
        let first = rest.find('@')?;
        let end = rest[first..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| first + i);
        rest[..end]
            .rfind('@')
            .filter(|&at| rest[..at].contains(':'))
    });
    let after_userinfo = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.rfind(':').filter(|_| !prefix.is_empty()) {
                // user:password, with `//`: the user stays.
                Some(_) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    out.push_str(user);
                    out.push_str(":***");
                }
                // Only a user name.
                None if !prefix.is_empty() => out.push_str(userinfo),
                // Without `//`, which part is the password is a guess: keep only what
                // precedes the first `:` (a scheme or a user name).
                None => match userinfo.split_once(':') {
                    Some((head, _)) => {
                        out.push_str(head);
                        out.push_str(":***");
                    }
                    None => out.push_str("***"),
                },
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(after_userinfo),
    }
    out
}

/// A query string with the value of each parameter named like a secret replaced by `***`.
pub(super) fn redact_query(query: &str) -> String {
    const SECRET_NAMES: [&str; 9] = [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "sig",
        "credential",
        "session",
    ];
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut out = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _))
                if SECRET_NAMES
                    .iter()
                    .any(|s| name.to_ascii_lowercase().contains(s)) =>
            {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_redaction() {
        assert_eq!(
            redact_url("postgres://rota:s3cret@db:5432/rota"),
            "postgres://rota:***@db:5432/rota"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/rota.db"),
            "sqlite:///var/lib/rota.db"
        );
        assert_eq!(redact_url("mysql://rota@db/rota"), "mysql://rota@db/rota");
    }

    #[test]
    fn every_shape_of_secret_in_a_url_is_hidden() {
        for (url, shown) in [
            // A password holding `/`, `?` or `@`.
            (
                "postgres://rota:pa/ss@db/rota",
                "postgres://rota:***@db/rota",
            ),
            (
                "postgres://rota:pa?ss@db/rota",
                "postgres://rota:***@db/rota",
            ),
            (
                "mysql://rota:p@ss@db:3306/rota",
                "mysql://rota:***@db:3306/rota",
            ),
            // Without `//`, or without a scheme.
            ("postgres:rota:s3cret@db/rota", "postgres:***@db/rota"),
            ("rota:s3cret@db", "rota:***@db"),
            ("s3cret@db", "***@db"),
            // Secrets in the query, whatever their case.
            (
                "postgres://rota@db/rota?sslmode=require&password=s3cret",
                "postgres://rota@db/rota?sslmode=require&password=***",
            ),
            (
                "https://api.example/v1/push?API_KEY=s3cret&team=ops#top",
                "https://api.example/v1/push?API_KEY=***&team=ops#top",
            ),
            (
                "https://h/x?access_token=s3cret&sig=s3cret&Auth=s3cret",
                "https://h/x?access_token=***&sig=***&Auth=***",
            ),
            // Nothing secret: unchanged.
            ("https://h:8443/users?id=7", "https://h:8443/users?id=7"),
            (
                "https://h:8443/notify?to=ops@example.com",
                "https://h:8443/notify?to=ops@example.com",
            ),
            (
                "zookeeper://a:2181,b:2181/rota",
                "zookeeper://a:2181,b:2181/rota",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }
}
