//! Process logging: `RUST_LOG` as usual (default `info`) on stderr, access
//! lines on stdout, and Pingora's trace output never written, because it dumps
//! raw request headers, the upstreams' `Authorization` among them.

use log::{Level, Log, Metadata, Record};

struct KeySafeLogger(env_logger::Logger);

/// Pingora targets whose trace lines may hold request headers.
fn may_hold_headers(metadata: &Metadata<'_>) -> bool {
    metadata.level() == Level::Trace && metadata.target().starts_with("pingora")
}

impl Log for KeySafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !may_hold_headers(metadata) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.target() == "access" {
            // Access lines are complete records of their own (text or JSON),
            // one per line on stdout, apart from the diagnostics on stderr.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", record.args());
            return;
        }
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the logger once for the process; later calls do nothing.
pub fn init() {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(KeySafeLogger(logger))).is_ok() {
        log::set_max_level(max);
    }
}
