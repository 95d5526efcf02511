//! The deploy kit agrees with the code: every metric the alert rules and the
//! Grafana dashboard query exists, and the gateway configuration embedded in
//! the Kubernetes manifest passes the same validation as any file.

mod common;

use common::*;
use context7_lb::config::Config;
use context7_lb::metrics::Metrics;
use std::collections::BTreeSet;
use std::path::Path;

fn repo(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// `context7_…` names in a text, histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("context7_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(name);
    }
    names
}

#[test]
fn alerts_and_dashboard_query_only_metrics_that_exist() {
    let exported: BTreeSet<String> = Metrics::new().names().into_iter().collect();
    for file in ["deploy/alerts.yml", "deploy/grafana-dashboard.json"] {
        let used = metric_names(&repo(file));
        assert!(used.len() >= 5, "{file} uses {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries unknown metrics {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana-dashboard.json")).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
}

#[test]
fn the_kubernetes_configuration_is_a_valid_gateway_configuration() {
    let manifest = repo("deploy/kubernetes.yaml");
    let start = manifest.find("gateway.yaml: |\n").unwrap() + "gateway.yaml: |\n".len();
    let block: String = manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| l.get(4..).unwrap_or("").to_string() + "\n")
        .collect();
    let dir = TempDir::new("k8s");
    let keys = dir.join("client-keys");
    std::fs::write(&keys, "# a key\nreplace-me-with-a-long-random-key\n").unwrap();
    let yaml = block.replace("/etc/context7-lb/keys/client-keys", keys.to_str().unwrap());
    let env = vars(&[
        ("RUNPOD_API_KEY", "k"),
        ("RUNPOD_ENDPOINT_A", "ep-a"),
        ("RUNPOD_ENDPOINT_B", "ep-b"),
        (
            "REDIS_URL",
            "redis://:replace-me-redis-password@context7-lb-redis:6379/0",
        ),
    ]);
    let config = Config::from_yaml(&yaml, &env).expect("parses");
    config.validate().expect("valid");
    assert_eq!(config.upstreams.len(), 2);
    assert!(config.redis.is_some(), "the replicas share state");
    assert!(
        manifest.contains("key: REDIS_URL}") && manifest.contains("name: context7-lb-redis"),
        "the URL comes from the Secret, and Redis is part of the kit"
    );
    assert_eq!(config.metrics_listen.as_deref(), Some("0.0.0.0:9102"));
}
