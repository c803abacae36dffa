//! `settle serve`: flags to a checked `ServeConfig`, then the server runs
//! until SIGTERM; the work is in `settle::serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use settle::serve::{self, ServeConfig, SystemClock};
use settle::Settle;

use super::args::ConnArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs a token.
    #[arg(long, default_value = "127.0.0.1:8085")]
    pub bind: SocketAddr,
    /// File holding the admin token (read and write). Or set SETTLE_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding a read-only token (GET only).
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// Serve the API without a token (loopback only; logs a warning).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// On SIGTERM wait for a running execution instead of stopping it.
    #[arg(long)]
    pub drain: bool,
    /// Do not run the scheduler in this process (API and console only).
    #[arg(long)]
    pub no_scheduler: bool,
}

fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        settle::Error::Usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim().to_string())
}

pub async fn serve(conn: &ConnArgs, args: ServeArgs) -> anyhow::Result<i32> {
    let admin_token = match &args.token_file {
        Some(p) => Some(read_token(p)?),
        None => std::env::var("SETTLE_TOKEN")
            .ok()
            .map(|t| t.trim().to_string()),
    };
    let read_token = args.read_token_file.as_ref().map(read_token).transpose()?;
    let cfg = ServeConfig {
        bind: args.bind,
        admin_token,
        read_token,
        insecure_no_auth: args.insecure_no_auth,
        drain: args.drain,
        scheduler: !args.no_scheduler,
    };
    cfg.check()?;
    let settle = Settle::connect(&conn.config()).await?;
    let server = serve::start(settle, &cfg, Arc::new(SystemClock)).await?;
    eprintln!(
        "settle serve: listening on http://{} (console /, API /api, /metrics, /health)",
        server.addr
    );
    serve::terminated().await?;
    eprintln!(
        "settle serve: shutting down; {} run(s) in flight {}",
        server.state.runs.running(),
        if cfg.drain {
            "will be waited for"
        } else {
            "are stopped"
        }
    );
    server.shutdown().await?;
    Ok(0)
}
