//! The embedded default: a private PostgreSQL cluster started from the
//! machine's server binaries when no `DATABASE_URL` is given.
//!
//! Lifecycle: the cluster directory is created once (`initdb`) and reused.
//! Every process that uses the server holds a shared `flock` on `users.lock`;
//! when a process is done it tries to take that lock exclusively, and if it
//! can, nobody else is using the server and it stops it. So the last user out
//! stops the server and no postgres process is left behind, while concurrent
//! test binaries share one server safely.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Superuser role created by initdb; the embedded cluster trusts local sockets.
pub const ROLE: &str = "settle";
/// Present while `settle db start` asked for the server to stay up.
const KEEP_FILE: &str = "keep-running";
/// The port only names the socket file; nothing listens on TCP.
pub const PORT: u16 = 5432;

/// Settings tuned for one bulk job on a small machine: big sequential reads,
/// big sorts and COPY-heavy writes with WAL kept to a minimum.
fn tuning() -> Vec<(&'static str, String)> {
    let mem_mib = total_memory_mib().unwrap_or(4096);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let shared = (mem_mib / 8).clamp(128, 4096);
    let maint = (mem_mib / 16).clamp(64, 2048);
    vec![
        ("listen_addresses", "''".into()),
        ("max_connections", "300".into()),
        ("shared_buffers", format!("{shared}MB")),
        ("work_mem", "128MB".into()),
        ("maintenance_work_mem", format!("{maint}MB")),
        ("wal_level", "minimal".into()),
        ("max_wal_senders", "0".into()),
        ("max_wal_size", "16GB".into()),
        ("checkpoint_timeout", "30min".into()),
        ("wal_compression", "off".into()),
        ("synchronous_commit", "on".into()),
        ("max_worker_processes", format!("{}", (cores * 2).max(8))),
        ("max_parallel_workers", format!("{}", cores.max(2))),
        (
            "max_parallel_workers_per_gather",
            format!("{}", cores.max(2)),
        ),
        (
            "max_parallel_maintenance_workers",
            format!("{}", cores.max(2)),
        ),
        ("random_page_cost", "1.1".into()),
        ("effective_cache_size", format!("{}MB", mem_mib / 2)),
        ("jit", "off".into()),
        ("synchronize_seqscans", "off".into()),
        ("log_min_messages", "warning".into()),
        ("logging_collector", "off".into()),
    ]
}

fn total_memory_mib() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Where the server binaries are: PATH first, then the Debian layout.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("pg_ctl").is_file() && dir.join("initdb").is_file() {
                // Resolve symlinks so that `postgres` is found beside pg_ctl.
                let real = fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir);
                return Ok(real);
            }
        }
    }
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| d.join("pg_ctl").is_file())
        .ok_or(Error::NoPostgres)
}

/// The default cluster directory. Root's home is not reachable by the
/// unprivileged server user, so root gets a directory under /var/lib.
pub fn default_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/settle/pg");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("settle/pg");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/settle/pg");
    }
    PathBuf::from("/tmp/settle-pg")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The unprivileged account the server runs as when we are root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some(RunAs {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        } else {
            None
        }
    })
}

/// A running (or startable) private cluster, plus this process's claim on it.
pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    run_as: Option<RunAs>,
    /// Held shared for as long as this process uses the server.
    users_lock: Option<File>,
    /// Settings written after the tuning at initdb (later lines win).
    extra: Vec<(&'static str, String)>,
    /// Made as a streaming hot standby of the cluster whose socket
    /// directory this is (`pg_basebackup -R`), instead of by initdb.
    standby_of: Option<PathBuf>,
}

/// What a primary needs for streaming replicas: WAL for them, senders,
/// and standbys that tell it which rows their snapshots still need, so a
/// long partition read on a standby is not cancelled by replayed vacuum.
pub fn replication_settings() -> Vec<(&'static str, String)> {
    vec![
        ("wal_level", "replica".into()),
        ("max_wal_senders", "8".into()),
        ("hot_standby", "on".into()),
        ("hot_standby_feedback", "on".into()),
    ]
}

impl Cluster {
    /// `root` holds `data/` (PGDATA), the socket and the lock files.
    pub fn new(root: PathBuf) -> Result<Self> {
        let bin = find_bin_dir()?;
        let run_as = if is_root() {
            let user = std::env::var("SETTLE_PG_USER").unwrap_or_else(|_| "postgres".into());
            Some(lookup_user(&user).ok_or_else(|| Error::Embedded {
                dir: root.clone(),
                action: "started",
                detail: format!(
                    "PostgreSQL refuses to run as root and there is no '{user}' user to run it as; create one (useradd -r {user}) or set SETTLE_PG_USER"
                ),
            })?)
        } else {
            None
        };
        Ok(Cluster {
            root,
            bin,
            run_as,
            users_lock: None,
            extra: Vec::new(),
            standby_of: None,
        })
    }

