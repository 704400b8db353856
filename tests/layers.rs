//! Dependencies run one way, checked on the source: the web layer of each server (`web` in
//! both: the cloud's `api` and `dashboard`, the appliance's `api` and `screen`) is used only by
//! the code that starts the server (`app.rs`, `main.rs`), never by storage, rules, sync or auth; and
//! `vigil-shared` stays free of I/O and HTTP. A simple text check: a `use` or path naming a
//! web module outside the allowed files fails, with file and line.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One rule: in `dir`, files outside `owners` and `allowed` must not name any of `forbidden`.
struct Rule {
    crate_dir: &'static str,
    /// The web modules (directories or files under `src/`), which may name each other.
    owners: &'static [&'static str],
    /// Files that wire the server together and may name the web modules.
    allowed: &'static [&'static str],
    /// Paths that must not appear elsewhere.
    forbidden: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        crate_dir: "cloud",
        owners: &["web"],
        allowed: &["app.rs", "main.rs", "lib.rs"],
        forbidden: &["crate::web", "vigil_cloud::web"],
    },
    Rule {
        crate_dir: "edge",
        owners: &["web"],
        allowed: &["app.rs", "main.rs", "lib.rs"],
        forbidden: &["crate::web", "vigil_edge::web"],
    },
];

/// What the domain crate must never use: it does no I/O and knows no HTTP.
const SHARED_FORBIDDEN: &[&str] = &[
    "tokio::",
    "rusqlite::",
    "quinn::",
    "btleplug::",
    "axum::",
    "vigil_web::",
    "std::fs::",
    "std::net::",
];

/// The lines of `text` (a file's source) that name one of `forbidden` in code, not in a
/// comment: `(line number, line)`.
fn violations(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.split("//").next().unwrap_or("");
            forbidden.iter().any(|f| code.contains(f))
        })
        .map(|(n, line)| (n + 1, line.trim().to_owned()))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn check(dir: &Path, skip: impl Fn(&Path) -> bool, forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(dir).unwrap();
        if skip(rel) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in violations(&text, forbidden) {
            found.push(format!("{}:{n}: {line}", file.display()));
        }
    }
    found
}

#[test]
fn the_web_layers_are_used_only_where_the_servers_are_wired() {
    let mut found = Vec::new();
    for rule in RULES {
        let src = Path::new(ROOT).join(rule.crate_dir).join("src");
        let skip = |rel: &Path| {
            let first = rel.components().next().unwrap().as_os_str();
            rule.owners.iter().any(|o| first == *o)
                || rule.allowed.iter().any(|a| rel == Path::new(a))
        };
        found.extend(check(&src, skip, rule.forbidden));
    }
    assert!(
        found.is_empty(),
        "web modules used outside the web layer:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_domain_crate_does_no_io_and_knows_no_http() {
    let src = Path::new(ROOT).join("shared/src");
    let found = check(&src, |_| false, SHARED_FORBIDDEN);
    assert!(
        found.is_empty(),
        "I/O or HTTP in vigil-shared:\n{}",
        found.join("\n")
    );
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("shared/Cargo.toml")).unwrap();
    for dep in ["axum", "tokio", "rusqlite", "quinn", "vigil-web"] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(dep)),
            "shared/Cargo.toml depends on {dep}"
        );
    }
}

#[test]
fn the_scanner_finds_a_violation_and_ignores_comments() {
    let source = "use crate::store;\n// see crate::web for the routes\nuse crate::web::ApiState;\n";
    assert_eq!(
        violations(source, &["crate::web"]),
        vec![(3, "use crate::web::ApiState;".to_owned())]
    );
    assert_eq!(violations("let x = 1;", &["crate::web"]), vec![]);
}
