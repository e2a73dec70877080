//! Starts a private Azurite (blob + queue) on free loopback ports with two accounts, a
//! source (`devstoreaccount1`) and a backup account (`backupaccount`), in memory. Each
//! instance is independent, so test runs and the demo never collide. Stopped on drop.

use anyhow::{Context, bail};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SOURCE_ACCOUNT: &str = "devstoreaccount1";
pub const SOURCE_KEY: &str = lakevault_common::connection_string::EMULATOR_KEY;
pub const BACKUP_ACCOUNT: &str = "backupaccount";
/// A fixed key for the emulator's second account (base64 of a test phrase; not a secret).
pub const BACKUP_KEY: &str =
    "bGFrZXZhdWx0LWJhY2t1cC1hY2NvdW50LWVtdWxhdG9yLWtleS0wMDAwMDAwMDAwMDAwMDAwMDAwMA==";

#[derive(Debug)]
pub struct Azurite {
    pub blob_port: u16,
    pub queue_port: u16,
    /// `http`, or `https` when started with TLS.
    pub scheme: &'static str,
    children: Vec<Child>,
}

/// TLS (and Entra token checking) for an emulator started with [`Azurite::start_https`].
#[derive(Debug, Clone)]
pub struct Tls {
    /// The self-signed certificate, to be trusted by clients.
    pub cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// A self-signed certificate for 127.0.0.1, made with `openssl`.
    pub fn self_signed(dir: &Path) -> anyhow::Result<Self> {
        let cert = dir.join("azurite-cert.pem");
        let key = dir.join("azurite-key.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            // A server (end-entity) certificate, not a CA: rustls refuses a CA as a server's.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl")?;
        if !status.success() {
            bail!("openssl could not make a certificate");
        }
        Ok(Self { cert, key })
    }
}

/// The repository root (the workspace above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Installs the pinned Azurite with `npm ci` if it is missing (serialised by a lock, so
/// parallel test binaries do not race).
pub fn ensure_installed() -> anyhow::Result<PathBuf> {
    let root = repo_root();
    let bin = root.join("azurite/node_modules/.bin");
    if bin.join("azurite-blob").exists() && bin.join("azurite-queue").exists() {
        return Ok(bin);
    }
    let status = Command::new("bash")
        .arg(root.join("scripts/azurite.sh"))
        .arg("install")
        .status()
        .context("running scripts/azurite.sh install")?;
    if !status.success() {
        bail!("installing Azurite failed (scripts/azurite.sh install exited with {status})");
    }
    Ok(bin)
}

/// A free loopback port (bound, then released for a child process to take).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("azurite exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("azurite did not listen on port {port} within {timeout:?}")
}

pub fn accounts_env() -> String {
    format!("{SOURCE_ACCOUNT}:{SOURCE_KEY};{BACKUP_ACCOUNT}:{BACKUP_KEY}")
}

impl Azurite {
    /// Starts blob and queue services (two processes: each gets a core).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Starts over https with Entra ID (OAuth) token checking: Azurite then checks a bearer
    /// token's issuer, audience and lifetime (not its signature).
    pub fn start_https(tls: &Tls) -> anyhow::Result<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&Tls>) -> anyhow::Result<Self> {
        let bin = ensure_installed()?;
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(&bin, tls) {
                Ok(a) => return Ok(a),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("azurite did not start")))
    }

    fn try_start(bin: &Path, tls: Option<&Tls>) -> anyhow::Result<Self> {
        let blob_port = free_port()?;
        let queue_port = free_port()?;
        let spawn = |service: &str, host_flag: &str, port_flag: &str, port: u16| {
            let mut command = Command::new(bin.join(format!("azurite-{service}")));
            if let Some(tls) = tls {
                command
                    .arg("--cert")
                    .arg(&tls.cert)
                    .arg("--key")
                    .arg(&tls.key)
                    .args(["--oauth", "basic"]);
            }
            command
                .args([host_flag, "127.0.0.1", port_flag, &port.to_string()])
                .args([
                    "--inMemoryPersistence",
                    "--disableTelemetry",
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                ])
                .env("AZURITE_ACCOUNTS", accounts_env())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawning azurite-{service}"))
        };
        let mut me = Azurite {
            blob_port,
            queue_port,
            scheme: if tls.is_some() { "https" } else { "http" },
            children: Vec::new(),
        };
        me.children
            .push(spawn("blob", "--blobHost", "--blobPort", blob_port)?);
        me.children
            .push(spawn("queue", "--queueHost", "--queuePort", queue_port)?);
        wait_for_port(blob_port, &mut me.children[0], Duration::from_secs(30))?;
        wait_for_port(queue_port, &mut me.children[1], Duration::from_secs(30))?;
        Ok(me)
    }

    pub fn blob_endpoint(&self, account: &str) -> String {
        format!("{}://127.0.0.1:{}/{account}", self.scheme, self.blob_port)
    }

    pub fn queue_endpoint(&self, account: &str) -> String {
        format!("{}://127.0.0.1:{}/{account}", self.scheme, self.queue_port)
    }

    pub fn connection_string(&self, account: &str, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};BlobEndpoint={};QueueEndpoint={};",
            self.blob_endpoint(account),
            self.queue_endpoint(account)
        )
    }

    /// A complete lakevault config: source = devstoreaccount1 (connection string), backup
    /// and queue = backupaccount (shared key).
    pub fn config_toml(&self, queue: &str, containers: &[&str]) -> String {
        let containers = containers
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"# Generated for a local Azurite on loopback ports.
[accounts.source]
kind = "connection_string"
connection_string = "{source_cs}"

[accounts.backup]
kind = "shared_key"
account_name = "{BACKUP_ACCOUNT}"
account_key = "{BACKUP_KEY}"
blob_endpoint = "{backup_blob}"
queue_endpoint = "{backup_queue}"

[backup]
source = "source"
destination = "backup"
containers = [{containers}]
container_template = "{{container}}"

[queue]
account = "backup"
name = "{queue}"
"#,
            source_cs = self.connection_string(SOURCE_ACCOUNT, SOURCE_KEY),
            backup_blob = self.blob_endpoint(BACKUP_ACCOUNT),
            backup_queue = self.queue_endpoint(BACKUP_ACCOUNT),
        )
    }

    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}
