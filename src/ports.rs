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
        PortReservation::hold(SocketAddr::new(ip, 0))
    }

    /// Reserves a free port on 127.0.0.1.
    pub fn loopback() -> std::io::Result<PortReservation> {
        PortReservation::on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Holds `address`: port 0 for one the kernel picks, or the address of a
    /// listener with SO_REUSEPORT whose port must stay this process's after it
    /// closes.
    pub fn hold(address: SocketAddr) -> std::io::Result<PortReservation> {
        let socket = reusing_port(address)?;
        socket.set_reuseaddr(false)?;
        socket.bind(address)?;
        let address = socket.local_addr()?;
        Ok(PortReservation {
            _socket: socket,
            address,
        })
    }

    /// The reserved address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// A socket for `address`'s family with SO_REUSEPORT set.
fn reusing_port(address: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// Listens on `address` with SO_REUSEPORT, so that it can take over a port a
/// [`PortReservation`] holds (port 0: one the kernel picks).
pub fn listen_reusing(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = reusing_port(address)?;
    socket.bind(address)?;
    socket.listen(1024)
}
