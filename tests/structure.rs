//! The crate's shape, checked from its source (issue 19): the top-level modules of `src/` import
//! each other without a cycle, so there is an order of layers in which nothing imports a module
//! above it. Test code (`#[cfg(test)] mod … { … }`, `tests.rs`, `*_tests.rs`) is left out, as
//! `cargo modules dependencies --acyclic` leaves it out by default.
//!
//! An import is any path through `crate::` (`crate::orders::…`, `crate::{orders, engine::…}`)
//! or `super::super::` outside comments.

#![allow(clippy::expect_used, clippy::indexing_slicing)] // a test: a missing key is its failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges between top-level modules, each with the files that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("src/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without `#[cfg(test)]` modules written inline.
fn production_code(source: &str) -> String {
    let mut out = String::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the item that follows: a braced module up to its matching brace.
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                depth += next.matches('{').count() as i32 - next.matches('}').count() as i32;
                opened |= next.contains('{');
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        // `://` is a URL in a string, not a comment.
        let comment = line
            .match_indices("//")
            .find(|&(i, _)| !line[..i].ends_with(':'));
        let code = comment.map_or(line, |(i, _)| &line[..i]);
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a piece of code reaches through `crate::`.
fn imported(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the names at the group's first level.
            let mut depth = 1;
            let mut expect_name = true;
            let mut name = String::new();
            for c in group.chars() {
                if !name.is_empty() && !is_ident(c) {
                    found.insert(std::mem::take(&mut name));
                    expect_name = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => expect_name = true,
                    c if is_ident(c) && depth == 1 && expect_name => name.push(c),
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph_of(files: &[(String, String, String)]) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, file, source) in files {
        let code = production_code(source);
        let mut targets = imported(&code);
        if code.contains("super::super::") {
            // From `src/m/x/y.rs` only; the sole user is inside its own module, which is
            // harmless, but a reach further up would be another top-level module.
            for part in code.split("super::super::").skip(1) {
                let name: String = part.chars().take_while(|&c| is_ident(c)).collect();
                if modules.contains(&name) {
                    targets.insert(name);
                }
            }
        }
        let edges = graph.entry(module.clone()).or_default();
        for target in targets {
            if &target != module && modules.contains(&target) {
                edges.entry(target).or_default().insert(file.clone());
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// Every production file of `src/` (not `main.rs`, `lib.rs` or test files): its top-level
/// module, its path under `src/` and its text.
fn crate_sources() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    paths
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).ok()?.to_path_buf();
            let file = rel.file_name()?.to_str()?.to_owned();
            if file == "tests.rs" || file.ends_with("_tests.rs") {
                return None;
            }
            let top = rel.components().next()?.as_os_str().to_str()?.to_owned();
            let top = top.strip_suffix(".rs").unwrap_or(&top).to_owned();
            if top == "main" || top == "lib" || top == "bin" {
                return None;
            }
            let source = std::fs::read_to_string(&path).ok()?;
            Some((top, rel.display().to_string(), source))
        })
        .collect()
}

fn describe(graph: &Graph, cycle: &[String]) -> String {
    let mut text = format!("cycle among {cycle:?}:\n");
    for from in cycle {
        for (to, files) in &graph[from] {
            if cycle.contains(to) {
                text.push_str(&format!("  {from} -> {to} (in {files:?})\n"));
            }
        }
    }
    text
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph_of(&crate_sources());
    // The reading itself works: the API sits on the orders, the orders on the engine.
    assert!(graph["http"].contains_key("orders"), "{graph:?}");
    assert!(graph["orders"].contains_key("engine"), "{graph:?}");
    let found = cycles(&graph);
    let report: Vec<String> = found.iter().map(|c| describe(&graph, c)).collect();
    assert!(found.is_empty(), "{}", report.join("\n"));
}

#[test]
fn the_check_finds_a_cycle_through_a_use_group_and_ignores_comments_and_tests() {
    let files = |messaging: &str| {
        vec![
            ("orders", "use crate::messaging::Broker;\n"),
            ("messaging", messaging),
            ("engine", "fn f() {}\n"),
        ]
        .into_iter()
        .map(|(m, text)| (m.to_owned(), format!("{m}.rs"), text.to_owned()))
        .collect::<Vec<_>>()
    };
    let cyclic = graph_of(&files("use crate::{engine, orders::card_data};\n"));
    assert_eq!(
        cycles(&cyclic),
        vec![vec!["messaging".to_owned(), "orders".to_owned()]]
    );
    assert!(cyclic["messaging"].contains_key("engine"));
    for harmless in [
        "// crate::orders::x\nuse crate::engine;\n",
        "/// see `crate::orders`\n",
        "let url = \"amqp://h\"; // crate::orders\n",
        "#[cfg(test)]\nmod tests {\n    use crate::orders::x;\n    fn g() { if true { } }\n}\n",
        "use my_crate::orders;\n",
    ] {
        assert!(cycles(&graph_of(&files(harmless))).is_empty(), "{harmless}");
    }
}

/// Functions (with their attributes' lines left out) and their length in lines, from the line
/// of `fn` to its closing brace.
fn functions(source: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let after_fn = code
            .split_once("fn ")
            .filter(|(before, _)| {
                before.is_empty()
                    || before.split_whitespace().all(|w| {
                        ["pub", "async", "const", "unsafe"].contains(&w) || w.starts_with("pub(")
                    })
            })
            .map(|(_, rest)| rest);
        let Some(rest) = after_fn else { continue };
        let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, l) in lines[start..].iter().enumerate() {
            depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
            opened |= l.contains('{');
            if !opened && l.trim_end().ends_with(';') {
                break;
            }
            if opened && depth <= 0 {
                found.push((name.clone(), start + 1, offset + 1));
                break;
            }
        }
    }
    found
}

