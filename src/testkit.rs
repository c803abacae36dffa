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
        Self::new_on(admin, env_url.as_deref()).await
    }

    /// Creates and migrates a uniquely named database on `admin`'s server
    /// (`env_url`: the URL `admin` came from, if any).
    pub async fn new_on(admin: Database, env_url: Option<&str>) -> Result<TestDb> {
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
        let url = config_url(&config, &name, env_url);
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

/// A primary and a streaming hot standby made from it with
/// `pg_basebackup -R`, each on its own socket directory under `root`
/// (default: beside the test cluster), from the same server binaries.
/// Both stay up while this value (or another process's) lives.
pub struct ReplicaPair {
    pub primary: Database,
    pub standby: Database,
    primary_dir: PathBuf,
}

/// A test database created on the primary and replayed on the standby.
pub struct ReplicaDb {
    pub db: TestDb,
    /// The same database through the standby.
    pub standby_url: String,
    pub standby_config: Config,
}

impl ReplicaPair {
    pub async fn start() -> Result<ReplicaPair> {
        let mut root = test_cluster_dir().into_os_string();
        root.push("-replica");
        let root = PathBuf::from(root);
        let primary_dir = root.join("primary");
        let primary = db::embedded::Cluster::new(primary_dir.clone())?
            .with_settings(db::embedded::replication_settings());
        let primary = Database::on_cluster(primary, "postgres").await?;
        let standby = db::embedded::Cluster::new(root.join("standby"))?
            .with_settings(vec![("hot_standby_feedback", "on".into())])
            .standby_of(primary_dir.clone());
        let standby = Database::on_cluster(standby, "postgres").await?;
        Ok(ReplicaPair {
            primary,
            standby,
            primary_dir,
        })
    }

    /// A fresh migrated database on the primary, once the standby has it.
    pub async fn database(&self) -> Result<ReplicaDb> {
        let cluster = db::embedded::Cluster::new(self.primary_dir.clone())?;
        let db = TestDb::new_on(Database::on_cluster(cluster, "postgres").await?, None).await?;
        self.caught_up().await?;
        let mut standby_config = self.standby.config().clone();
        standby_config.dbname(&db.name);
        let standby_url = config_url(&standby_config, &db.name, None);
        Ok(ReplicaDb {
            db,
            standby_url,
            standby_config,
        })
    }

    /// Waits until the standby has replayed everything the primary wrote.
    pub async fn caught_up(&self) -> Result<()> {
        let p = self.primary.connect().await?;
        let s = self.standby.connect().await?;
        let lsn: String = p
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .db("reading the primary's WAL position")?
            .get(0);
        for _ in 0..600 {
            let done: bool = s
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                    &[&lsn],
                )
                .await
                .db("reading the standby's replay position")?
                .get(0);
            if done {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(crate::Error::Tool(format!(
            "the standby did not replay the primary's WAL up to {lsn} within a minute"
        )))
    }
}
