//! The floor under the gateway in `scripts/load-bench.sh`: Pingora's own
//! proxy with nothing of ours in it (round robin over the upstreams given on
//! the command line, pooled keep-alive connections, no body handling), built
//! with the gateway's allocator and release profile. What this costs per
//! request, the gateway cannot go below.
//!
//!   cargo run --release --example bare_pingora -- LISTEN THREADS UPSTREAM...

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::sync::atomic::{AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstreams: Vec<String>,
    next: AtomicUsize,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.upstreams.len();
        Ok(Box::new(HttpPeer::new(
            &*self.upstreams[i],
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: bare_pingora LISTEN THREADS UPSTREAM...");
        std::process::exit(2);
    }
    let threads = args[1].parse().expect("THREADS is a number");
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            upstreams: args[2..].to_vec(),
            next: AtomicUsize::new(0),
        },
    );
    proxy.add_tcp(&args[0]);
    server.add_service(proxy);
    server.run_forever();
}
