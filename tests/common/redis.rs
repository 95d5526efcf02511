//! A real `redis-server` (Debian's package) for the tests that share state:
//! on an ephemeral loopback port held by this process for the server's whole
//! life, restarts included, writing nothing to disk.
//!
//! The port is held by a socket bound with SO_REUSEADDR and never listening:
//! the kernel gives that port to no other bind to port 0 and to no outgoing
//! connection, while `redis-server`, which binds with SO_REUSEADDR too, may
//! listen there (Linux lets SO_REUSEADDR sockets share a port as long as at
//! most one of them listens). So there is no moment in which the port is
//! free, not even between a kill and a restart.

use super::process::TempDir;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    _hold: held_port::Hold,
    address: SocketAddr,
    dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers PING.
    pub fn start(name: &str) -> RedisServer {
        RedisServer::start_with(name, &[])
    }

    /// Starts `redis-server` with `extra` arguments (`--requirepass x`).
    pub fn start_with(name: &str, extra: &[&str]) -> RedisServer {
        let hold = held_port::Hold::loopback();
        let address = hold.address();
        let mut server = RedisServer {
            _hold: hold,
            address,
            dir: TempDir::new(&format!("redis-{name}")),
            child: None,
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.address.port())
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts the server again on the same port (after [`Self::kill`]),
    /// empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.address.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (Debian's package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // PING answers +PONG, or -NOAUTH with a password set: either way it runs.
        while !self
            .command(&["PING"])
            .is_some_and(|a| a == "+PONG" || a.starts_with("-NOAUTH"))
        {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (it accepts connections and answers nothing) or SIGCONT.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// One command over a fresh connection; the first line of the answer,
    /// or `None` when the server does not answer within a second.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.address, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            answer.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&answer).trim_end().to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server is continued, so that nothing is left stopped.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// The socket that holds the port.
pub mod held_port {
    use std::net::SocketAddr;

    pub struct Hold {
        _socket: tokio::net::TcpSocket,
        address: SocketAddr,
    }

    impl Hold {
        /// A socket on 127.0.0.1, on a port the kernel picks, with
        /// SO_REUSEADDR, bound and never listening.
        pub fn loopback() -> Hold {
            let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            socket
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .expect("a free loopback port");
            let address = socket.local_addr().expect("its address");
            Hold {
                _socket: socket,
                address,
            }
        }

        pub fn address(&self) -> SocketAddr {
            self.address
        }
    }
}