/// The files under `src/<dir>/` with their text.
fn sources_under(dir: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("a source file is readable");
            (p.display().to_string(), text)
        })
        .collect()
}

/// Issue 19: the order service's steps stay small enough to read — no function in
/// `src/orders/` over 80 lines.
#[test]
fn no_function_in_the_order_service_is_over_80_lines() {
    let mut long = Vec::new();
    let mut seen = 0;
    for (path, text) in sources_under("orders") {
        for (name, line, length) in functions(&text) {
            seen += 1;
            if length > 80 {
                long.push(format!("{path}:{line} {name} ({length} lines)"));
            }
        }
    }
    assert!(seen > 50, "the reading finds the functions: {seen}");
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn the_function_reading_measures_from_fn_to_its_closing_brace() {
    let source = "pub(super) async fn a(\n    x: u8,\n) -> u8 {\n    if x > 0 { 1 } else { 2 }\n}\nfn b();\nlet fn_x = 1;\n";
    assert_eq!(functions(source), vec![("a".to_owned(), 1, 5)]);
}

/// Issue 19: the order service publishes through `messaging` — no AMQP type in `src/orders/`.
#[test]
fn the_order_service_handles_no_amqp_type() {
    let users: Vec<String> = sources_under("orders")
        .into_iter()
        .filter(|(_, text)| production_code(text).contains("lapin"))
        .map(|(path, _)| path)
        .collect();
    assert!(users.is_empty(), "lapin used in {users:?}");
}

/// Issue 19: a storage row handed out by `persistence` is typed — no status as a `String`, no
/// lines or items as a JSON `Value` (JSON only where a row is bound to its statement).
#[test]
fn no_storage_row_carries_a_string_status_or_json_lines() {
    let mut untyped = Vec::new();
    for (path, text) in sources_under("persistence") {
        for line in production_code(&text).lines() {
            let field = line.trim();
            let Some((name, ty)) = field.strip_prefix("pub ").and_then(|f| f.split_once(": "))
            else {
                continue;
            };
            let ty = ty.trim_end_matches(',');
            let status = name.ends_with("status") && ty.contains("String");
            let lines = ["items", "lines"].contains(&name) && ty.contains("Value");
            if status || lines {
                untyped.push(format!("{path}: {field}"));
            }
        }
    }
    assert!(untyped.is_empty(), "{untyped:#?}");
}

/// Issue 19: the order service is a facade over parts with files of their own — intake, the
/// checkout consumer, records, stock, payments, keys, the sweeper — not one type whose
/// methods are spread over the module: no `impl OrderService` outside `src/orders/mod.rs`.
#[test]
fn the_order_service_is_implemented_in_its_own_file_only() {
    let mut elsewhere = Vec::new();
    let mut at_home = 0;
    for (path, text) in sources_under("orders") {
        let code = production_code(&text);
        let blocks = code
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("impl")
                    && (l.contains(" OrderService ") || l.contains("::OrderService "))
            })
            .count();
        if path.ends_with("orders/mod.rs") {
            at_home += blocks;
        } else if blocks > 0 {
            elsewhere.push(format!("{path}: {blocks}"));
        }
    }
    assert_eq!(at_home, 1, "one impl block, in mod.rs");
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
}

/// Issue 19: the monitor is passed in as a dependency — made by `startup`, handed to the broker,
/// the order service, the sampler and the API — and nobody outside `messaging` reaches it
/// through the broker (`broker.monitor()`).
#[test]
fn nothing_reaches_the_monitor_through_the_broker() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let reaching: Vec<String> = paths
        .into_iter()
        .filter(|p| !p.starts_with(src.join("messaging")))
        .filter(|p| {
            let text = std::fs::read_to_string(p).expect("a source file is readable");
            production_code(&text).contains(".monitor()")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(reaching.is_empty(), "{reaching:?}");
}
