//! Gemini CLI (2026-08): its chat file, the hooks `ao` installs in the
//! worktree's own settings, and its per-folder trust record (AGENTS.md §4).
//!
//! What is known, and what is not. The chat file holds completed records
//! only: a tool call is written once it is done, a pending approval never,
//! and nothing marks the end of a turn. The turn therefore comes from the
//! hooks (`BeforeAgent` opens it, `AfterAgent` closes it, `Notification`
//! `ToolPermission` is a pending approval). The chat file is read for one
//! thing: `type:"error"` records, which Gemini's record types allow; that
//! Gemini writes one when the model's API fails is not confirmed (AGENTS.md
//! §9), and `AfterAgent` carries no error, so a failed turn may show only
//! on the screen.
//!
//! Gemini reads hooks from the worktree's `.gemini/settings.json`, and
//! only when the folder is trusted (`~/.gemini/trustedFolders.json`). `ao`
//! merges its hooks into that file when it is not committed, and keeps it
//! out of git with a `.gemini/.gitignore` of the worktree's own: a git
//! worktree's `info/exclude` is the repository's, shared by every worktree
//! and the main checkout, so it is left alone.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Map, Value};

use super::{hook, transcript_line, Kind, Observation};

/// The hooks installed for a session: every event that tells about the
/// turn (`SessionEnd` does not: the process's liveness decides the exit).
pub(crate) const HOOK_EVENTS: &[&str] = &[
    "SessionStart",
    "BeforeAgent",
    "BeforeTool",
    "AfterTool",
    "Notification",
    "AfterAgent",
];

/// Gemini counts a hook's timeout in milliseconds.
const HOOK_TIMEOUT_MS: u64 = 5_000;

/// The worktree's settings file, relative to the worktree.
const SETTINGS: &str = ".gemini/settings.json";

/// What `ao` writes as `.gemini/.gitignore` when the worktree has none.
const GITIGNORE: &str =
    "# Written by ao: this worktree's Gemini hooks stay out of git.\n/settings.json\n/.gitignore\n";

/// The worktree as Gemini sees its working directory: symlinks resolved.
fn real(worktree: &Path) -> PathBuf {
    fs::canonicalize(worktree).unwrap_or_else(|_| worktree.to_path_buf())
}

/// A JSON file's value: `{}` when it does not exist.
fn read_json(path: &Path) -> io::Result<Value> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(path, &e.to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e),
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// The directory of the chat files of `worktree` under `gemini_dir`
/// (`${GEMINI_CLI_HOME:-$HOME}/.gemini`): `tmp/<slug>/chats`, where the
/// slug is the one Gemini registered for the folder in `projects.json`.
/// `None` until Gemini has registered it.
pub(crate) fn chats_dir(gemini_dir: &Path, worktree: &Path) -> Option<PathBuf> {
    let projects = read_json(&gemini_dir.join("projects.json")).ok()?;
    let key = real(worktree).to_string_lossy().into_owned();
    let slug = projects["projects"][key.as_str()].as_str()?;
    (!slug.is_empty() && !slug.contains(['/', '\\']) && slug != "..")
        .then(|| gemini_dir.join("tmp").join(slug).join("chats"))
}

/// The chat file of Gemini session `session_id` (`gemini --session-id`)
/// run in `worktree`: `session-<time>-<first 8 characters of the id>.jsonl`
/// whose first record names the session.
pub(crate) fn chat_file(gemini_dir: &Path, worktree: &Path, session_id: &str) -> Option<PathBuf> {
    let dir = chats_dir(gemini_dir, worktree)?;
    let short: String = session_id.chars().take(8).collect();
    let suffix = format!("-{short}.jsonl");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("session-") && n.ends_with(&suffix))
        })
        .find(|path| first_session_id(path).as_deref() == Some(session_id))
}

fn first_session_id(path: &Path) -> Option<String> {
    let mut line = Vec::new();
    BufReader::new(File::open(path).ok()?)
        .read_until(b'\n', &mut line)
        .ok()?;
    let record: Value = serde_json::from_slice(&line).ok()?;
    Some(record.get("sessionId")?.as_str()?.to_owned())
}

/// What chat-file line `line_no` says: an `error` record fails the turn;
/// every other record is [`Kind::Metadata`] (written after the fact, it
/// tells nothing about now). `None` only for a line that is not a JSON
/// object.
pub(crate) fn observe(line_no: u64, line: &[u8]) -> Option<Observation> {
    let record: Value = serde_json::from_slice(line).ok()?;
    if !record.is_object() {
        return None;
    }
    let (kind, detail) = match record["type"].as_str() {
        Some("error") => (
            Kind::TurnFailed,
            format!("error record: {}", text(&record["content"])),
        ),
        Some(other) => (Kind::Metadata, other.to_owned()),
        None if record.get("$set").is_some() => (Kind::Metadata, "$set".to_owned()),
        None if record.get("$rewindTo").is_some() => (Kind::Metadata, "$rewindTo".to_owned()),
        None => (Kind::Metadata, "session".to_owned()),
    };
    Some(transcript_line(&record, line_no, kind, &detail))
}

