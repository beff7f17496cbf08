//! `AMQP_URL` as RabbitMQ nodes (one URL, or the comma-separated nodes of one cluster), the
//! user they connect as, and URLs made fit for logs and errors (passwords out — AMQP lists and
//! libpq's multi-host form included).

/// `host:port` of a node URL, for logs and the monitor (no user, no password).
pub fn node_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

/// The node URLs of `AMQP_URL`: one URL, or a comma-separated list of the nodes of one cluster.
/// Every node must be `amqp://` or `amqps://` and name the same user — the user every publish
/// carries as `user_id` (a node that knew another user would refuse them).
pub fn node_urls(list: &str) -> Result<Vec<String>, String> {
    let nodes: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    let Some(first) = nodes.first() else {
        return Err("AMQP_URL is empty: give amqp://user:password@host:5672/vhost".into());
    };
    for node in &nodes {
        if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
            return Err(format!(
                "AMQP_URL: {:?} must start with amqp:// or amqps://",
                redact(node)
            ));
        }
        if user_of(node) != user_of(first) {
            return Err(format!(
                "AMQP_URL: every node must name the same user ({:?} and {:?} differ)",
                redact(first),
                redact(node)
            ));
        }
    }
    Ok(nodes)
}

/// The first node of an `AMQP_URL` list (the tools that need one connection use it).
pub fn first_node(list: &str) -> String {
    node_urls(list)
        .ok()
        .and_then(|nodes| nodes.into_iter().next())
        .unwrap_or_else(|| list.to_owned())
}

/// The user name of an AMQP URL (percent-decoded); RabbitMQ's default `guest` when it has none.
pub fn user_of(url: &str) -> String {
    let raw = url::Url::parse(url)
        .map(|u| u.username().to_owned())
        .unwrap_or_default();
    match percent_decode(&raw) {
        user if !user.is_empty() => user,
        _ => "guest".to_owned(),
    }
}

/// Replaces every password in `text` — one URL, a comma-separated list of them (`AMQP_URL`) or
/// libpq's multi-host form — with `***`: `scheme://user:password@host` → `scheme://user:***@host`.
/// Cut by hand rather than parsed: a list or a multi-host URL is no single URL, and a password
/// with a raw `,` or `@` in it must not leak either.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut urls = 0;
    while let Some(at) = rest.find("://") {
        urls += 1;
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the path or query, or where the next URL of a list begins.
        let next_url = tail.find("://").map_or(tail.len(), |n| {
            tail.get(..n).and_then(|t| t.rfind(',')).unwrap_or(n)
        });
        let end = tail.find(['/', '?']).unwrap_or(tail.len()).min(next_url);
        let (authority, after) = tail.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                match userinfo.split_once(':') {
                    Some((user, _password)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push('@');
                out.push_str(hosts);
            }
            None => out.push_str(authority),
        }
        rest = after;
    }
    if urls == 0 {
        // Not a URL: it may still hold a secret; show only what follows the last `@`.
        return match text.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => text.to_owned(),
        };
    }
    out.push_str(rest);
    out
}

/// `%xx` escapes decoded (a database name in a URL path, a user name in an AMQP URL).
pub fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_own_user_is_read_from_the_url() {
        assert_eq!(
            super::user_of("amqp://orderflow:pw@rabbitmq:5672/%2f"),
            "orderflow"
        );
        assert_eq!(super::user_of("amqp://wh%40site:pw@h/v"), "wh@site");
        assert_eq!(super::user_of("amqp://127.0.0.1:5672/%2f"), "guest");
    }

    #[test]
    fn amqp_url_is_a_list_of_one_clusters_nodes() {
        let nodes =
            super::node_urls(" amqp://of:pw@n1:5672/shop, amqps://of:pw@n2:5671/shop ,").unwrap();
        assert_eq!(
            nodes,
            ["amqp://of:pw@n1:5672/shop", "amqps://of:pw@n2:5671/shop"]
        );
        assert_eq!(
            nodes
                .iter()
                .map(|n| super::node_label(n))
                .collect::<Vec<_>>(),
            ["n1:5672", "n2:5671"]
        );
        // Another user on one node would have its publishes refused (user_id); a secret in an
        // error never shows.
        let e = super::node_urls("amqp://of:pw@n1/shop,amqp://other:secret@n2/shop").unwrap_err();
        assert!(e.contains("same user") && !e.contains("secret"), "{e}");
        assert!(super::node_urls("amqp://n1,http://n2").is_err());
        assert!(super::node_urls(" , ").is_err());
        assert_eq!(super::first_node("amqp://a/v,amqp://b/v"), "amqp://a/v");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://h/v"), "amqp://h/v");
        // Percent-encoded passwords (an `@` or `:` inside) and IPv6 hosts.
        assert_eq!(
            super::redact("amqp://user:p%40ss%3Aword@[::1]:5672/vh"),
            "amqp://user:***@[::1]:5672/vh"
        );
        assert_eq!(
            super::redact("postgres://u:s3cr%2Ft@db.example:5432/orderflow?sslmode=require"),
            "postgres://u:***@db.example:5432/orderflow?sslmode=require"
        );
        // A node list, libpq's multi-host form, and passwords with a raw `,` or `@`.
        assert_eq!(
            super::redact("amqp://u:pw1@h1:5672/v,amqp://u:pw2@h2:5672/v , amqps://u:p,w@h3/v"),
            "amqp://u:***@h1:5672/v,amqp://u:***@h2:5672/v , amqps://u:***@h3/v"
        );
        assert_eq!(
            super::redact("postgres://u:p@s,s@db1:5432,db2:5432/x?target_session_attrs=read-write"),
            "postgres://u:***@db1:5432,db2:5432/x?target_session_attrs=read-write"
        );
        assert_eq!(super::redact("u:secret@host"), "***@host");
    }
}
