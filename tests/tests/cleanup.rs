//! `ao session cleanup` on the real stack: finished sessions lose their
//! worktrees, their unmerged branches and uncommitted work stay, a dry run
//! changes nothing, and a live session is left alone.

use std::path::Path;

use ao_tests::{commit, git, json_array, Cli, Stack};
use serde_json::Value;

/// The repository ignores what the scripted agent and `postCreate` write
/// (as a project ignores its tools' files): those are not work to keep.
fn ignore_tool_files(stack: &Stack) {
    std::fs::write(stack.repo.join(".gitignore"), ".agent-env\n.post-create\n").unwrap();
    git(&stack.repo, &["add", ".gitignore"]);
    commit(&stack.repo, "ignore tool files");
}

fn worktree_of(stack: &Stack, id: &str) -> String {
    stack.session(id)["worktree"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no worktree"))
        .to_string()
}

fn by_session<'a>(results: &'a [Value], id: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["session"] == id)
        .unwrap_or_else(|| panic!("no result for {id} in {results:?}"))
}

fn statuses(stack: &Stack) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = stack
        .sessions()
        .iter()
        .map(|s| (s["id"].to_string(), s["status"].to_string()))
        .collect();
    all.sort();
    all
}

#[test]
fn finished_sessions_lose_their_worktrees_and_keep_their_work() {
    let stack = Stack::new();
    ignore_tool_files(&stack);
    stack.up();

    // Exited by itself.
    let done = stack.spawn(&["app", "C-1", "--agent", "quitter"]);
    stack.wait_field(&done, "status", "done");
    // Killed, its worktree clean.
    let killed = stack.spawn(&["app", "C-2"]);
    stack.wait_field(&killed, "activity", "ready");
    stack.ao(&["session", "kill", &killed]).ok();
    // Killed, with a file nobody committed.
    let dirty = stack.spawn(&["app", "C-3"]);
    stack.wait_field(&dirty, "activity", "ready");
    stack.ao(&["session", "kill", &dirty]).ok();
    let dirty_tree = worktree_of(&stack, &dirty);
    std::fs::write(Path::new(&dirty_tree).join("notes.md"), "half done\n").unwrap();
    // Live and working on.
    let live = stack.spawn(&["app", "C-4"]);
    stack.wait_field(&live, "activity", "ready");

    let trees: Vec<String> = [&done, &killed, &live]
        .iter()
        .map(|id| worktree_of(&stack, id))
        .collect();
    let before = statuses(&stack);

    // A dry run says what it would do and does nothing.
    let dry = json_array(
        &stack
            .ao(&["session", "cleanup", "--dry-run", "--json"])
            .ok(),
    );
    assert_eq!(dry.len(), 3, "{dry:?}");
    assert_eq!(by_session(&dry, &done)["action"], "would-remove");
    assert_eq!(by_session(&dry, &done)["reason"], "done");
    assert_eq!(by_session(&dry, &killed)["action"], "would-remove");
    assert_eq!(by_session(&dry, &killed)["reason"], "killed");
    assert_eq!(by_session(&dry, &killed)["branchDeleted"], false);
    assert_eq!(by_session(&dry, &dirty)["action"], "would-keep");
    let lines = stack.ao(&["session", "cleanup", "--dry-run"]).ok().stdout;
    assert!(
        lines.contains(&format!("would remove worktree {}", trees[0])),
        "{lines}"
    );
    assert!(!lines.contains(&live), "{lines}");
    for tree in trees.iter().chain([&dirty_tree]) {
        assert!(
            Path::new(tree).join(".git").exists(),
            "{tree} is still there"
        );
    }
    assert_eq!(statuses(&stack), before, "a dry run changes no session");

    let run = json_array(&stack.ao(&["session", "cleanup", "--json"]).ok());
    assert_eq!(run.len(), 3, "{run:?}");
    for id in [&done, &killed] {
        let r = by_session(&run, id);
        assert_eq!(r["action"], "removed", "{r}");
        assert_eq!(r["branchDeleted"], false, "{r}");
        assert_eq!(stack.session(id)["status"], "cleanup");
    }
    let kept = by_session(&run, &dirty);
    assert_eq!(kept["action"], "kept", "{kept}");
    assert!(
        kept["detail"].as_str().unwrap().contains("notes.md"),
        "{kept}"
    );

    // The worktrees are gone, from disk and from git's list; the branches stay.
    let listed = git(&stack.repo, &["worktree", "list"]);
    for tree in &trees[..2] {
        assert!(!Path::new(tree).exists(), "{tree} removed");
        assert!(!listed.contains(tree.as_str()), "{listed}");
    }
    let branches = git(&stack.repo, &["branch", "--format=%(refname:short)"]);
    for branch in ["feat/C-1", "feat/C-2", "feat/C-3", "feat/C-4"] {
        assert!(
            branches.lines().any(|b| b == branch),
            "{branch}: {branches}"
        );
    }
    // Uncommitted work is kept where it was.
    assert_eq!(
        std::fs::read_to_string(Path::new(&dirty_tree).join("notes.md")).unwrap(),
        "half done\n"
    );
    assert_eq!(stack.session(&dirty)["status"], "killed");
    // The live session runs on in its worktree.
    assert!(Path::new(&trees[2]).join(".git").exists());
    assert_ne!(stack.session(&live)["status"], "cleanup");
    stack.ao(&["send", &live, "still here"]).ok();
    stack.wait_log(&live, "got: still here");

    let cleaned: Vec<String> = stack
        .events()
        .iter()
        .filter(|e| e["type"] == "session.cleaned")
        .map(|e| e["sessionId"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(cleaned.len(), 2, "{cleaned:?}");
    assert!(cleaned.contains(&done) && cleaned.contains(&killed));

    // Once committed, the kept one goes too; the cleaned ones are not listed again.
    git(Path::new(&dirty_tree), &["add", "notes.md"]);
    commit(Path::new(&dirty_tree), "notes");
    let again = json_array(
        &stack
            .ao(&["session", "cleanup", "--json", "-p", "app"])
            .ok(),
    );
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(by_session(&again, &dirty)["action"], "removed");
    assert!(!Path::new(&dirty_tree).exists());
    assert_eq!(
        git(&stack.repo, &["log", "-1", "--format=%s", "feat/C-3"]),
        "notes"
    );
}

#[test]
fn cleanup_of_an_unknown_project_is_refused() {
    let stack = Stack::new();
    stack.up();
    let run = stack.ao(&["session", "cleanup", "-p", "nope"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("unknown project"), "{}", run.stderr);
}
