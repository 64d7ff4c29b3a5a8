//! Codex CLI (0.16x–0.170): finding a session's rollout file, what each of
//! its lines means, and the per-launch trust arguments (AGENTS.md §3).
//! Codex hooks send Claude's payload shape: [`super::hook`] reads them.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Local, NaiveDate};
use serde_json::Value;

use super::{transcript_line, Kind, Observation};

/// The first line (`session_meta`) is often ~20 KB; past this it is not one.
const FIRST_LINE_MAX: u64 = 1 << 20;

/// The rollout of the Codex session started at `started` in `worktree`,
/// under `codex_home` (`$CODEX_HOME`, else `~/.codex`): the file named by
/// `thread_id` when Codex printed one, else the newest rollout written
/// since `started` whose `session_meta` names `worktree` as its cwd. Only
/// the day directories from the start's date to today are read. `None`
/// until Codex has created it (on the first turn).
pub(crate) fn find_rollout(
    codex_home: &Path,
    worktree: &Path,
    thread_id: Option<&str>,
    started: SystemTime,
) -> Option<PathBuf> {
    let real = fs::canonicalize(worktree).unwrap_or_else(|_| worktree.to_path_buf());
    let first = DateTime::<Local>::from(started).date_naive();
    let today = Local::now().date_naive();
    let mut day = today.max(first);
    loop {
        let found = rollouts(&codex_home.join("sessions"), day)
            .into_iter()
            .find(|path| match thread_id {
                Some(id) => path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(id)),
                None => {
                    written_since(path, started)
                        && session_cwd(path).is_some_and(|cwd| cwd == real || cwd == worktree)
                }
            });
        if found.is_some() || day <= first {
            return found;
        }
        day = day.pred_opt()?;
    }
}

/// `sessions/YYYY/MM/DD/rollout-*.jsonl`, newest name first.
fn rollouts(sessions: &Path, day: NaiveDate) -> Vec<PathBuf> {
    let dir = sessions.join(day.format("%Y/%m/%d").to_string());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("rollout-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort_unstable_by(|a, b| b.cmp(a));
    files
}

/// An older session in the same worktree left its rollout untouched since.
fn written_since(path: &Path, started: SystemTime) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started)
}

/// `session_meta.payload.cwd` from the rollout's first line.
fn session_cwd(path: &Path) -> Option<PathBuf> {
    let mut line = Vec::new();
    BufReader::new(File::open(path).ok()?.take(FIRST_LINE_MAX))
        .read_until(b'\n', &mut line)
        .ok()?;
    let record: Value = serde_json::from_slice(&line).ok()?;
    if record["type"] != "session_meta" {
        return None;
    }
    record["payload"]["cwd"].as_str().map(PathBuf::from)
}

/// What rollout line `line_no` says (AGENTS.md §3's table). `None` only for
/// a line that is not a JSON object; lines that change nothing are
/// [`Kind::Metadata`]. Codex writes no record of a pending approval.
pub(crate) fn observe(line_no: u64, line: &[u8]) -> Option<Observation> {
    let record: Value = serde_json::from_slice(line).ok()?;
    if !record.is_object() {
        return None;
    }
    let payload = &record["payload"];
    let (kind, detail) = match record["type"].as_str() {
        Some("session_meta") => {
            let id = payload["id"].as_str().map(str::to_owned);
            let detail = format!("session_meta {}", id.as_deref().unwrap_or("?"));
            let kind = Kind::SessionStarted {
                agent_session_id: id,
                transcript: None,
            };
            (kind, detail)
        }
        Some("event_msg") => event(payload),
        Some("response_item") => response_item(payload),
        other => (Kind::Metadata, other.unwrap_or("untyped").to_owned()),
    };
    Some(transcript_line(&record, line_no, kind, &detail))
}

fn event(payload: &Value) -> (Kind, String) {
    let name = payload["type"].as_str().unwrap_or("?");
    let kind = match name {
        "task_started" | "turn_started" | "user_message" => Kind::PromptSubmitted,
        "agent_message" | "agent_reasoning" | "patch_apply_end" | "mcp_tool_call_end"
        | "web_search_end" => Kind::Working,
        "task_complete" | "turn_complete" => match &payload["error"] {
            Value::Null => Kind::TurnEnded,
            error => {
                let info = &error["codex_error_info"];
                let reason = info
                    .as_str()
                    .or(info
                        .as_object()
                        .and_then(|o| o.keys().next())
                        .map(String::as_str))
                    .or(error["message"].as_str())
                    .unwrap_or("error");
                return (Kind::TurnFailed, format!("{name} error {reason}"));
            }
        },
        "turn_aborted" => {
            let reason = payload["reason"].as_str().unwrap_or("?");
            return (Kind::TurnEnded, format!("turn_aborted {reason}"));
        }
        _ => Kind::Metadata,
    };
    (kind, name.to_owned())
}

