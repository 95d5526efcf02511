//! The documentation agrees with the code and with itself: the metrics table
//! in docs/operations.md lists exactly the metrics the gateway registers,
//! every relative link in README.md and docs/ reaches a file (and a heading,
//! for `#anchor` links), and the README's example configuration is valid.

use context7_lb::config::Config;
use context7_lb::metrics::Metrics;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of a file with fenced code blocks blanked out (lines kept, so
/// that headings and links inside examples are not taken for real ones).
fn without_fences(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The lines of the `## Metrics` section of docs/operations.md.
fn metrics_section(text: &str) -> Vec<&str> {
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim() != "## Metrics")
        .skip(1)
        .take_while(|l| !(l.starts_with("## ") || l.starts_with("# ")))
        .collect();
    assert!(
        !section.is_empty(),
        "docs/operations.md has no `## Metrics` section"
    );
    section
}

/// The metric names in the first column of the section's table rows.
fn documented_metrics(text: &str) -> Vec<String> {
    metrics_section(text)
        .into_iter()
        .filter(|l| l.starts_with('|'))
        .filter_map(|row| {
            let first = row.trim_start_matches('|').split('|').next()?.trim();
            let name = first.strip_prefix('`')?.strip_suffix('`')?;
            name.starts_with("context7_").then(|| name.to_string())
        })
        .collect()
}

#[test]
fn the_documented_metrics_are_the_registered_ones() {
    let documented = documented_metrics(&read(&repo().join("docs/operations.md")));
    // `names()` gives family names: counters with their `_total`, histograms
    // without `_bucket`/`_sum`/`_count`, which is what the table lists.
    let registered: BTreeSet<String> = Metrics::new().names().into_iter().collect();
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = documented.iter().filter(|n| !seen.insert(*n)).collect();
    let documented: BTreeSet<String> = documented.iter().cloned().collect();
    let not_registered: Vec<&String> = documented.difference(&registered).collect();
    let not_documented: Vec<&String> = registered.difference(&documented).collect();
    assert!(
        not_registered.is_empty() && not_documented.is_empty() && twice.is_empty(),
        "docs/operations.md's metrics table and Metrics::names() differ:\n  \
         documented but not registered: {not_registered:?}\n  \
         registered but not documented: {not_documented:?}\n  \
         documented twice: {twice:?}"
    );
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation
/// other than `-` and `_` dropped (backticks included).
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a markdown file offers; a repeated heading gets `-1`, `-2`…
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in without_fences(text).lines() {
        let level = line.chars().take_while(|c| *c == '#').count();
        if level == 0 || level > 6 || !line[level..].starts_with(' ') {
            continue;
        }
        let base = slug(line[level..].trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of inline links and images, outside code blocks and code
/// spans (where `](` can be part of an example). Code spans end with their
/// paragraph, so one stray backtick cannot hide the rest of the file.
fn link_targets(text: &str) -> Vec<String> {
    let prose: String = without_fences(text)
        .split("\n\n")
        .flat_map(|paragraph| paragraph.split('`').step_by(2))
        .collect::<Vec<_>>()
        .join(" ");
    prose
        .match_indices("](")
        .filter_map(|(i, _)| {
            let rest = &prose[i + 2..];
            let end = rest.find(|c: char| c == ')' || c.is_whitespace())?;
            Some(rest[..end].to_string())
        })
        .collect()
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_relative_link_reaches_a_file_and_heading() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = file.parent().expect("a file has a directory");
        let name = file.strip_prefix(repo()).unwrap_or(&file).display();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                file.clone()
            } else {
                dir.join(path)
            };
            if !linked.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor
                && linked.extension().is_some_and(|e| e == "md")
                && !anchors(&read(&linked)).contains(anchor)
            {
                broken.push(format!("{name}: {target}: no such heading"));
            }
        }
    }
    assert!(checked > 20, "only {checked} relative links found");
    assert!(
        broken.is_empty(),
        "broken links:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn the_readme_configuration_is_valid() {
    let readme = read(&repo().join("README.md"));
    let blocks: Vec<String> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or("").to_string())
        .collect();
    assert!(!blocks.is_empty(), "README.md has no yaml block");
    let env: HashMap<String, String> = [
        ("RUNPOD_ENDPOINT_ID", "endpoint-a"),
        ("RUNPOD_API_KEY", "rp-key-for-the-test"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into_iter()
    .collect();
    for block in blocks {
        let config = Config::from_yaml(&block, &env)
            .and_then(|c| c.validate().map(|()| c))
            .unwrap_or_else(|problems| {
                let problems: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                panic!(
                    "README.md's configuration:\n{block}\n{}",
                    problems.join("\n")
                )
            });
        assert!(!config.upstreams.is_empty(), "{block}");
    }
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("`GET /ping`"), "get-ping");
    assert_eq!(
        slug("How each attempt outcome is handled"),
        "how-each-attempt-outcome-is-handled"
    );
    assert_eq!(
        slug("Why serde-saphyr for YAML"),
        "why-serde-saphyr-for-yaml"
    );
    assert_eq!(slug("`POST /v1/research`"), "post-v1research");
    let offered = anchors("# A\n## Same\n```\n## Not a heading\n```\n## Same\n");
    assert_eq!(
        offered,
        ["a", "same", "same-1"]
            .map(String::from)
            .into_iter()
            .collect()
    );
}
