//! Browser origins: an `mcp.allowed_origins` entry or a parsed `Origin`
//! header, parsed here so that the configuration can check its entries.

/// One entry of `mcp.allowed_origins`, or a parsed `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: String,
    /// `None` in an allow-list entry means any port.
    port: Option<u16>,
}

impl OriginPattern {
    /// Parses `scheme://host[:port]` (IPv6 hosts in brackets), case-insensitively.
    pub fn parse(text: &str) -> Result<OriginPattern, String> {
        let bad = |why: &str| {
            format!(
                "{text:?} {why}; write scheme://host or scheme://host:port, such as \
                 \"http://localhost\" or \"https://app.example.com:8443\""
            )
        };
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or_else(|| bad("is not an origin"))?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(bad("has no valid scheme"));
        }
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("must not have a path, query, user or spaces"));
        }
        let (host, port) = match rest.strip_prefix('[') {
            Some(inner) => {
                let (address, after) = inner
                    .split_once(']')
                    .ok_or_else(|| bad("has an unclosed '['"))?;
                if address.is_empty() {
                    return Err(bad("has no host"));
                }
                let port = match after {
                    "" => None,
                    p => Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("has junk after ']'"))?,
                    ),
                };
                (format!("[{address}]"), port)
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (rest.to_string(), None),
            },
        };
        if host.is_empty() || host.contains(':') && !host.starts_with('[') {
            return Err(bad("has no valid host"));
        }
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad("has an invalid port")))
            .transpose()?;
        Ok(OriginPattern {
            scheme: scheme.to_string(),
            host,
            port,
        })
    }

    fn default_port(scheme: &str) -> Option<u16> {
        match scheme {
            "http" | "ws" => Some(80),
            "https" | "wss" => Some(443),
            _ => None,
        }
    }

    /// Whether this allow-list entry admits `origin`.
    pub fn admits(&self, origin: &OriginPattern) -> bool {
        self.scheme == origin.scheme
            && self.host == origin.host
            && match self.port {
                None => true,
                Some(port) => {
                    origin.port.or_else(|| Self::default_port(&origin.scheme)) == Some(port)
                }
            }
    }
}

/// Checks one `mcp.allowed_origins` entry: `"*"` or an origin.
pub fn check_allowed_origin(entry: &str) -> Result<(), String> {
    if entry.trim() == "*" {
        return Ok(());
    }
    OriginPattern::parse(entry).map(|_| ())
}
