//! Where the database is: a `DATABASE_URL`, or the embedded private cluster.

pub mod coalesce;
pub mod embedded;
pub mod migrate;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{DbContext, Error, Result};

/// A database the commands talk to. Holds the embedded cluster (if any) so
/// that the server outlives every connection made through it.
pub struct Database {
    config: Config,
    /// Human-readable target with no password in it.
    pub display: String,
    cluster: Mutex<Option<embedded::Cluster>>,
}

impl Database {
    /// Connect to `url`, or start the embedded cluster in `pg_dir` (default:
    /// a per-user directory) and use its `settle` database.
    pub async fn open(url: Option<&str>, pg_dir: Option<PathBuf>) -> Result<Self> {
        Self::open_named(url, pg_dir, "settle").await
    }

    pub async fn open_named(
        url: Option<&str>,
        pg_dir: Option<PathBuf>,
        dbname: &str,
    ) -> Result<Self> {
        match url {
            Some(url) => {
                let config = Config::from_str(url).map_err(|e| {
                    Error::Usage(format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))
                })?;
                let display = describe(&config);
                Ok(Database {
                    config,
                    display,
                    cluster: Mutex::new(None),
                })
            }
            None => {
                let dir = pg_dir.unwrap_or_else(embedded::default_dir);
                Self::on_cluster(embedded::Cluster::new(dir)?, dbname).await
            }
        }
    }

    /// Starts `cluster` if needed (it stays up while this value lives) and
    /// uses its database `dbname`, created when missing.
    pub async fn on_cluster(mut cluster: embedded::Cluster, dbname: &str) -> Result<Self> {
        cluster.ensure_running()?;
        let admin =
            Config::from_str(&cluster.url("postgres")).map_err(|e| Error::Usage(e.to_string()))?;
        // A standby is read-only: its databases come from the primary.
        if !cluster.is_standby() {
            create_database_if_missing(&admin, dbname).await?;
        }
        let config =
            Config::from_str(&cluster.url(dbname)).map_err(|e| Error::Usage(e.to_string()))?;
        Ok(Database {
            display: format!("embedded cluster at {}", cluster.socket_dir().display()),
            config,
            cluster: Mutex::new(Some(cluster)),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn is_embedded(&self) -> bool {
        self.cluster.lock().map(|c| c.is_some()).unwrap_or(false)
    }

    /// The socket directory of the embedded cluster, for psql/pgbench.
    pub fn embedded_socket_dir(&self) -> Option<PathBuf> {
        self.cluster
            .lock()
            .ok()?
            .as_ref()
            .map(|c| c.socket_dir().to_path_buf())
    }

    /// A connection driven by a task on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client> {
        connect(&self.config).await
    }

    /// Stop using the embedded server now (the last user stops it).
    pub fn release(&self) {
        if let Ok(mut guard) = self.cluster.lock() {
            if let Some(mut c) = guard.take() {
                c.release();
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.release();
    }
}

/// Connect with `config`, spawning the connection on the current runtime.
pub async fn connect(config: &Config) -> Result<Client> {
    let (client, connection) = config.connect(NoTls).await.map_err(|pg| Error::Connect {
        target: describe(config),
        pg,
    })?;
    spawn_connection(connection);
    Ok(client)
}

/// A connection that has run `LISTEN channel`, and a receiver that gets a
/// unit per notification on it. The receiver ends when the connection does.
pub async fn listen(
    config: &Config,
    channel: &str,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<()>)> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(NoTls).await.map_err(|pg| Error::Connect {
        target: describe(config),
        pg,
    })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("listening connection closed: {e}");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
        .await
        .db("listening for claimable partitions")?;
    Ok((client, rx))
}

/// Drives a connection on the current runtime until it closes.
fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// A connection for streaming `COPY ... TO STDOUT`: the same as `connect`,
/// over a socket that merges CopyData messages (see `coalesce`). Falls back
/// to `connect` when the configuration needs what only it does (no host
/// given, or TLS).
pub async fn connect_copy(config: &Config) -> Result<Client> {
    use tokio_postgres::config::{Host, SslMode};
    if config.get_hosts().is_empty()
        || !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer)
    {
        return connect(config).await;
    }
    let ports = config.get_ports();
    let mut last_err: Option<std::io::Error> = None;
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports
            .get(i)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432);
        let socket = match host {
            Host::Unix(dir) => {
                tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                    .await
                    .map(coalesce::Socket::Unix)
            }
            Host::Tcp(name) => tokio::net::TcpStream::connect((name.as_str(), port))
                .await
                .and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(coalesce::Socket::Tcp(s))
                }),
        };
        match socket {
            Ok(socket) => {
                let (client, connection) = config
                    .connect_raw(coalesce::Coalescing::new(socket), NoTls)
                    .await
                    .map_err(|pg| Error::Connect {
                        target: describe(config),
                        pg,
                    })?;
                spawn_connection(connection);
                return Ok(client);
            }
            Err(e) => last_err = Some(e),
        }
    }
    // Let tokio-postgres make (and word) the same failure.
    tracing::debug!("direct connection failed: {last_err:?}");
    connect(config).await
}

fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "database '{}' on {}",
        config.get_dbname().unwrap_or("?"),
        hosts.join(",")
    )
}

async fn create_database_if_missing(admin: &Config, dbname: &str) -> Result<()> {
    let client = connect(admin).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await
        .db("looking up the settle database")?
        .is_some();
    if !exists {
        let sql = format!("CREATE DATABASE {}", quote_ident(dbname));
        if let Err(e) = client.batch_execute(&sql).await {
            // A concurrent process may have created it first.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(e).db(format!("creating database {dbname}"));
            }
        }
    }
    Ok(())
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
