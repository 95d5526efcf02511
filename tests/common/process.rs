//! The gateway binary as an operator runs it, as a child process; temporary
//! directories for its files; polls until it is ready.

use super::ports::listening;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A command that runs the gateway binary built for these tests.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_context7-lb"))
}

/// The gateway binary on the configuration file `config`, logging at info,
/// its stdout and stderr piped (read them with [`Process::wait`]).
pub fn configured(config: &Path) -> Command {
    let mut command = binary();
    command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// A gateway process, killed (if still running) when dropped. It listens on
/// port 0, so that the kernel picks its port and no one can take it first;
/// the port is read from `/proc` once it listens.
pub struct Process {
    pub child: Child,
    pub address: SocketAddr,
}

impl Process {
    /// Spawns `command`, a gateway configured to listen on port 0, and waits
    /// (up to 20 s) until it listens: on its only TCP listener.
    pub fn spawn(command: &mut Command) -> Process {
        let mut child = command.spawn().expect("binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            let addresses = listening(child.id());
            match addresses[..] {
                [address] => break address,
                [] => {}
                _ => panic!("the gateway listens on several ports: {addresses:?}"),
            }
            if let Some(status) = child.try_wait().expect("child status") {
                let mut stderr = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut stderr);
                }
                panic!("the gateway exited ({status}) before it listened:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "the gateway did not listen");
            std::thread::sleep(Duration::from_millis(10));
        };
        Process { child, address }
    }

    /// Spawns `command`, a gateway that takes over the listener of another
    /// process at `address` (`--upgrade`), without waiting for it.
    pub fn taking_over(command: &mut Command, address: SocketAddr) -> Process {
        let child = command.spawn().expect("binary starts");
        Process { child, address }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.address.port())
    }

    /// Sends the signal `name` (`HUP`, `TERM`, `INT`, `QUIT`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (up to `limit`) for the process to end; returns how long that
    /// took, and what it printed on stdout and on stderr.
    pub fn wait(&mut self, limit: Duration) -> (Duration, String, String) {
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(started.elapsed() < limit, "the gateway did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).unwrap();
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut err).unwrap();
        }
        (started.elapsed(), out, err)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET url` every 50 ms for up to `limit` until `until` holds for the
/// status and the body (`null` when it is not JSON); returns that body.
pub async fn wait_for(url: &str, limit: Duration, until: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(r) = reqwest::get(url).await {
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            if until(status, &body) {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh directory under the system's temporary one, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `c7lb-<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("c7lb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Environment variables as the configuration reads them.
pub fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
