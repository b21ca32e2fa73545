//! PostgreSQL for tests: a fresh schema per test in the database named by
//! `CHATD_TEST_POSTGRES_URL` (default `postgres://root@127.0.0.1:5432/test`, which `.ci/run`
//! provides), dropped again when the test ends, pass or fail.

use std::sync::atomic::{AtomicUsize, Ordering};

use chatd::config::Database;
use chatd::store::postgres::PostgresConfig;

/// The database tests create their schemas in.
pub fn base_url() -> String {
    std::env::var("CHATD_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test; dropped (best effort) on drop.
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// The database URL with `schema=` set to it.
    pub url: String,
}

impl Schema {
    /// A new, unique schema name (chatd creates the schema on first connect).
    pub fn fresh() -> Schema {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name =
            format!("chatd_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let base = base_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}schema={name}");
        Schema { name, url }
    }

    /// The store configuration for this schema.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig::from_url(&self.url).expect("test PostgreSQL URL")
    }

    /// The chatd database setting for this schema.
    pub fn database(&self) -> Database {
        Database::Postgres(Box::new(self.config()))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // A thread of its own, so this works inside and outside a runtime.
        let (base, name) = (base_url(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(&base, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test schema {}", self.name);
        }
    }
}