    /// A cluster initialised with these settings after the tuning (e.g.
    /// [`replication_settings`]); they apply when initdb first runs.
    pub fn with_settings(mut self, extra: Vec<(&'static str, String)>) -> Self {
        self.extra = extra;
        self
    }

    /// A cluster made, on first start, as a hot standby of the running
    /// cluster at `primary` (its root, the socket directory).
    pub fn standby_of(mut self, primary: PathBuf) -> Self {
        self.standby_of = Some(primary);
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The socket directory (the cluster root itself).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{ROLE}@/{dbname}?host={}&port={PORT}",
            self.root.display()
        )
    }

    fn err(&self, action: &'static str, detail: impl Into<String>) -> Error {
        Error::Embedded {
            dir: self.root.clone(),
            action,
            detail: detail.into(),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        if let Some(user) = self.run_as {
            cmd.uid(user.uid).gid(user.gid);
            // std drops root's supplementary groups when a uid is set.
            cmd.env("HOME", &self.root);
        }
        cmd.env_remove("PGDATA").env("LC_ALL", "C");
        cmd
    }

    fn lock_file(&self, name: &str) -> Result<File> {
        let path = self.root.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.err("locked", format!("{}: {e}", path.display())))
    }

    fn prepare_root(&self) -> Result<()> {
        fs::create_dir_all(&self.root)
            .map_err(|e| self.err("created", format!("{}: {e}", self.root.display())))?;
        if let Some(user) = self.run_as {
            // The server user must reach the directory: open up the path to
            // it (execute only) and hand the root itself over.
            let mut p = self.root.as_path();
            while let Some(parent) = p.parent() {
                if parent.as_os_str().is_empty() {
                    break;
                }
                if let Ok(meta) = fs::metadata(parent) {
                    let mode = meta.permissions().mode();
                    if mode & 0o001 == 0 && parent != Path::new("/") {
                        let _ =
                            fs::set_permissions(parent, fs::Permissions::from_mode(mode | 0o001));
                    }
                }
                p = parent;
            }
            chown(&self.root, user)?;
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o755))
                .map_err(|e| self.err("created", e.to_string()))?;
        }
        Ok(())
    }

    /// Initialise (once) and start (if not running) the server, and register
    /// this process as a user of it.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.prepare_root()?;
        let control = self.lock_file("control.lock")?;
        flock(&control, libc::LOCK_EX).map_err(|e| self.err("locked", e.to_string()))?;
        let users = self.lock_file("users.lock")?;
        flock(&users, libc::LOCK_SH).map_err(|e| self.err("locked", e.to_string()))?;
        self.users_lock = Some(users);

        let data = self.data_dir();
        if !data.join("PG_VERSION").is_file() {
            match &self.standby_of {
                Some(primary) => self.basebackup(&data, primary)?,
                None => self.initdb(&data)?,
            }
        }
        if !self.is_running() {
            self.start(&data)?;
        }
        drop(control);
        Ok(())
    }

    fn initdb(&self, data: &Path) -> Result<()> {
        if data.exists() {
            // A half-made directory from an interrupted initdb: start over.
            fs::remove_dir_all(data).map_err(|e| self.err("initialised", e.to_string()))?;
        }
        tracing::info!(dir = %data.display(), "initialising embedded PostgreSQL cluster");
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(data)
            .args(["-U", ROLE, "--auth=trust", "--encoding=UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.err("initialised", e.to_string()))?;
        if !out.status.success() {
            return Err(self.err(
                "initialised",
                format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let mut conf = String::from("\n# settle: tuned for the nightly settlement workload\n");
        for (k, v) in tuning().into_iter().chain(self.extra.iter().cloned()) {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\nport = {PORT}\n",
            self.root.display()
        ));
        self.append_conf(data, &conf)
    }

    /// Appends settings to the cluster's postgresql.conf (later lines win).
    fn append_conf(&self, data: &Path, conf: &str) -> Result<()> {
        let path = data.join("postgresql.conf");
        let mut existing =
            fs::read_to_string(&path).map_err(|e| self.err("initialised", e.to_string()))?;
        existing.push_str(conf);
        fs::write(&path, existing).map_err(|e| self.err("initialised", e.to_string()))
    }

    /// Whether this cluster is a standby (`pg_basebackup -R` left
    /// `standby.signal` in its data directory).
    pub fn is_standby(&self) -> bool {
        self.data_dir().join("standby.signal").is_file()
    }

    /// Copies the running primary with `pg_basebackup -R` (which writes
    /// `standby.signal` and the `primary_conninfo` to stream from it), then
    /// points the copy's socket at its own directory.
    fn basebackup(&self, data: &Path, primary: &Path) -> Result<()> {
        if data.exists() {
            fs::remove_dir_all(data).map_err(|e| self.err("initialised", e.to_string()))?;
        }
        let out = self
            .command("pg_basebackup")
            .arg("-D")
            .arg(data)
            .arg("-h")
            .arg(primary)
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                ROLE,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.err("initialised", e.to_string()))?;
        if !out.status.success() {
            return Err(self.err(
                "initialised",
                format!(
                    "pg_basebackup from {} failed: {}",
                    primary.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let mut conf = format!(
            "\n# settle: a hot standby of {}\nunix_socket_directories = '{}'\nport = {PORT}\n",
            primary.display(),
            self.root.display()
        );
        for (k, v) in &self.extra {
            conf.push_str(&format!("{k} = {v}\n"));
        }
        self.append_conf(data, &conf)
    }

    /// Running means the postmaster in postmaster.pid is alive.
    pub fn is_running(&self) -> bool {
        let Ok((pid, _)) = postmaster_pid(&self.data_dir()) else {
            return false;
        };
        // SAFETY: signal 0 only checks for existence.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    fn start(&self, data: &Path) -> Result<()> {
        let log = self.root.join("server.log");
        if let Some(user) = self.run_as {
            let _ = File::create(&log).and_then(|_| chown_io(&log, user));
        }
        tracing::info!(dir = %data.display(), "starting embedded PostgreSQL");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "start"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.err("started", e.to_string()))?;
        if !out.status.success() {
            let tail = fs::read_to_string(&log)
                .map(|s| s.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            return Err(self.err(
                "started",
                format!(
                    "pg_ctl start failed: {} {}; see {}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    tail,
                    log.display()
                ),
            ));
        }
        Ok(())
    }

    /// Keep the server running after this process exits, until `stop_now`.
    pub fn keep_running(&self) -> Result<()> {
        self.prepare_root()?;
        fs::write(self.root.join(KEEP_FILE), b"settle db start\n")
            .map_err(|e| self.err("kept running", e.to_string()))
    }

    /// Stop the server now, whoever else uses it (for `settle db stop`).
    pub fn stop_now(&self) -> Result<bool> {
        let _ = fs::remove_file(self.root.join(KEEP_FILE));
        if !self.is_running() {
            return Ok(false);
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "120", "-m", "fast", "stop"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.err("stopped", e.to_string()))?;
        if !out.status.success() {
            return Err(self.err(
                "stopped",
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(true)
    }

    /// Give up this process's claim; stop the server if nobody else has one.
    pub fn release(&mut self) {
        let Some(users) = self.users_lock.take() else {
            return;
        };
        if std::env::var_os("SETTLE_KEEP_PG").is_some() || self.root.join(KEEP_FILE).exists() {
            return;
        }
        let Ok(control) = self.lock_file("control.lock") else {
            return;
        };
        if flock(&control, libc::LOCK_EX).is_err() {
            return;
        }
        // Upgrade to exclusive without blocking: success means we are last.
        if flock(&users, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            if let Err(e) = self.stop_now() {
                tracing::warn!("could not stop the embedded PostgreSQL: {e}");
            }
        }
        drop(users);
        drop(control);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.release();
    }
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn chown_io(path: &Path, user: RunAs) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
}

fn chown(path: &Path, user: RunAs) -> Result<()> {
    chown_io(path, user).map_err(|e| Error::Embedded {
        dir: path.to_path_buf(),
        action: "handed to the server user",
        detail: e.to_string(),
    })
}

/// The pid and port (lines 1 and 4) of the postmaster.pid in the data
/// directory `data`; the file exists while that server runs.
pub fn postmaster_pid(data: &Path) -> std::io::Result<(i32, Option<u16>)> {
    let text = fs::read_to_string(data.join("postmaster.pid"))?;
    let mut lines = text.lines().map(str::trim);
    let pid = lines
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no pid on line 1"))?;
    Ok((pid, lines.nth(2).and_then(|l| l.parse().ok())))
}
