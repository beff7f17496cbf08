//! The README and `docs/` name real things: every repository path they mention (in backticks or
//! as a link) exists, every link's `#anchor` is a heading of its target, and the README stays
//! short enough for a newcomer.
#![allow(clippy::expect_used)] // a test: a missing file is its failure

use std::collections::HashSet;
use std::path::{Path, PathBuf};

const README_MAX_LINES: usize = 250;

/// First components of the paths the docs may name.
const ROOTS: &[&str] = &[
    "src/",
    "tests/",
    "deploy/",
    "docs/",
    "migrations/",
    "benches/",
    "web/",
    "scripts/",
    ".ci/",
];
const FILES: &[&str] = &[
    "Cargo.toml",
    "Dockerfile",
    "docker-compose.yml",
    "README.md",
];
/// Made by a command, not kept in the repository.
const GENERATED: &[&str] = &["deploy/secrets/", "generated/"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The text outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens.
fn anchors(text: &str) -> HashSet<String> {
    prose(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

fn between<'a>(text: &'a str, open: &str, close: char) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        match after.find(close) {
            Some(end) => {
                found.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    found
}

fn is_repo_path(token: &str) -> bool {
    let token = token.split_whitespace().next().unwrap_or("");
    (ROOTS.iter().any(|r| token.starts_with(r)) || FILES.contains(&token))
        && !GENERATED.iter().any(|g| token.starts_with(g))
        && !token.contains(['*', '<', '{', '$'])
}

/// The paths of a source map drawn as a fenced tree (`src/` then indented entries, each
/// `name  description`; a folder ends in `/` and holds the entries indented under it).
fn tree_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut in_tree = false;
    let mut fenced = false;
    let mut dirs: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            in_tree = false;
            dirs.clear();
            continue;
        }
        if fenced && !in_tree && line.trim_end() == "src/" {
            in_tree = true;
        }
        if !in_tree {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let column = line.trim_start().split("  ").next().unwrap_or("").trim();
        let names: Vec<&str> = column.split(", ").collect();
        let looks_like_paths = names
            .iter()
            .all(|n| !n.is_empty() && !n.contains(' ') && (n.contains('.') || n.ends_with('/')));
        if !looks_like_paths {
            continue; // a description carried over to the next line
        }
        while dirs.last().is_some_and(|(i, _)| *i >= indent) {
            dirs.pop();
        }
        let parent = dirs.last().map(|(_, d)| d.clone()).unwrap_or_default();
        for name in &names {
            paths.push(format!("{parent}{name}"));
        }
        if let [dir] = names.as_slice() {
            if dir.ends_with('/') {
                dirs.push((indent, format!("{parent}{dir}")));
            }
        }
    }
    paths
}

/// The text inside fenced code blocks.
fn fenced(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every file of the repository (not what builds or installs make), as `a/b/c.rs`.
fn repository_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", "node_modules", ".git", "build", "generated"]
                    .contains(&name.as_str())
                {
                    walk(&path, base, out);
                }
            } else if let Ok(relative) = path.strip_prefix(base) {
                out.push(relative.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root(), &mut out);
    out
}

/// A bare file name or partial path in backticks (`messaging/batcher.rs`, `roles.sql`).
fn is_file_name(token: &str) -> bool {
    const EXTENSIONS: &[&str] = &[".rs", ".sh", ".sql", ".yml", ".yaml", ".ts", ".py", ".toml"];
    EXTENSIONS.iter().any(|e| token.ends_with(e))
        && !token.contains(['*', '<', '{', '$', ' ', '…'])
        && !token.starts_with("../")
        && !token.starts_with('/')
        && !GENERATED.iter().any(|g| token.starts_with(g))
        && !is_repo_path(token)
}

#[test]
fn the_readme_is_short() {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}; move detail to docs/)"
    );
}

#[test]
fn every_path_and_link_the_docs_name_exists() {
    let mut missing = Vec::new();
    let mut checked = 0;
    let files = repository_files();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("a readable document");
        let fences = text
            .lines()
            .filter(|l| l.trim_start().starts_with("```"))
            .count();
        assert!(
            fences % 2 == 0,
            "{}: a code fence is never closed",
            doc.display()
        );
        let body = prose(&text);
        let dir = doc.parent().expect("a folder").to_path_buf();
        let name = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        // `src/…` in backticks: relative to the repository.
        for token in between(&body, "`", '`') {
            let path = token.split_whitespace().next().unwrap_or("");
            let path = path.trim_end_matches([',', '.', ':', ')']);
            if is_repo_path(path) {
                checked += 1;
                if !root().join(path).exists() {
                    missing.push(format!("{name}: `{path}`"));
                }
            }
        }
        // A bare name or a path below a folder: some file of the repository ends with it.
        for token in between(&body, "`", '`') {
            let path = token.trim_end_matches([',', '.', ':', ')']);
            if is_file_name(path) {
                checked += 1;
                let suffix = format!("/{path}");
                if !files.iter().any(|f| f == path || f.ends_with(&suffix)) {
                    missing.push(format!("{name}: `{path}` (no such file anywhere)"));
                }
            }
        }
        // Commands in code blocks name real paths too.
        for word in fenced(&text).split_whitespace() {
            let path = word.trim_matches(|c| c == '"' || c == '\'' || c == '(' || c == ')');
            let path = path.trim_end_matches([',', ';']);
            if is_repo_path(path) {
                checked += 1;
                if !root().join(path).exists() {
                    missing.push(format!("{name}: {path} (in a code block)"));
                }
            }
        }
        for path in tree_paths(&text) {
            checked += 1;
            if !root().join(&path).exists() {
                missing.push(format!("{name}: {path} (source map)"));
            }
        }
        // [text](target#anchor): relative to the document.
        for target in between(&body, "](", ')') {
            if target.starts_with("http") || target.starts_with("../shared") {
                continue;
            }
            checked += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file_path = if file.is_empty() {
                doc.clone()
            } else {
                dir.join(file)
            };
            if !file_path.exists() {
                missing.push(format!("{name}: link to {target}"));
                continue;
            }
            if !anchor.is_empty() {
                let target_text = std::fs::read_to_string(&file_path).expect("a readable target");
                if !anchors(&target_text).contains(anchor) {
                    missing.push(format!("{name}: no heading for #{anchor} in {file}"));
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} paths and links were found");
    assert!(
        missing.is_empty(),
        "the docs name what is not there:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_links_every_document_in_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for doc in documents().iter().skip(1) {
        let file = doc.file_name().and_then(|f| f.to_str()).expect("a name");
        let link = format!("](docs/{file}");
        assert!(
            readme.contains(&link),
            "README.md does not link docs/{file}"
        );
    }
    assert!(Path::new(&root().join("docs")).is_dir());
}
