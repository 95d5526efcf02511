//! The test support's ports: a reservation keeps its port from everyone but a
//! server that binds it with SO_REUSEPORT, and a process's listeners are found
//! in `/proc`.

mod common;

use common::*;
use std::net::TcpStream;

#[test]
fn a_reserved_port_is_taken_only_by_a_server_that_reuses_it() {
    let reserved = reserve();
    let address = reserved.address();
    assert!(address.ip().is_loopback() && address.port() != 0);
    // A plain bind (std sets SO_REUSEADDR) is refused, and nothing answers there.
    let refused = std::net::TcpListener::bind(address).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
    assert!(TcpStream::connect(address).is_err());
    // A server binding with SO_REUSEPORT gets it, and keeps it once the
    // reservation is gone.
    let server = tokio::net::TcpSocket::new_v4().unwrap();
    server.set_reuseport(true).unwrap();
    server.bind(address).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _listener = runtime.block_on(async { server.listen(16) }).unwrap();
    drop(reserved);
    assert!(TcpStream::connect(address).is_ok());
    let refused = std::net::TcpListener::bind(address).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse);
}

#[test]
fn a_process_listeners_are_read_from_proc() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    assert!(listening(std::process::id()).contains(&address));
    // A bound socket that does not listen is not a listener.
    let reserved = reserve();
    assert!(!listening(std::process::id()).contains(&reserved.address()));
    drop(listener);
    assert!(!listening(std::process::id()).contains(&address));
}
