//! Ports held without a race: a port chosen and kept bound until the server
//! that is to listen on it does, and a way to listen that can take it over.
//! Used by the gateway run in-process (`app::RunningGateway`) and by the
//! simulated upstream, whose restarts keep their port.

use std::net::SocketAddr;

/// A port held for a server about to listen on it, so that there is no moment
/// between choosing the port and listening on it in which someone else can
/// take it. It is a socket bound to a port the kernel picks, not listening,
/// with SO_REUSEPORT and without SO_REUSEADDR: the kernel gives that port to no
/// other bind to port 0 and to no outgoing connection, and an explicit bind to
/// it succeeds only for a socket of this user that sets SO_REUSEPORT too (as
/// the listeners of a [`RunningGateway`] do). Drop it once the server listens;
/// the server's own socket holds the port from then on.
pub struct PortReservation {
    _socket: tokio::net::TcpSocket,
    address: SocketAddr,
}

impl PortReservation {
    /// Reserves a free port on `ip`.
    pub fn on(ip: std::net::IpAddr) -> std::io::Result<PortReservation> {
        let socket = if ip.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(false)?;
        socket.set_reuseport(true)?;
        socket.bind(SocketAddr::new(ip, 0))?;
        let address = socket.local_addr()?;
        Ok(PortReservation {
            _socket: socket,
            address,
        })
    }

    /// Reserves a free port on 127.0.0.1.
    pub fn loopback() -> std::io::Result<PortReservation> {
        PortReservation::on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// The reserved address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Holds `address` (already bound by a listener with SO_REUSEPORT, whose
    /// port must stay this process's after the listener closes).
    pub fn hold(address: SocketAddr) -> std::io::Result<PortReservation> {
        let socket = socket_for(address)?;
        socket.set_reuseaddr(false)?;
        socket.set_reuseport(true)?;
        socket.bind(address)?;
        Ok(PortReservation {
            _socket: socket,
            address,
        })
    }
}

fn socket_for(address: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
}

/// Listens on `address` with SO_REUSEPORT, so that it can take over a port a
/// [`PortReservation`] holds (port 0: one the kernel picks).
pub fn listen_reusing(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket_for(address)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}
