//! Reading a configuration: a YAML file with `${VAR}` expansion, or the
//! original service's environment variables.

use super::*;

impl Config {
    /// Reads, expands and validates a YAML file.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            problems: vec![Problem {
                at: "file".into(),
                why: format!("cannot read it: {e}"),
            }],
        })?;
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut config = Config::from_yaml(&text, &env).map_err(|problems| ConfigError {
            source: source.clone(),
            problems,
        })?;
        config.apply_env_overrides(&env);
        config
            .validate()
            .map_err(|problems| ConfigError { source, problems })?;
        Ok(config)
    }

    /// Parses YAML text, expanding `${VAR}` and `${VAR:-default}` from `env`.
    ///
    /// Expansion happens inside the YAML parser, on values only, so a comment that
    /// mentions `${VAR}` is never expanded and a value holding quotes cannot break
    /// the document. An unset `${VAR}` without a default is an error naming it.
    pub fn from_yaml(text: &str, env: &HashMap<String, String>) -> Result<Config, Vec<Problem>> {
        let text = require_set_variables(text);
        let options = serde_saphyr::options! {
            property_syntax: serde_saphyr::PropertySyntax::DockerCompose,
        }
        .with_properties(env.clone());
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        // The path of the failing field is recorded on the way out, while the
        // parser's own error keeps its line and column.
        let mut path = String::new();
        serde_saphyr::with_deserializer_from_str_with_options(&text, options, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| {
            vec![yaml_problem(
                &path,
                &e.without_snippet().to_string(),
                e.location().map(|l| (l.line(), l.column())),
            )]
        })
    }

    /// Configuration of the original FastAPI service: only environment variables.
    ///
    /// `RUNPOD_VLLM_ENDPOINT_ID` may list several endpoints separated by commas;
    /// with none set the gateway still starts and answers research with 500, as the
    /// original did.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut config = Config {
            listen: format!(
                "0.0.0.0:{}",
                env.get("PORT")
                    .map(|p| p.trim())
                    .filter(|p| !p.is_empty())
                    .unwrap_or("8002")
            ),
            ..Config::default()
        };
        // RunPod's load-balancing workers are probed on PORT_HEALTH when it
        // differs from PORT.
        let port = env
            .get("PORT")
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .unwrap_or("8002");
        if let Some(health) = env
            .get("PORT_HEALTH")
            .map(|p| p.trim())
            .filter(|p| !p.is_empty() && *p != port)
        {
            config.health_listen = Some(format!("0.0.0.0:{health}"));
        }
        let key = env.get("RUNPOD_API_KEY").cloned().filter(|k| !k.is_empty());
        if let Some(ids) = env.get("RUNPOD_VLLM_ENDPOINT_ID") {
            for id in ids.split(',').map(str::trim).filter(|id| !id.is_empty()) {
                config.upstreams.push(UpstreamConfig {
                    name: format!("runpod-{id}"),
                    runpod_endpoint_id: Some(id.to_string()),
                    api_key: key.clone(),
                    ..UpstreamConfig::default()
                });
            }
        }
        if let Some(model) = env.get("RESEARCH_MODEL").filter(|m| !m.is_empty()) {
            config.research.model = model.clone();
        }
        config.apply_env_overrides(env);
        config.validate().map_err(|problems| ConfigError {
            source: "environment".into(),
            problems,
        })?;
        Ok(config)
    }

    fn apply_env_overrides(&mut self, env: &HashMap<String, String>) {
        if let Some(base) = env.get("RUNPOD_API_BASE").filter(|b| !b.is_empty()) {
            self.runpod_api_base = base.clone();
        }
    }
}

/// Turns every `${NAME}` and `$NAME` without an operator into `${NAME?}`, the
/// parser's "required" form, so that an unset variable is an error that names it
/// instead of silently becoming an empty string. `$$` stays an escaped dollar.
fn require_set_variables(text: &str) -> String {
    let is_name_start = |c: u8| c.is_ascii_alphabetic() || c == b'_';
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let start = i + 2;
                let mut end = start;
                while end < bytes.len() && is_name(bytes[end]) {
                    end += 1;
                }
                if end > start && is_name_start(bytes[start]) && bytes.get(end) == Some(&b'}') {
                    out.push_str(&text[copied..i]);
                    out.push_str(&format!("${{{}?}}", &text[start..end]));
                    copied = end + 1;
                    i = end + 1;
                } else {
                    i += 2;
                }
            }
            Some(&c) if is_name_start(c) => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len() && is_name(bytes[end]) {
                    end += 1;
                }
                out.push_str(&text[copied..i]);
                out.push_str(&format!("${{{}?}}", &text[start..end]));
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn yaml_problem(path: &str, message: &str, location: Option<(u64, u64)>) -> Problem {
    // The parser appends its own "at line L, column C"; the location goes in `at`.
    let why = message
        .rsplit_once(" at line ")
        .map(|(head, _)| head)
        .unwrap_or(message);
    let why = match why.strip_prefix("missing property `") {
        Some(rest) => {
            let name = rest.split('`').next().unwrap_or(rest);
            format!(
                "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            )
        }
        None => why.to_string(),
    };
    let place = match location {
        Some((line, column)) => format!("line {line} column {column}"),
        None => "document".into(),
    };
    Problem {
        at: match path {
            "" | "." => place,
            path => format!("{path} ({place})"),
        },
        why,
    }
}

/// Reads a keys file: one key per line, blank lines and `#` comments skipped.
pub fn read_keys_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if let Some(n) = keys.iter().position(|k| k.len() < 8) {
        return Err(format!(
            "{}: key {} is shorter than 8 characters",
            path.display(),
            n + 1
        ));
    }
    // Fail closed: an emptied file (a failed secret mount, a rotation that
    // truncates first) must not turn authentication off.
    if keys.is_empty() {
        return Err(format!(
            "{}: holds no key (one per line; `#` starts a comment); without keys \
             every route would open, so remove keys_file to turn authentication off",
            path.display()
        ));
    }
    Ok(keys)
}

/// Every client key `auth` configures, `keys` first, then the file's: each
/// one once, since the position of a key is the client's identity.
pub fn client_keys(auth: &super::AuthConfig) -> Result<Vec<super::KeyEntry>, String> {
    let mut keys: Vec<super::KeyEntry> = auth
        .keys
        .iter()
        .map(|k| super::KeyEntry {
            key: k.key.trim().to_string(),
            ..k.clone()
        })
        .collect();
    if let Some(file) = &auth.keys_file {
        keys.extend(
            read_keys_file(Path::new(file))?
                .into_iter()
                .map(super::KeyEntry::plain),
        );
    }
    for (i, entry) in keys.iter().enumerate() {
        if let Some(j) = keys[..i].iter().position(|k| k.key == entry.key) {
            return Err(format!(
                "key {} is the same as key {} (counting auth.keys, then keys_file): \
                 each key must be given once",
                i + 1,
                j + 1
            ));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_form_is_added_only_where_no_operator_is_given() {
        assert_eq!(require_set_variables("a: ${X}"), "a: ${X?}");
        assert_eq!(require_set_variables("a: $X/b"), "a: ${X?}/b");
        assert_eq!(require_set_variables("a: ${X:-d}"), "a: ${X:-d}");
        assert_eq!(require_set_variables("a: $${X}"), "a: $${X}");
        assert_eq!(require_set_variables("cost: $5"), "cost: $5");
        assert_eq!(require_set_variables("é ${Y} é"), "é ${Y?} é");
    }
}