fn response_item(payload: &Value) -> (Kind, String) {
    let item = payload["type"].as_str().unwrap_or("?");
    match item {
        "function_call" | "custom_tool_call" => {
            let name = payload["name"].as_str().unwrap_or("?");
            (Kind::Working, format!("{item} {name}"))
        }
        "function_call_output"
        | "custom_tool_call_output"
        | "local_shell_call"
        | "web_search_call"
        | "reasoning" => (Kind::Working, item.to_owned()),
        // Messages repeat the `user_message` / `agent_message` events (and
        // the developer instructions written at the start).
        _ => (Kind::Metadata, item.to_owned()),
    }
}

/// Arguments for `codex` that trust `worktree` for this launch only (no
/// config file written) and skip the update interstitial, so that no
/// dialog swallows the first prompt.
pub(crate) fn launch_args(worktree: &Path) -> Vec<String> {
    let real = fs::canonicalize(worktree).unwrap_or_else(|_| worktree.to_path_buf());
    vec![
        "-c".to_owned(),
        format!(
            "projects.{}.trust_level=\"trusted\"",
            toml_string(&real.to_string_lossy())
        ),
        "-c".to_owned(),
        "check_for_update_on_startup=false".to_owned(),
    ]
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::signals::Source;

    fn kind(line_no: u64, record: Value) -> (Kind, String) {
        let o = observe(line_no, &serde_json::to_vec(&record).unwrap()).expect("a JSON object");
        assert_eq!(o.source, Source::Transcript);
        (o.kind, o.detail)
    }

    fn event(payload: Value) -> Value {
        json!({"timestamp": "2026-11-20T09:00:06.000Z", "type": "event_msg", "payload": payload})
    }

    fn meta(cwd: &Path) -> String {
        json!({"timestamp": "2026-11-20T09:00:05.000Z", "type": "session_meta", "payload": {
            "id": "01a1f866-0000-7000-8000-000000000001", "timestamp": "2026-11-20T09:00:05.000Z",
            "cwd": cwd, "originator": "codex_cli_rs", "cli_version": "0.170.0", "source": "cli",
            "model_provider": "openai", "base_instructions": {"text": "x".repeat(20_000)},
            "git": {"commit_hash": "abc", "branch": "ao/w8", "repository_url": "git@example.com:app.git"}}})
        .to_string()
    }

    #[test]
    fn lines_read_as_the_table_says() {
        assert_eq!(
            kind(
                1,
                serde_json::from_str(&meta(Path::new("/home/dev/.ao/wt/w8"))).unwrap()
            ),
            (
                Kind::SessionStarted {
                    agent_session_id: Some("01a1f866-0000-7000-8000-000000000001".into()),
                    transcript: None
                },
                "session_meta 01a1f866-0000-7000-8000-000000000001 at line 1".into()
            )
        );
        assert_eq!(
            kind(
                2,
                event(
                    json!({"type": "task_started", "turn_id": "01a1", "started_at": 1795168806, "model_context_window": 258400})
                )
            ),
            (Kind::PromptSubmitted, "task_started at line 2".into())
        );
        let context = json!({"timestamp": "…", "type": "turn_context", "payload": {"turn_id": "01a1", "cwd": "/w", "approval_policy": "on-request", "model": "gpt-5.5"}});
        assert_eq!(kind(3, context).0, Kind::Metadata);
        assert_eq!(
            kind(
                4,
                event(
                    json!({"type": "user_message", "message": "Add a --json flag", "images": []})
                )
            )
            .0,
            Kind::PromptSubmitted
        );
        let call = json!({"timestamp": "…", "type": "response_item", "payload": {"type": "function_call", "name": "exec_command",
            "arguments": "{\"cmd\":\"cargo test\",\"sandbox_permissions\":\"require_escalated\"}", "call_id": "call_1"}});
        assert_eq!(
            kind(5, call),
            (Kind::Working, "function_call exec_command at line 5".into())
        );
        let output = json!({"timestamp": "…", "type": "response_item", "payload": {"type": "function_call_output", "call_id": "call_1", "output": "ok"}});
        assert_eq!(kind(6, output).0, Kind::Working);
        assert_eq!(
            kind(
                7,
                event(json!({"type": "agent_message", "message": "Running tests"}))
            )
            .0,
            Kind::Working
        );
        let message = json!({"timestamp": "…", "type": "response_item", "payload": {"type": "message", "role": "assistant", "content": []}});
        assert_eq!(kind(8, message).0, Kind::Metadata);
        assert_eq!(
            kind(9, event(json!({"type": "token_count", "info": null}))).0,
            Kind::Metadata
        );
        assert_eq!(
            kind(
                10,
                event(
                    json!({"type": "task_complete", "turn_id": "01a1", "last_agent_message": "Done", "completed_at": 1795168880, "duration_ms": 74240})
                )
            ),
            (Kind::TurnEnded, "task_complete at line 10".into())
        );
        assert_eq!(
            kind(
                11,
                event(json!({"type": "turn_aborted", "reason": "interrupted"}))
            ),
            (
                Kind::TurnEnded,
                "turn_aborted interrupted at line 11".into()
            )
        );
        assert_eq!(
            kind(
                12,
                event(
                    json!({"type": "task_complete", "turn_id": "01a2", "last_agent_message": null,
                "error": {"message": "You've hit your usage limit.", "codex_error_info": "usage_limit_exceeded"}})
                )
            ),
            (
                Kind::TurnFailed,
                "task_complete error usage_limit_exceeded at line 12".into()
            )
        );
        assert_eq!(
            kind(
                13,
                event(json!({"type": "task_complete", "error": {"message": "unauthorized"}}))
            )
            .1,
            "task_complete error unauthorized at line 13"
        );
        assert!(observe(14, b"{\"type\":\"event_msg\",\"payl").is_none());
    }

    fn rollout(dir: &Path, day: NaiveDate, name: &str, first_line: &str) -> PathBuf {
        let dir = dir
            .join("sessions")
            .join(day.format("%Y/%m/%d").to_string());
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "rollout-{}T09-00-0{name}.jsonl",
            day.format("%Y-%m-%d")
        ));
        fs::write(&path, format!("{first_line}\n")).unwrap();
        path
    }

    #[test]
    fn a_rollout_is_found_by_its_thread_id() {
        let home = tempfile::tempdir().unwrap();
        let today = Local::now().date_naive();
        let id = "01a1f866-0000-7000-8000-0000000000aa";
        let ours = rollout(home.path(), today, &format!("5-{id}"), "{}");
        rollout(
            home.path(),
            today,
            "6-01a1f866-0000-7000-8000-0000000000bb",
            "{}",
        );
        let started = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(
            find_rollout(home.path(), Path::new("/nowhere"), Some(id), started),
            Some(ours)
        );
        assert_eq!(
            find_rollout(
                home.path(),
                Path::new("/nowhere"),
                Some("01a1f866-0000-7000-8000-0000000000cc"),
                started
            ),
            None
        );
    }

    #[test]
    fn a_rollout_is_found_by_its_cwd_among_those_written_since_the_start() {
        let home = tempfile::tempdir().unwrap();
        let wt = tempfile::tempdir().unwrap();
        let (ours, other) = (wt.path().join("w8"), wt.path().join("w9"));
        fs::create_dir(&ours).unwrap();
        fs::create_dir(&other).unwrap();
        let today = Local::now().date_naive();
        let started = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(find_rollout(home.path(), &ours, None, started), None);
        // An earlier session in the same worktree, untouched since the start.
        let old = rollout(home.path(), today, "1-aaaa", &meta(&ours));
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(started - Duration::from_secs(3600))
            .unwrap();
        let theirs = rollout(home.path(), today, "3-cccc", &meta(&other));
        assert_eq!(find_rollout(home.path(), &ours, None, started), None);
        let new = rollout(home.path(), today, "2-bbbb", &meta(&ours));
        assert_eq!(find_rollout(home.path(), &ours, None, started), Some(new));
        assert_eq!(
            find_rollout(home.path(), &other, None, started),
            Some(theirs)
        );
    }

    #[test]
    fn only_the_days_since_the_start_are_read() {
        let home = tempfile::tempdir().unwrap();
        let wt = tempfile::tempdir().unwrap();
        let today = Local::now().date_naive();
        let two_days_ago = today - chrono::Days::new(2);
        let four_days_ago = today - chrono::Days::new(4);
        let id = "01a1f866-0000-7000-8000-0000000000dd";
        let started = SystemTime::now() - Duration::from_secs(3 * 86_400);
        let older = rollout(
            home.path(),
            four_days_ago,
            &format!("1-{id}"),
            &meta(wt.path()),
        );
        assert_eq!(
            find_rollout(home.path(), wt.path(), Some(id), started),
            None
        );
        fs::remove_file(older).unwrap();
        let found = rollout(
            home.path(),
            two_days_ago,
            &format!("1-{id}"),
            &meta(wt.path()),
        );
        assert_eq!(
            find_rollout(home.path(), wt.path(), Some(id), started),
            Some(found)
        );
    }

    #[test]
    fn launch_args_trust_the_worktree_for_this_launch() {
        let dir = tempfile::tempdir().unwrap();
        let wt = dir.path().join("w \"8\"");
        fs::create_dir(&wt).unwrap();
        let real = fs::canonicalize(&wt)
            .unwrap()
            .to_string_lossy()
            .replace('"', "\\\"");
        assert_eq!(
            launch_args(&wt),
            [
                "-c".to_owned(),
                format!("projects.\"{real}\".trust_level=\"trusted\""),
                "-c".to_owned(),
                "check_for_update_on_startup=false".to_owned(),
            ]
        );
    }
}
