//! Where a network's RPC URLs come from, and how they are read: the `rpcUrl`, `rpcUrls` and
//! `rpcSecret` fields of `X402_NETWORKS`, and the value of an RPC secret (one URL, or a JSON list
//! of them). URLs often carry a provider's API key in their path or query, so nothing here ever
//! prints one whole: [`redact_url`] keeps scheme, host and port.

/// Where a network's RPC URLs come from. With several, calls go to the first healthy one, in this
/// order (docs/settlement.md, "RPC failover").
#[derive(Clone)]
pub enum RpcSource {
    /// Given in the configuration (fine for URLs without a key): at least one, no repeats.
    Urls(Vec<String>),
    /// A Secrets Manager secret (name or ARN) whose string value is one URL or a JSON list of
    /// them ([`parse_rpc_urls`]); read on first use and again every few minutes or when a node
    /// answers 401/403 (a rotated key).
    Secret(String),
}

impl RpcSource {
    /// One URL given in the configuration.
    pub fn url(url: impl Into<String>) -> Self {
        RpcSource::Urls(vec![url.into()])
    }
}

impl std::fmt::Debug for RpcSource {
    // RPC URLs often embed an API key: never print one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcSource::Urls(urls) => {
                let shown: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
                write!(f, "Urls({})", shown.join(", "))
            }
            RpcSource::Secret(id) => write!(f, "Secret({id})"),
        }
    }
}

/// Keeps scheme, host and port of a URL and hides path, query and credentials, where keys live.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let hidden = if rest.len() > authority.len() || authority.contains('@') {
        "/…"
    } else {
        ""
    };
    format!("{scheme}://{host}{hidden}")
}

/// Checks a list of RPC URLs: at least one, each http(s), none twice. The problem, if any, names
/// URLs only redacted.
pub fn check_rpc_urls(urls: Vec<String>) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("the list of RPC URLs is empty; give at least one".into());
    }
    for (i, url) in urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("RPC URL {} is not an http(s) URL", redact_url(url)));
        }
        if urls[..i].contains(url) {
            // Twice the same node is no failover; it only doubles the wait when it is down.
            return Err(format!("RPC URL {} is listed twice", redact_url(url)));
        }
    }
    Ok(urls)
}

/// Reads an RPC secret's string value: a JSON list of URLs (`["https://a…", "https://b…"]`,
/// tried in that order), or one URL as it is (how every secret was written before lists). The
/// problem, if any, never quotes the value: it is a key.
pub fn parse_rpc_urls(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    let urls = if value.starts_with('[') {
        serde_json::from_str::<Vec<String>>(value).map_err(|_| {
            "the value starts with [ but is not a JSON list of URL strings".to_owned()
        })?
    } else {
        vec![value.to_owned()]
    };
    check_rpc_urls(urls.into_iter().map(|u| u.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls_never_print_their_keys() {
        assert_eq!(
            redact_url("https://base.example.com/v2/SECRETKEY"),
            "https://base.example.com/…"
        );
        assert_eq!(
            redact_url("https://user:pw@host:8545"),
            "https://host:8545/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
        let shown = format!(
            "{:?}",
            RpcSource::Urls(vec![
                "https://x.io/key123".into(),
                "https://y.io/?apikey=key456".into()
            ])
        );
        assert!(
            !shown.contains("key123") && !shown.contains("key456"),
            "{shown}"
        );
        assert!(shown.contains("x.io") && shown.contains("y.io"), "{shown}");
    }

    #[test]
    fn a_secret_holds_one_url_or_a_json_list_of_them() {
        assert_eq!(
            parse_rpc_urls(" https://a.example/v2/KEY \n").unwrap(),
            vec!["https://a.example/v2/KEY"]
        );
        assert_eq!(
            parse_rpc_urls(r#"["https://a.example/KEY", " https://b.example/KEY2"]"#).unwrap(),
            vec!["https://a.example/KEY", "https://b.example/KEY2"]
        );
    }

    #[test]
    fn a_bad_secret_value_is_refused_without_quoting_its_key() {
        for bad in [
            "",
            "[]",
            r#"["https://a.example/KEY""#,
            r#"[1, 2]"#,
            r#"{"url": "https://a.example/KEY"}"#,
            "ftp://a.example/KEY",
            r#"["https://a.example/KEY", "https://a.example/KEY"]"#,
            r#"["https://a.example/KEY", "wss://b.example/KEY"]"#,
        ] {
            let problem = parse_rpc_urls(bad).unwrap_err();
            assert!(!problem.contains("KEY"), "{bad}: {problem}");
        }
    }
}
