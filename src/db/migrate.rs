//! Numbered SQL migrations, embedded in the binary so it works away from the
//! source tree. Each applied file is recorded with its SHA-256; an edited
//! file is refused rather than silently re-applied or ignored.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::error::{DbContext, Error, Result};

pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_input_and_results.sql",
        sql: include_str!("../../sql/migrations/0001_input_and_results.sql"),
    },
    Migration {
        name: "0002_job_repository.sql",
        sql: include_str!("../../sql/migrations/0002_job_repository.sql"),
    },
    Migration {
        name: "0003_partition_result_storage.sql",
        sql: include_str!("../../sql/migrations/0003_partition_result_storage.sql"),
    },
    Migration {
        name: "0004_settled_day_tail.sql",
        sql: include_str!("../../sql/migrations/0004_settled_day_tail.sql"),
    },
    Migration {
        name: "0005_execution_snapshot.sql",
        sql: include_str!("../../sql/migrations/0005_execution_snapshot.sql"),
    },
    Migration {
        name: "0006_clear_unreachable_results.sql",
        sql: include_str!("../../sql/migrations/0006_clear_unreachable_results.sql"),
    },
    Migration {
        name: "0007_input_changes.sql",
        sql: include_str!("../../sql/migrations/0007_input_changes.sql"),
    },
    Migration {
        name: "0008_run_refusals.sql",
        sql: include_str!("../../sql/migrations/0008_run_refusals.sql"),
    },
    Migration {
        name: "0010_verification.sql",
        sql: include_str!("../../sql/migrations/0010_verification.sql"),
    },
    Migration {
        name: "0011_serve.sql",
        sql: include_str!("../../sql/migrations/0011_serve.sql"),
    },
    Migration {
        name: "0012_ingest_retention.sql",
        sql: include_str!("../../sql/migrations/0012_ingest_retention.sql"),
    },
    Migration {
        name: "0013_unsettle.sql",
        sql: include_str!("../../sql/migrations/0013_unsettle.sql"),
    },
    Migration {
        name: "0014_remote_partitions.sql",
        sql: include_str!("../../sql/migrations/0014_remote_partitions.sql"),
    },
];

/// Serialises concurrent `migrate` calls on one database.
const MIGRATE_LOCK: i64 = 0x5e77_1e00_0000_0001;

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub applied: Vec<String>,
    pub already: Vec<String>,
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Migrations not yet applied to this database (all of them when it has
/// no settle schema). Reads only; creates nothing.
pub async fn pending(client: &Client) -> Result<Vec<String>> {
    let has_table: bool = client
        .query_one("SELECT to_regclass('settle_migrations') IS NOT NULL", &[])
        .await
        .db("looking for the settle schema")?
        .get(0);
    let applied: Vec<String> = if has_table {
        client
            .query("SELECT name FROM settle_migrations", &[])
            .await
            .db("reading the applied migrations")?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .filter(|m| !applied.iter().any(|a| a == m.name))
        .map(|m| m.name.to_string())
        .collect())
}

pub async fn migrate(client: &mut Client) -> Result<Report> {
    migrate_with(client, MIGRATIONS).await
}

pub async fn migrate_with(client: &mut Client, migrations: &[Migration]) -> Result<Report> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS settle_migrations (
                 name text PRIMARY KEY,
                 checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .or_else(|e| {
            // Two first-time migrations may race on CREATE TABLE IF NOT EXISTS.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .db("creating the migrations table")?;
    let tx = client.transaction().await.db("starting the migration")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .db("taking the migration lock")?;
    let rows = tx
        .query("SELECT name, checksum FROM settle_migrations", &[])
        .await
        .db("reading applied migrations")?;
    let applied: std::collections::HashMap<String, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut report = Report::default();
    for m in migrations {
        let sum = checksum(m.sql);
        match applied.get(m.name) {
            Some(old) if *old == sum => report.already.push(m.name.to_string()),
            Some(old) => {
                return Err(Error::MigrationEdited {
                    name: m.name.to_string(),
                    applied: old.clone(),
                    current: sum,
                })
            }
            None => {
                tx.batch_execute(m.sql)
                    .await
                    .db(format!("applying migration {}", m.name))?;
                tx.execute(
                    "INSERT INTO settle_migrations (name, checksum) VALUES ($1, $2)",
                    &[&m.name, &sum],
                )
                .await
                .db("recording the migration")?;
                report.applied.push(m.name.to_string());
            }
        }
    }
    tx.commit().await.db("committing the migrations")?;
    Ok(report)
}
