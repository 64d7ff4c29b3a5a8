//! Properties of what reaches git and tmux, checked against the real tools:
//! the branch rule agrees with `git check-ref-format --branch`, the
//! control-byte rule refuses exactly the bytes that act as keys, and text
//! typed through tmux's paste buffer arrives byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use ao_proto::{input, names};
use ao_worker::runtime::{Runtime, StartSpec, TmuxRuntime};
use proptest::prelude::*;

/// Strings made of the pieces git's rules are about, and plain letters.
fn branch_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            2 => "[a-c]{1,3}",
            3 => proptest::sample::select(vec![
                "-", ".", "..", "/", "//", "@", "@{", "{", "}", ".lock", "HEAD", "~", "^", ":",
                "?", "*", "[", "\\", " ", "\t", "\u{7f}", "\u{1}", "é",
            ])
            .prop_map(str::to_string),
        ],
        0..8,
    )
    .prop_map(|pieces| pieces.concat())
}

/// What git says of `name`, run outside any repository (inside one, git
/// would first expand `@{-1}` and the like).
fn git_accepts(dir: &std::path::Path, name: &str) -> bool {
    std::process::Command::new("git")
        .args(["check-ref-format", "--branch", name])
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env("GIT_CEILING_DIRECTORIES", dir)
        .output()
        .expect("git runs")
        .status
        .success()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn the_branch_rule_agrees_with_git(name in branch_like()) {
        let dir = tempfile::tempdir().unwrap();
        prop_assert_eq!(
            names::check_branch(&name).is_ok(),
            git_accepts(dir.path(), &name),
            "{:?}", name
        );
    }

    #[test]
    fn a_leading_dash_is_never_a_branch(rest in branch_like()) {
        let name = format!("-{rest}");
        prop_assert!(names::check_branch(&name).is_err());
    }

    #[test]
    fn control_bytes_are_refused_exactly(text in any::<String>()) {
        // Control characters by Unicode's reckoning, less the C1 range
        // (bytes a terminal's keyboard never sends) and the two of text.
        let keys = |c: char| c.is_control() && !matches!(c, '\n' | '\t') && (c as u32) < 0x80;
        match input::check_text(&text) {
            Ok(()) => prop_assert!(!text.chars().any(keys)),
            Err(e) => {
                let (offset, c) = text.char_indices().find(|(_, c)| keys(*c)).unwrap();
                prop_assert_eq!((e.offset, e.byte), (offset, c as u8));
            }
        }
    }
}

proptest! {
    // Each case starts a tmux session: a handful is enough.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn printable_text_reaches_a_pane_byte_exact(
        text in "[ -~éß€✓]{1,400}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = TmuxRuntime::new(dir.path().join("tmux.sock"));
        let out = dir.path().join("out");
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let got = tokio.block_on(async {
            runtime
                .start(&StartSpec {
                    id: "p".into(),
                    cwd: dir.path().to_path_buf(),
                    command: "IFS= read -r line; printf '%s' \"$line\" > out.tmp && mv out.tmp out; sleep 60".into(),
                    env: BTreeMap::new(),
                    log_path: dir.path().join("log"),
                    container: None,
                })
                .await
                .unwrap();
            runtime.write_input("p", &text, true).await.unwrap();
            let mut got = None;
            for _ in 0..200 {
                if let Ok(bytes) = std::fs::read(&out) {
                    got = Some(bytes);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            runtime.stop("p").await.unwrap();
            got
        });
        prop_assert_eq!(got.map(String::from_utf8), Some(Ok(text)));
    }
}
