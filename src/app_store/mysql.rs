//! Rows from MySQL or MariaDB, each as a JSON object of its columns. MySQL's types are poorer
//! than PostgreSQL's (a BOOLEAN is a TINYINT, a JSON column comes as text): `row.rs` gives each
//! value the type of the app setting it fills.

use mysql::prelude::Queryable;
use mysql::{Conn, Opts, Value as Sql};
use serde_json::{Map, Value};

use super::{By, StoreError, filter};

pub fn rows(url: &str, table: &str, by: By<'_>) -> Result<Vec<Map<String, Value>>, StoreError> {
    let opts = Opts::from_url(url).map_err(|e| StoreError::Connect(e.to_string()))?;
    let mut conn = Conn::new(opts).map_err(|e| StoreError::Connect(e.to_string()))?;
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