/// A record's `content`: a string, or the text of its parts.
fn text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The settings object that makes Gemini run `<hook_command> <Event>` on
/// each of [`HOOK_EVENTS`].
pub(crate) fn hooks_settings(hook_command: &str) -> Value {
    hook::settings(hook_command, HOOK_EVENTS, HOOK_TIMEOUT_MS)
}

/// Installs `ao`'s hooks in the worktree's `.gemini/settings.json`, merged
/// with what the file holds (a hook of the same command is replaced, so a
/// restore does not add a second), and keeps the file out of git.
///
/// # Errors
/// The file is committed (it is left alone: the session is then read from
/// its screen), is not a JSON object, cannot be kept out of git (an
/// existing `.gemini/.gitignore` that does not ignore it), or cannot be
/// written.
pub(crate) async fn install_hooks(worktree: &Path, hook_command: &str) -> io::Result<()> {
    let path = worktree.join(SETTINGS);
    if git_says(worktree, &["ls-files", "--error-unmatch", "--", SETTINGS]).await? {
        return Err(io::Error::other(format!(
            "{} is committed: ao does not change it",
            path.display()
        )));
    }
    let mut settings = read_json(&path)?;
    let hooks = settings
        .as_object_mut()
        .ok_or_else(|| invalid(&path, "not a JSON object"))?
        .entry("hooks")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| invalid(&path, "`hooks` is not an object"))?;
    merge_hooks(hooks, &hooks_settings(hook_command));
    keep_out_of_git(worktree).await?;
    let mut bytes = serde_json::to_vec_pretty(&settings)?;
    bytes.push(b'\n');
    super::replace(&path, &bytes)
}

/// Adds each event's group of `ours` to `hooks`, first dropping a group
/// that runs the same command.
fn merge_hooks(hooks: &mut Map<String, Value>, ours: &Value) {
    let Some(ours) = ours["hooks"].as_object() else {
        return;
    };
    for (event, groups) in ours {
        let commands: Vec<&Value> = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["hooks"].as_array().into_iter().flatten())
            .map(|h| &h["command"])
            .collect();
        let same = |group: &Value| {
            group["hooks"]
                .as_array()
                .is_some_and(|hs| hs.iter().any(|h| commands.contains(&&h["command"])))
        };
        let entry = hooks.entry(event.clone()).or_insert_with(|| json!([]));
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Value::Array(existing) = entry {
            existing.retain(|g| !same(g));
            existing.extend(groups.as_array().into_iter().flatten().cloned());
        }
    }
}

/// Makes git ignore the worktree's `.gemini/settings.json`, unless it does
/// already, with a `.gemini/.gitignore` that ignores itself too.
async fn keep_out_of_git(worktree: &Path) -> io::Result<()> {
    if git_says(worktree, &["check-ignore", "-q", "--", SETTINGS]).await? {
        return Ok(());
    }
    let dir = worktree.join(".gemini");
    let ignore = dir.join(".gitignore");
    if ignore.exists() {
        return Err(io::Error::other(format!(
            "{} does not ignore settings.json: ao does not change it",
            ignore.display()
        )));
    }
    fs::create_dir_all(&dir)?;
    fs::write(&ignore, GITIGNORE)
}

/// Whether `git <args>` in `worktree` says yes (exit 0) or no (exit 1).
///
/// # Errors
/// git cannot run, or fails otherwise.
async fn git_says(worktree: &Path, args: &[&str]) -> io::Result<bool> {
    let status = tokio::process::Command::new("git")
        .arg("-C")
        .arg(worktree)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(io::Error::other(format!(
            "git {} in {}: {status}",
            args.join(" "),
            worktree.display()
        ))),
    }
}

