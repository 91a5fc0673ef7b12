//! Apps from a database table (`app_store` in the configuration; `migrations/` holds the
//! tables). This is the worker side: `ferrocast app-store key|id|all [VALUE]` runs in a forked
//! child, reads the rows, and prints each app as one JSON line, so the server's loop never waits
//! on a database and the server process never holds a driver's threads.

mod mysql;
mod postgres;
mod row;

pub use row::app_from_row;

use crate::config::AppConfig;

/// Which rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By<'a> {
    Key(&'a str),
    Id(&'a str),
    All,
}

/// Where the apps are: the `app_store` settings the worker gets from its environment.
pub struct Store {
    pub driver: String,
    pub url: String,
    pub table: String,
}

/// Why the apps could not be read (the worker's stderr, so the server's log).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach the app store: {0}")]
    Connect(String),
    #[error("the app store's query failed: {0}")]
    Query(String),
    #[error("app_store.driver \"{0}\" reads no database")]
    Driver(String),
}

impl Store {
    /// The settings from FERROCAST_APP_STORE_DRIVER, _URL and _TABLE (the server passes them to
    /// its worker in the environment, so the password is never in a command line).
    pub fn from_env() -> Store {
        let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
        Store {
            driver: var("FERROCAST_APP_STORE_DRIVER", "file"),
            url: var("FERROCAST_APP_STORE_URL", ""),
            table: var("FERROCAST_APP_STORE_TABLE", "ferrocast_apps"),
        }
    }

    /// The apps the rows give; a row that is not a valid app is skipped with a message in
    /// `skipped` (one bad row must not hide the others).
    pub fn fetch(
        &self,
        by: By<'_>,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<AppConfig>, StoreError> {
        let check = crate::config::AppStoreConfig {
            driver: self.driver.clone(),
            url: self.url.clone(),
            table: self.table.clone(),
            ..Default::default()
        };
        check.validate().map_err(StoreError::Connect)?;
        let rows = match self.driver.as_str() {
            "postgres" => postgres::rows(&self.url, &self.table, by)?,
            "mysql" => mysql::rows(&self.url, &self.table, by)?,
            other => return Err(StoreError::Driver(other.into())),
        };
        let mut apps = Vec::new();
        for row in rows {
            match app_from_row(row) {
                Ok(app) => apps.push(app),
                Err(e) => skipped.push(e),
            }
        }
        Ok(apps)
    }
}

impl Store {
    /// Waits up to `wait` for changes to the table (PostgreSQL's `NOTIFY`); the ids changed.
    pub fn changes(&self, wait: std::time::Duration) -> Result<Vec<String>, StoreError> {
        match self.driver.as_str() {
            "postgres" => postgres::changes(&self.url, wait),
            other => Err(StoreError::Driver(other.into())),
        }
    }
}

/// CA certificates (PEM) to trust for TLS to the database, besides the system's
/// (FERROCAST_APP_STORE_CA_FILE, from `app_store.ca_file`).
fn ca_file() -> Option<std::path::PathBuf> {
    std::env::var_os("FERROCAST_APP_STORE_CA_FILE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
}

/// The WHERE clause for `by`, with the driver's placeholder.
fn filter(by: By<'_>, placeholder: &str) -> (String, Option<String>) {
    match by {
        By::Key(k) => (
            format!(" WHERE app_key = {placeholder}"),
            Some(k.to_string()),
        ),
        By::Id(i) => (format!(" WHERE id = {placeholder}"), Some(i.to_string())),
        By::All => (String::new(), None),
    }
}
