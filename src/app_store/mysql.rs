//! Rows from MySQL or MariaDB, each as a JSON object of its columns. MySQL's types are poorer
//! than PostgreSQL's (a BOOLEAN is a TINYINT, a JSON column comes as text): `row.rs` gives each
//! value the type of the app setting it fills.

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, OptsBuilder, SslOpts, Value as Sql};
use serde_json::{Map, Value};

use super::{By, StoreError, filter};

/// TLS is asked for with `ssl-mode=REQUIRED` (MySQL's own name) or `require_ssl=true` in the
/// URL: rustls, trusting the system's CAs, or `app_store.ca_file` when it is set.
const TLS_PARAMS: [&str; 2] = ["ssl-mode=required", "require_ssl=true"];

/// The options of `url`, with TLS when it asks for it.
fn options(url: &str) -> Result<Opts, StoreError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = false;
    let kept: Vec<&str> = (query.split('&').filter(|p| !p.is_empty()))
        .filter(|p| {
            let asks = TLS_PARAMS.contains(&p.to_ascii_lowercase().as_str());
            tls |= asks;
            !asks
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let opts = Opts::from_url(&url).map_err(|e| StoreError::Connect(e.to_string()))?;
    if !tls {
        return Ok(opts);
    }
    let ssl = match super::ca_file() {
        Some(ca) => SslOpts::default().with_root_cert_path(Some(ca)),
        None => SslOpts::default(),
    };
    Ok(OptsBuilder::from_opts(opts).ssl_opts(Some(ssl)).into())
}

pub fn rows(url: &str, table: &str, by: By<'_>) -> Result<Vec<Map<String, Value>>, StoreError> {
    let mut conn = Conn::new(options(url)?).map_err(|e| StoreError::Connect(e.to_string()))?;
    let (clause, arg) = filter(by, "?");
    // `table` was checked to be a plain name (AppStoreConfig::validate).
    let sql = format!("SELECT * FROM {table}{clause}");
    let params = match arg {
        Some(v) => mysql::Params::Positional(vec![Sql::from(v)]),
        None => mysql::Params::Empty,
    };
    let rows: Vec<mysql::Row> = conn
        .exec(sql, params)
        .map_err(|e| StoreError::Query(e.to_string()))?;
    Ok(rows.iter().map(object).collect())
}

fn object(row: &mysql::Row) -> Map<String, Value> {
    let mut map = Map::new();
    for (i, column) in row.columns_ref().iter().enumerate() {
        let value = match row.as_ref(i) {
            None | Some(Sql::NULL) => Value::Null,
            Some(Sql::Bytes(b)) => Value::String(String::from_utf8_lossy(b).into_owned()),
            Some(Sql::Int(n)) => Value::from(*n),
            Some(Sql::UInt(n)) => Value::from(*n),
            Some(Sql::Float(f)) => Value::from(f64::from(*f)),
            Some(Sql::Double(f)) => Value::from(*f),
            Some(other) => Value::String(other.as_sql(true)),
        };
        map.insert(column.name_str().into_owned(), value);
    }
    map
}
