//! Where the configuration comes from: the layers (flags, environment, file, defaults) merged as
//! JSON, deserialized once, validated.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Config, dotenv, socket_rush};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: the configuration must be a JSON object")]
    NotObject { path: PathBuf },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
    #[error("cannot read env file {path}: {source}")]
    EnvFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    EnvFile {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Where the configuration comes from: kept so that SIGHUP can rebuild it from the same sources.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// A `.env` file of `FERROCAST_*` variables (`--env-file`, else `FERROCAST_ENV_FILE`), read
    /// under the real environment: a variable set in both keeps the environment's value.
    pub env_file: Option<PathBuf>,
    /// `--prefer-config-file`: the file's keys beat the environment's (flags still beat both).
    pub prefer_file: bool,
    /// `key=value` pairs from flags, applied last (explicit flags are turned into these too).
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// Builds the effective configuration from defaults, file, environment and flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let real: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("FERROCAST_"))
            .collect();
        let env_file = self.env_file.clone().or_else(|| {
            std::env::var_os("FERROCAST_ENV_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let mut env = match env_file {
            Some(path) => read_env_file(&path)?,
            None => Vec::new(),
        };
        // Applied in order, so the real environment, last, wins over the file.
        env.extend(real);
        self.load_with_env(&env)
    }

    pub fn load_with_env(&self, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default()).expect("defaults serialize");
        let mut merged = defaults.clone();
        let file = self.read_file()?;
        let origin = self.file.as_ref().map_or_else(
            || "configuration".to_string(),
            |path| path.display().to_string(),
        );
        if !self.prefer_file
            && let Some(file) = file.clone()
        {
            merge(&mut merged, file);
        }
        apply_env(&defaults, &mut merged, env)?;
        if self.prefer_file
            && let Some(file) = file
        {
            merge(&mut merged, file);
        }
        self.apply_overrides(&defaults, &mut merged)?;
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            let message = match unknown_field(&inner) {
                Some(key) if path == "." => format!("unknown key \"{key}\""),
                Some(key) => format!("{path}: unknown key \"{key}\""),
                None => format!("{path}: {inner}"),
            };
            ConfigError::Invalid {
                origin: origin.clone(),
                message,
            }
        })?;
        config
            .validate()
            .map_err(|message| ConfigError::Invalid { origin, message })?;
        Ok(config)
    }

    /// The JSON file's object, if there is a file.
    fn read_file(&self) -> Result<Option<Value>, ConfigError> {
        let Some(path) = &self.file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if !file.is_object() {
            return Err(ConfigError::NotObject { path: path.clone() });
        }
        Ok(Some(file))
    }

    fn apply_overrides(&self, defaults: &Value, merged: &mut Value) -> Result<(), ConfigError> {
        for (key, raw) in &self.overrides {
            let arg = format!("{key}={raw}");
            let default = lookup(defaults, key).ok_or_else(|| ConfigError::Set {
                arg: arg.clone(),
                message: format!("unknown key \"{key}\""),
            })?;
            let value = parse_scalar(default, raw).map_err(|message| ConfigError::Set {
                arg: arg.clone(),
                message,
            })?;
            set_path(merged, key, value);
        }
        Ok(())
    }
}

/// `FERROCAST_*` variables, in order (a later one wins).
fn apply_env(
    defaults: &Value,
    merged: &mut Value,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let key = nested_key(
            defaults,
            &var.trim_start_matches("FERROCAST_").to_ascii_lowercase(),
        );
        // Variables that are not configuration keys (FERROCAST_SOCKET_ID given to workers,
        // say) are ignored rather than refused: the environment is shared with other tools.
        let Some(default) = lookup(defaults, &key) else {
            continue;
        };
        let value = parse_scalar(default, raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?;
        set_path(merged, &key, value);
    }
    Ok(())
}

/// What ferrocast reads from a `.env` file, lowest priority first: Socket Rush's names
/// (`socket_rush.rs`), then its `FERROCAST_*` lines. Other names are the application's.
fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::EnvFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let outside = |name: &str| std::env::var(name).ok();
    let pairs = dotenv::parse(&text, &outside).map_err(|e| ConfigError::EnvFile {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })?;
    let (variables, read) = socket_rush::variables(pairs);
    if !read.is_empty() {
        log::info!(
            "{}: read Socket Rush's {} (FERROCAST_* names win over them)",
            path.display(),
            read.join(", ")
        );
    }
    Ok(variables)
}

/// `tls_cert` → `tls.cert` when `tls` is an object key, so env vars reach nested settings.
fn nested_key(defaults: &Value, flat: &str) -> String {
    if lookup(defaults, flat).is_some() {
        return flat.to_string();
    }
    if let Some(map) = defaults.as_object() {
        for (k, v) in map {
            if v.is_object()
                && let Some(rest) = flat
                    .strip_prefix(k.as_str())
                    .and_then(|r| r.strip_prefix('_'))
            {
                return format!("{k}.{rest}");
            }
        }
    }
    flat.to_string()
}

/// serde says "unknown field `x`, expected one of …"; users think in keys.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let secret = key == "secret"
                    || key == "token"
                    || key == "password"
                    || key.ends_with("_secret")
                    || key.ends_with("_token");
                if secret && v.is_string() && !v.as_str().unwrap_or("").is_empty() {
                    *v = Value::String("********".into());
                } else if (key == "url" || key.ends_with("_url"))
                    && let Some(url) = v.as_str()
                {
                    *v = Value::String(mask_url_password(url));
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// `scheme://user:password@host…` with the password masked (a URL without one is unchanged).
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].split_once(':') {
        Some((user, pw)) if !pw.is_empty() => {
            format!("{scheme}://{user}:********{}", &rest[at..])
        }
        _ => url.to_string(),
    }
}

/// Recursively merges `overlay` into `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Finds a key (dotted for nested objects, or with `_` joining nested keys as env vars do).
fn lookup<'a>(defaults: &'a Value, key: &str) -> Option<&'a Value> {
    let mut node = defaults;
    for part in key.split('.') {
        node = node.as_object()?.get(part)?;
    }
    Some(node)
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !node.get(*part).is_some_and(Value::is_object) {
            node[*part] = Value::Object(Map::new());
        }
        node = &mut node[*part];
    }
    node[parts[parts.len() - 1]] = value;
}

/// Parses a flag or environment value by the type of the key's default.
fn parse_scalar(default: &Value, raw: &str) -> Result<Value, String> {
    let raw = raw.trim();
    match default {
        Value::Bool(_) => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got \"{raw}\"")),
        },
        Value::Number(_) => raw
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number, got \"{raw}\"")),
        Value::Array(_) if raw.starts_with('[') => {
            serde_json::from_str(raw).map_err(|e| format!("not a JSON array: {e}"))
        }
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        Value::Object(_) => {
            serde_json::from_str(raw).map_err(|e| format!("not a JSON object: {e}"))
        }
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Null => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into()))),
    }
}

/// Reads only the file layer, for `ferrocast config --check FILE`.
pub fn check_file(path: &Path) -> Result<Config, ConfigError> {
    Sources {
        file: Some(path.to_path_buf()),
        ..Sources::default()
    }
    .load_with_env(&[])
}
