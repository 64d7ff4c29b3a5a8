//! Property tests: whatever the text, the loader returns (never panics), nothing nested past
//! [`MAX_NESTING`] reaches the YAML parser, and every config it accepts has ids and session
//! prefixes that are safe in tmux names and paths.

use std::path::Path;

use proptest::prelude::*;

use super::error::ConfigError;
use super::ids::{is_valid_project_id, is_valid_session_prefix};
use super::load::parse_str;
use super::nesting::{check_nesting, MAX_NESTING};
use super::outline::Locator;
use super::schema::{Config, ProjectConfig};

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new("/fuzz/ao.yaml"), &|name| {
        (name == "HOME").then(|| "/home/fuzz".to_owned())
    })
}

/// What every accepted config holds: safe ids and one project per session prefix.
fn assert_safe(config: &Config) {
    let mut prefixes = std::collections::BTreeSet::new();
    for (id, project) in &config.projects {
        let prefix = project.session_prefix(id);
        assert!(is_valid_project_id(id), "{id:?}");
        assert!(is_valid_session_prefix(&prefix), "{prefix:?} of {id:?}");
        assert!(prefixes.insert(prefix), "shared prefix of {id:?}");
    }
}

/// How many collections deep `value` is.
fn nesting(value: &serde_yaml::Value) -> usize {
    use serde_yaml::Value;
    match value {
        Value::Sequence(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Mapping(map) => {
            1 + map
                .iter()
                .map(|(key, value)| nesting(key).max(nesting(value)))
                .max()
                .unwrap_or(0)
        }
        Value::Tagged(tagged) => nesting(&tagged.value),
        _ => 0,
    }
}

/// Fragments of YAML and of this config's keys, and characters tmux and paths care about.
const TOKENS: &[&str] = &[
    "projects:",
    "\n",
    "  ",
    "- ",
    "? ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "'",
    "\"",
    "#",
    "|",
    ">",
    "&a ",
    "*a",
    "!!str ",
    "---",
    "path: /r",
    "sessionPrefix: ",
    "app",
    "lib.core",
    "../x",
    "a/b",
    "a:b",
    "#{x}",
    "-x",
    "${HOME}",
    "${NOPE}",
    "$${",
    "\\",
    "\t",
    "é",
];

/// Names built from characters that are and are not allowed in ids.
fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop::sample::select(
            &[
                "a", "Z", "0", "_", "-", ".", "..", "/", ":", "#", "{", "}", " ", "\t", "é",
            ][..],
        ),
        1..8,
    )
    .prop_map(|parts| parts.concat())
}

/// A JSON value up to a few levels deep whose strings hold YAML's special characters.
fn value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        "[\\[\\]{}#'\" :,|>&*!%@`a-z\\n -]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z#\\[{ ]{1,6}", inner, 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_loaded_or_refused(text in "\\PC{0,300}") {
        if let Ok(config) = parse(&text) {
            assert_safe(&config);
        }
    }

    #[test]
    fn yaml_ish_text_is_loaded_or_refused(
        tokens in proptest::collection::vec(prop::sample::select(TOKENS), 0..80),
    ) {
        if let Ok(config) = parse(&tokens.concat()) {
            assert_safe(&config);
        }
    }

    /// Deep text is refused by the scan, so the parser's time never depends on its depth.
    #[test]
    fn deep_text_is_refused_before_parsing(
        opener in prop::sample::select(&["[", "{a: ", "{a: [", "- ", "? ", "[{a: ", "- [", "-   "][..]),
        depth in (MAX_NESTING + 1)..4000,
        under_a_key in any::<bool>(),
    ) {
        let lead = if under_a_key { "projects:\n  app:\n    agentConfig:\n      x:\n        " } else { "" };
        let err = parse(&format!("{lead}{}", opener.repeat(depth))).unwrap_err();
        prop_assert!(err.message.contains("nested more than"), "{}", err);
    }

    /// What the scan lets through is no deeper than the limit once parsed: it never counts
    /// less than the parser nests, whatever comes before (keys that are flow collections or
    /// quoted, tags, anchors, comments, documents).
    #[test]
    fn the_scan_never_counts_less_than_the_parser(
        tokens in proptest::collection::vec(prop::sample::select(TOKENS), 0..6),
        key in prop::sample::select(&[
            "", "[a]: ", "{a: b}: ", "k:\t", "'k''s': ", "? [a]: ", "- [a]: ", "!t [a]: ",
            "&a k: ", "- - k: ", "k:\n  ", "k: [\n  ", "? # c\n  ", "--- ",
        ][..]),
        (open, close) in prop::sample::select(&[
            ("[", "]"), ("{a: ", "}"), ("{a: [", "]}"), ("- ", ""), ("[{a: ", "}]"), ("[a, ", "]"),
        ][..]),
        depth in (MAX_NESTING + 1)..200,
    ) {
        let text = format!("{}{key}{}x{}", tokens.concat(), open.repeat(depth), close.repeat(depth));
        let locator = Locator { source: Path::new("fuzz"), outline: Vec::new() };
        if check_nesting(&text, &locator).is_ok() {
            match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                Ok(value) => prop_assert!(nesting(&value) <= MAX_NESTING, "{text:?}"),
                Err(err) => prop_assert!(!err.to_string().contains("recursion limit"), "{text:?}"),
            }
        }
    }

    #[test]
    fn projects_with_arbitrary_ids_are_accepted_only_when_safe(
        projects in proptest::collection::vec((name(), proptest::option::of(name())), 1..5),
    ) {
        let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let text: String = projects
            .iter()
            .map(|(id, prefix)| {
                let prefix = prefix.as_deref().map(|p| format!("    sessionPrefix: {}\n", quote(p)));
                format!("  {}:\n    path: /r\n{}", quote(id), prefix.unwrap_or_default())
            })
            .collect();
        if let Ok(config) = parse(&format!("projects:\n{text}")) {
            assert_safe(&config);
        }
    }

    /// Whatever serde_yaml writes (quoting brackets, `#` and quotes its own way) loads back:
    /// the nesting scan does not mistake scalars for collections.
    #[test]
    fn written_configs_load_back(agent_config in proptest::collection::btree_map("[a-z]{1,5}", value(), 0..4)) {
        let mut config = Config::default();
        config.projects.insert("app".into(), ProjectConfig {
            path: "/r".into(),
            agent_config,
            ..Default::default()
        });
        let text = serde_yaml::to_string(&config).unwrap();
        prop_assert_eq!(parse(&text).unwrap(), config);
    }
}
