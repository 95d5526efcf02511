//! Free ports without a race. A port is never found by binding port 0,
//! reading the number and closing the socket (someone else may take it before
//! the server binds it):
//!
//! - a server of this process gets a [`PortReservation`], a socket that stays
//!   bound to the port (not listening, SO_REUSEPORT) until the server, binding
//!   with SO_REUSEPORT too, listens there ([`RunningGateway::start`] does this
//!   for a `listen` port of 0, and takes reserved `metrics_listen` and
//!   `health_listen` addresses);
//! - a child process listens on port 0 itself, and [`listening`] reads the
//!   port the kernel gave it from `/proc`.
//!
//! [`RunningGateway::start`]: context7_lb::app::RunningGateway::start

pub use context7_lb::ports::PortReservation;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};

/// Reserves a free port on 127.0.0.1; drop it once the server listens there.
pub fn reserve() -> PortReservation {
    PortReservation::loopback().expect("a free loopback port")
}

/// The IPv4 TCP addresses process `pid` listens on: the sockets among its
/// descriptors that the kernel's TCP table lists in state LISTEN.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    let sockets: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_str()?;
                    Some(
                        target
                            .strip_prefix("socket:[")?
                            .strip_suffix(']')?
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut addresses: Vec<SocketAddr> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != "0A" || !sockets.contains(*inode) {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            // The address is the kernel's 32-bit word in its own byte order.
            let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}
