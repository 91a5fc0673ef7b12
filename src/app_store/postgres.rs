//! Rows from PostgreSQL, each as the JSON object PostgreSQL itself makes of it (`row_to_json`:
//! booleans, numbers and JSON columns keep their types).

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde_json::{Map, Value};

use super::{By, StoreError, filter};

/// A connection: over TLS (rustls, the system's CAs and `app_store.ca_file`) when the URL asks
/// for it with `sslmode=require`, `verify-ca` or `verify-full`; plain otherwise.
fn connect(url: &str) -> Result<Client, StoreError> {
    let tls = [
        "sslmode=require",
        "sslmode=verify-ca",
        "sslmode=verify-full",
    ];
    let result = if tls.iter().any(|m| url.contains(m)) {
        let config =
            crate::tls::client_config(super::ca_file().as_deref()).map_err(StoreError::Connect)?;
        let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone());
        Client::connect(url, connector)
    } else {
        Client::connect(url, NoTls)
    };
    result.map_err(|e| StoreError::Connect(e.to_string()))
}

pub fn rows(url: &str, table: &str, by: By<'_>) -> Result<Vec<Map<String, Value>>, StoreError> {
    let mut client = connect(url)?;
    let (clause, arg) = filter(by, "$1");
    // `table` was checked to be a plain name (AppStoreConfig::validate).
    let sql = format!("SELECT row_to_json(t)::text FROM {table} t{clause}");
    let result = match &arg {
        Some(v) => client.query(sql.as_str(), &[v]),
        None => client.query(sql.as_str(), &[]),
    };
    let rows = result.map_err(|e| StoreError::Query(e.to_string()))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let text: String = row
            .try_get(0)
            .map_err(|e| StoreError::Query(e.to_string()))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => out.push(map),
            _ => return Err(StoreError::Query("row_to_json gave no object".into())),
        }
    }
    Ok(out)
}

/// Waits up to `wait` for `NOTIFY ferrocast_apps` (the table's trigger sends it on every change)
/// and returns the ids announced: none when nothing changed meanwhile.
pub fn changes(url: &str, wait: std::time::Duration) -> Result<Vec<String>, StoreError> {
    let mut client = connect(url)?;
    client
        .batch_execute("LISTEN ferrocast_apps")
        .map_err(|e| StoreError::Query(e.to_string()))?;
    let mut notifications = client.notifications();
    let mut ids = Vec::new();
    let first = notifications.timeout_iter(wait).next();
    if let Some(n) = first.map_err(|e| StoreError::Query(e.to_string()))? {
        ids.push(n.payload().to_string());
        // Whatever else came with it (one transaction may change many rows).
        let mut rest = notifications.iter();
        while let Some(n) = rest.next().map_err(|e| StoreError::Query(e.to_string()))? {
            ids.push(n.payload().to_string());
        }
    }
    Ok(ids)
}
