//! Test support: a fresh, migrated database per test on a real server, from
//! `DATABASE_URL` when set, else from a private cluster shared by all test
//! processes of this checkout (under `target/`).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio_postgres::{Client, Config};

use crate::db::{self, Database};
use crate::error::{DbContext, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The private cluster directory used by tests when `DATABASE_URL` is unset.
pub fn test_cluster_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SETTLE_TEST_PG_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("settle-test-pg")
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: Database,
    config: Config,
}

impl TestDb {
    /// Creates and migrates a uniquely named database.
    pub async fn new() -> Result<TestDb> {
        let env_url = std::env::var("DATABASE_URL").ok();
        let admin =
            Database::open_named(env_url.as_deref(), Some(test_cluster_dir()), "postgres").await?;
        let name = format!(
            "settle_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let client = admin.connect().await?;
        client
            .batch_execute(&format!("CREATE DATABASE {}", db::quote_ident(&name)))
            .await
            .db("creating a test database")?;
        let mut config = admin.config().clone();
        config.dbname(&name);
        let url = config_url(&config, &name, env_url.as_deref());
        let db = TestDb {
            name,
            url,
            admin,
            config,
        };
        let mut c = db.connect().await?;
        crate::db::migrate::migrate(&mut c).await?;
        Ok(db)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub async fn connect(&self) -> Result<Client> {
        db::connect(&self.config).await
    }

    /// Fills `videos` and `viewing_log` with `settle datagen` given these
    /// flags; panics if they do not parse or the load fails, as a test would.
    pub async fn generate(&self, flags: &[&str]) -> settle_datagen::Summary {
        let args = settle_datagen::DatagenArgs::from_flags(flags).expect("datagen flags parse");
        settle_datagen::run(&args, &self.config)
            .await
            .expect("datagen runs")
    }

    /// A `Database` handle on this test database, as the commands use.
    pub async fn database(&self) -> Result<Database> {
        Database::open(Some(&self.url), None).await
    }

    /// Drop the database (call at the end of a passing test; a failing test
    /// leaves its database behind for inspection).
    pub async fn drop_db(self) {
        if let Ok(c) = self.admin.connect().await {
            let _ = c
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    db::quote_ident(&self.name)
                ))
                .await;
        }
    }
}

/// A URL for `config` (so subprocesses and `Database::open` can use it).
fn config_url(config: &Config, name: &str, env_url: Option<&str>) -> String {
    if let Some(url) = env_url {
        let mut c = Config::from_str(url).expect("DATABASE_URL parsed before");
        c.dbname(name);
        // Rebuild from parts: tokio-postgres has no Config -> URL.
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("postgres");
        let pw = c
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        return format!("postgresql://{user}{pw}@/{name}?host={host}&port={port}");
    }
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        None => "localhost".into(),
    };
    format!(
        "postgresql://{}@/{name}?host={host}&port={}",
        config.get_user().unwrap_or(db::embedded::ROLE),
        config
            .get_ports()
            .first()
            .copied()
            .unwrap_or(db::embedded::PORT)
    )
}
