//! One row of the apps table, as a JSON object of its columns, made into an app: columns are
//! named as the configuration file's app settings (`app_key` for `key`), NULL means the default,
//! each value takes the type of its setting (MySQL gives booleans as 0/1 and JSON as text), and
//! columns that are no setting (created_at, the operator's own) are left out.

use serde_json::{Map, Value};

use crate::config::AppConfig;

pub fn app_from_row(mut row: Map<String, Value>) -> Result<AppConfig, String> {
    if let Some(key) = row.remove("app_key") {
        row.insert("key".into(), key);
    }
    let which = row
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let defaults = serde_json::to_value(AppConfig::default()).map_err(|e| e.to_string())?;
    let mut app = Map::new();
    for (column, value) in row {
        let Some(default) = defaults.get(&column) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let value =
            typed(default, value).map_err(|e| format!("app \"{which}\": column {column}: {e}"))?;
        app.insert(column, value);
    }
    let app: AppConfig =
        serde_json::from_value(Value::Object(app)).map_err(|e| format!("app \"{which}\": {e}"))?;
    app.validate(&format!("app \"{which}\""))?;
    Ok(app)
}

/// `value` as the type of the setting whose default is `default`.
fn typed(default: &Value, value: Value) -> Result<Value, String> {
    Ok(match (default, value) {
        (Value::Bool(_), Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        (Value::Bool(_), Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "yes" | "on" => Value::Bool(true),
            "0" | "f" | "false" | "no" | "off" => Value::Bool(false),
            _ => return Err(format!("\"{s}\" is not a boolean")),
        },
        (Value::Number(_), Value::String(s)) => {
            let n: u64 = s
                .trim()
                .parse()
                .map_err(|_| format!("\"{s}\" is not a whole number"))?;
            Value::from(n)
        }
        (Value::Array(_) | Value::Object(_) | Value::Null, Value::String(s))
            if s.trim_start().starts_with(['[', '{']) =>
        {
            serde_json::from_str(&s).map_err(|e| format!("not JSON: {e}"))?
        }
        (_, v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn a_mysql_row_takes_the_settings_types() {
        let app = app_from_row(row(json!({
            "id": "7", "app_key": "k7", "secret": "s", "enabled": 0,
            "enable_client_messages": "1", "max_connections": "250",
            "history": "[{\"prefix\": \"orders.\", \"size\": 100, \"ttl_secs\": 300}]",
            "webhooks": null, "created_at": "2026-12-03 17:00:00", "owner": "team-a"
        })))
        .expect("an app");
        assert_eq!((app.id.as_str(), app.key.as_str()), ("7", "k7"));
        assert!(!app.enabled && app.enable_client_messages);
        assert_eq!(app.max_connections, 250);
        assert_eq!(app.history[0].prefix, "orders.");
        assert_eq!(
            app.webhooks,
            AppConfig::default().webhooks,
            "NULL is the default"
        );
    }

    #[test]
    fn a_bad_row_names_its_app_and_column() {
        let err = app_from_row(row(json!({"id": "9", "app_key": "k", "secret": "s",
                                          "enabled": "maybe"})))
        .unwrap_err();
        assert!(
            err.contains("app \"9\"") && err.contains("enabled"),
            "{err}"
        );
        let err = app_from_row(row(json!({"id": "9", "app_key": "", "secret": "s"}))).unwrap_err();
        assert!(err.contains("must not be empty"), "{err}");
    }
}
