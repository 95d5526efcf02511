//! Process logging: `RUST_LOG` as usual (default `info`) on stderr, access
//! lines on stdout, and Pingora's debug and trace output never written,
//! because it dumps raw request heads and streams (a malformed head at debug,
//! every header at trace), clients' and upstreams' `Authorization` among them.

use log::{Level, Log, Metadata, Record};

struct KeySafeLogger(env_logger::Logger);

/// Pingora's lines below `info`, which may hold request heads.
fn may_hold_headers(metadata: &Metadata<'_>) -> bool {
    metadata.level() > Level::Info && metadata.target().starts_with("pingora")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_below_info_is_never_written_and_ours_is() {
        let line = |target: &'static str, level: Level| {
            may_hold_headers(&Metadata::builder().target(target).level(level).build())
        };
        for level in [Level::Debug, Level::Trace] {
            assert!(line("pingora_core::protocols::http::v1::server", level));
            assert!(line("pingora_proxy", level));
            assert!(!line("context7_lb::pool", level));
        }
        for level in [Level::Error, Level::Warn, Level::Info] {
            assert!(!line("pingora_core::server", level));
        }
    }
}