/// Marks `worktree` trusted (`TRUST_FOLDER`) in Gemini's
/// `trustedFolders.json` under `gemini_dir`, so that it loads the
/// worktree's settings (the hooks) and shows no trust dialog. Every other
/// folder is kept; the file is replaced atomically, and created if absent.
///
/// # Errors
/// The worktree does not exist, the file is not a JSON object (it is then
/// left as it is), or it cannot be written.
pub(crate) fn pre_trust(gemini_dir: &Path, worktree: &Path) -> io::Result<()> {
    let key = fs::canonicalize(worktree)?.to_string_lossy().into_owned();
    let path = gemini_dir.join("trustedFolders.json");
    let mut folders = read_json(&path)?;
    folders
        .as_object_mut()
        .ok_or_else(|| invalid(&path, "not a JSON object"))?
        .insert(key, json!("TRUST_FOLDER"));
    let mut bytes = serde_json::to_vec_pretty(&folders)?;
    bytes.push(b'\n');
    super::replace(&path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::tail::Tail;
    use crate::signals::Source;
    use crate::signals::Transcript;

    fn sh(dir: &Path, script: &str) {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    }

    /// A repository with one commit, and a worktree of it.
    fn repo_and_worktree(dir: &Path) -> PathBuf {
        sh(
            dir,
            "git init -q repo && cd repo && git -c user.name=t -c user.email=t@t commit -q --allow-empty -m i && git worktree add -q ../wt",
        );
        dir.join("wt")
    }

    fn status(worktree: &Path) -> String {
        let out = std::process::Command::new("git")
            .args(["status", "--porcelain", "--ignored=no"])
            .current_dir(worktree)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn only_error_records_say_something() {
        let lines = [
            (
                r#"{"sessionId":"s1","projectHash":"ab","startTime":"2026-11-20T09:00:00.000Z","lastUpdated":"2026-11-20T09:00:00.000Z","kind":"main"}"#,
                Kind::Metadata,
            ),
            (
                r#"{"id":"m1","timestamp":"2026-11-20T09:00:08.000Z","type":"user","content":[{"text":"Add a flag"}]}"#,
                Kind::Metadata,
            ),
            (
                r#"{"id":"m2","timestamp":"2026-11-20T09:00:20.000Z","type":"gemini","content":"Done","toolCalls":[{"id":"t1","name":"run_shell_command","args":{"command":"cargo test"},"status":"success","timestamp":"2026-11-20T09:00:18.000Z"}]}"#,
                Kind::Metadata,
            ),
            (
                r#"{"$set":{"lastUpdated":"2026-11-20T09:00:20.000Z"}}"#,
                Kind::Metadata,
            ),
            (r#"{"$rewindTo":"m1"}"#, Kind::Metadata),
        ];
        for (line, kind) in lines {
            assert_eq!(observe(1, line.as_bytes()).unwrap().kind, kind, "{line}");
        }
        let error = observe(
            7,
            br#"{"id":"m3","timestamp":"2026-11-20T09:05:00.000Z","type":"error","content":"[API Error: 429 Resource exhausted]"}"#,
        )
        .unwrap();
        assert_eq!(error.kind, Kind::TurnFailed);
        assert_eq!(
            error.detail,
            "error record: [API Error: 429 Resource exhausted] at line 7"
        );
        assert_eq!(error.source, Source::Transcript);
        assert!(observe(1, b"[1]").is_none());
    }

    #[test]
    fn the_chat_file_is_found_by_the_registered_slug_and_the_session_id() {
        let dir = tempfile::tempdir().unwrap();
        let gemini = dir.path().join(".gemini");
        let (ours, theirs) = (dir.path().join("app-1"), dir.path().join("app-2"));
        fs::create_dir_all(&ours).unwrap();
        fs::create_dir_all(&theirs).unwrap();
        assert_eq!(chats_dir(&gemini, &ours), None);
        fs::create_dir_all(&gemini).unwrap();
        fs::write(
            gemini.join("projects.json"),
            json!({"projects": {
                real(&ours).to_string_lossy(): "app-1",
                real(&theirs).to_string_lossy(): "app-2",
            }})
            .to_string(),
        )
        .unwrap();
        let chats = gemini.join("tmp/app-1/chats");
        assert_eq!(chats_dir(&gemini, &ours), Some(chats.clone()));
        fs::create_dir_all(&chats).unwrap();
        let id = "5f0c2a9e-1111-4222-8333-944445555666";
        // Another session whose id starts alike, then ours.
        let other = "5f0c2a9e-ffff-4222-8333-944445555666";
        for (name, session) in [
            ("session-2026-11-20T09-00-5f0c2a9e.jsonl", other),
            ("session-2026-11-20T09-01-5f0c2a9e.jsonl", id),
        ] {
            fs::write(
                chats.join(name),
                format!("{}\n", json!({"sessionId": session, "kind": "main"})),
            )
            .unwrap();
        }
        assert_eq!(
            chat_file(&gemini, &ours, id),
            Some(chats.join("session-2026-11-20T09-01-5f0c2a9e.jsonl"))
        );
        assert_eq!(chat_file(&gemini, &theirs, id), None);
        assert_eq!(chat_file(&gemini, &ours, "0000aaaa-0000"), None);
        // Read as any transcript: the error fails the turn.
        let path = chat_file(&gemini, &ours, id).unwrap();
        let mut t = Transcript::new(Tail::new(path.clone()), observe);
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        use std::io::Write;
        writeln!(file, r#"{{"id":"e","type":"error","content":"quota"}}"#).unwrap();
        let kinds: Vec<Kind> = t.poll().unwrap().into_iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [Kind::Metadata, Kind::TurnFailed]);
    }

    #[tokio::test]
    async fn hooks_are_merged_into_an_untracked_settings_file_that_git_ignores() {
        let dir = tempfile::tempdir().unwrap();
        let wt = repo_and_worktree(dir.path());
        fs::create_dir_all(wt.join(".gemini")).unwrap();
        let mine = json!({"theme": "Dracula", "hooks": {"AfterAgent": [{"hooks": [{"type": "command", "command": "notify-me"}]}]}});
        fs::write(wt.join(SETTINGS), mine.to_string()).unwrap();
        install_hooks(&wt, "/bin/ao worker hook --log /h.jsonl")
            .await
            .unwrap();
        // Twice, as a restore does: still one hook of ao's per event.
        install_hooks(&wt, "/bin/ao worker hook --log /h.jsonl")
            .await
            .unwrap();
        let s: Value = serde_json::from_slice(&fs::read(wt.join(SETTINGS)).unwrap()).unwrap();
        assert_eq!(s["theme"], "Dracula");
        let after = s["hooks"]["AfterAgent"].as_array().unwrap();
        assert_eq!(after.len(), 2, "{s}");
        assert_eq!(after[0]["hooks"][0]["command"], "notify-me");
        assert_eq!(
            after[1]["hooks"][0]["command"],
            "/bin/ao worker hook --log /h.jsonl AfterAgent"
        );
        assert_eq!(after[1]["hooks"][0]["timeout"], HOOK_TIMEOUT_MS);
        assert_eq!(s["hooks"]["BeforeTool"][0]["matcher"], "*");
        for event in HOOK_EVENTS {
            assert!(s["hooks"][event].is_array(), "{event}: {s}");
        }
        assert_eq!(status(&wt), "");
        // The repository's own exclude file is untouched.
        let exclude = dir.path().join("repo/.git/info/exclude");
        assert!(!fs::read_to_string(exclude)
            .unwrap_or_default()
            .contains(".gemini"));
    }

    #[tokio::test]
    async fn a_committed_settings_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let wt = repo_and_worktree(dir.path());
        sh(
            &wt,
            "mkdir .gemini && echo '{\"theme\":\"x\"}' > .gemini/settings.json && git add .gemini && git -c user.name=t -c user.email=t@t commit -q -m s",
        );
        let err = install_hooks(&wt, "ao-hook").await.unwrap_err();
        assert!(err.to_string().contains("is committed"), "{err}");
        assert_eq!(
            fs::read_to_string(wt.join(SETTINGS)).unwrap(),
            "{\"theme\":\"x\"}\n"
        );
        assert_eq!(status(&wt), "");
    }

    #[tokio::test]
    async fn a_gitignore_of_the_users_is_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        let wt = repo_and_worktree(dir.path());
        fs::create_dir_all(wt.join(".gemini")).unwrap();
        fs::write(wt.join(".gemini/.gitignore"), "cache/\n").unwrap();
        assert!(install_hooks(&wt, "ao-hook").await.is_err());
        assert!(!wt.join(SETTINGS).exists());
        // Ignored by the user's own rules: nothing else is needed.
        fs::write(wt.join(".gemini/.gitignore"), "*\n").unwrap();
        install_hooks(&wt, "ao-hook").await.unwrap();
        assert_eq!(
            fs::read_to_string(wt.join(".gemini/.gitignore")).unwrap(),
            "*\n"
        );
        assert_eq!(status(&wt), "");
    }

    #[test]
    fn trust_keeps_every_other_folder() {
        let dir = tempfile::tempdir().unwrap();
        let gemini = dir.path().join(".gemini");
        let wt = dir.path().join("wt");
        fs::create_dir_all(&wt).unwrap();
        pre_trust(&gemini, &wt).unwrap();
        let path = gemini.join("trustedFolders.json");
        let key = real(&wt).to_string_lossy().into_owned();
        let folders: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(folders, json!({ key.clone(): "TRUST_FOLDER" }));
        fs::write(
            &path,
            json!({"/home/dev/other": "DO_NOT_TRUST", key.clone(): "DO_NOT_TRUST"}).to_string(),
        )
        .unwrap();
        pre_trust(&gemini, &wt).unwrap();
        let folders: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            folders,
            json!({"/home/dev/other": "DO_NOT_TRUST", key: "TRUST_FOLDER"})
        );
        fs::write(&path, "{ not json").unwrap();
        assert!(pre_trust(&gemini, &wt).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "{ not json");
    }
}
