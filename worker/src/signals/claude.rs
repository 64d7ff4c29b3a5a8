//! Claude Code (2.1.x): where its transcript lives, what each line means,
//! the hooks `ao` installs, and its per-folder trust record (AGENTS.md §2).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{hook, transcript_line, Kind, Observation};

/// The hooks installed for a session: every event that tells about the
/// turn (`SessionEnd` does not: the process's liveness decides the exit).
pub(crate) const HOOK_EVENTS: &[&str] = &[
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "Notification",
    "Stop",
    "StopFailure",
];

/// Longer project directory names are cut here and get a hash suffix that
/// `ao` does not compute (Bun's hash): such a directory is found instead.
const ENC_MAX: usize = 200;

/// The start of a user line Claude writes when the user interrupts a turn.
const INTERRUPTED: &str = "[Request interrupted by user";

/// How Claude names a project directory: every character outside
/// `[A-Za-z0-9]` becomes one `-`.
fn enc(path: &Path) -> String {
    path.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// The worktree as Claude sees its working directory: symlinks resolved.
fn real(worktree: &Path) -> PathBuf {
    fs::canonicalize(worktree).unwrap_or_else(|_| worktree.to_path_buf())
}

/// Claude's project directory for `worktree` under `config_dir`
/// (`$CLAUDE_CONFIG_DIR`, else `~/.claude`). For a path whose name would
/// exceed 200 characters this is the existing directory with that prefix
/// whose transcripts were written in `worktree`, and `None` until Claude
/// has written one there; take the path from the `SessionStart` hook then,
/// or look again later.
pub(crate) fn project_dir(config_dir: &Path, worktree: &Path) -> Option<PathBuf> {
    let real = real(worktree);
    let name = enc(&real);
    let projects = config_dir.join("projects");
    if name.len() <= ENC_MAX {
        return Some(projects.join(name));
    }
    long_candidates(&projects, &name).into_iter().find(|dir| {
        fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
            .any(|path| written_in(&path, &real))
    })
}

/// The transcript of Claude session `uuid` (`claude --session-id <uuid>`)
/// run in `worktree`; it exists from the first prompt on. Depends on the
/// worktree and the uuid only, so two sessions never share one. `None`
/// as for [`project_dir`].
pub(crate) fn transcript_path(config_dir: &Path, worktree: &Path, uuid: &str) -> Option<PathBuf> {
    let real = real(worktree);
    let name = enc(&real);
    let file = format!("{uuid}.jsonl");
    let projects = config_dir.join("projects");
    if name.len() <= ENC_MAX {
        return Some(projects.join(name).join(file));
    }
    long_candidates(&projects, &name)
        .into_iter()
        .map(|dir| dir.join(&file))
        .find(|path| written_in(path, &real))
}

/// Directories named by the first [`ENC_MAX`] characters of `name`, a dash
/// and a hash.
fn long_candidates(projects: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{}-", &name[..ENC_MAX]);
    fs::read_dir(projects)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect()
}

/// Whether the first line of `transcript` that names a `cwd` names
/// `worktree` (the first lines may be snapshots without one).
fn written_in(transcript: &Path, worktree: &Path) -> bool {
    let Ok(file) = File::open(transcript) else {
        return false;
    };
    BufReader::new(file)
        .split(b'\n')
        .take(50)
        .map_while(Result::ok)
        .find_map(|line| {
            let record: Value = serde_json::from_slice(&line).ok()?;
            Some(Path::new(record.get("cwd")?.as_str()?) == worktree)
        })
        .unwrap_or(false)
}

/// What transcript line `line_no` says (AGENTS.md §2's table). `None` only
/// for a line that is not a JSON object; lines that change nothing are
/// [`Kind::Metadata`]. Lines of a sub-agent (`isSidechain`) are at most
/// [`Kind::Working`]: they never open, block or end the session's turn.
pub(crate) fn observe(line_no: u64, line: &[u8]) -> Option<Observation> {
    let record: Value = serde_json::from_slice(line).ok()?;
    if !record.is_object() {
        return None;
    }
    let (mut kind, mut detail) = match record["type"].as_str() {
        Some("user") => user(&record),
        Some("assistant") => assistant(&record),
        Some("system") => system(&record),
        Some("progress") => (
            Kind::Working,
            format!(
                "progress {}",
                record["data"]["type"].as_str().unwrap_or("?")
            ),
        ),
        other => (Kind::Metadata, other.unwrap_or("untyped").to_owned()),
    };
    if record["isSidechain"] == true && kind != Kind::Metadata {
        kind = Kind::Working;
        detail = format!("sidechain {detail}");
    }
    Some(transcript_line(&record, line_no, kind, &detail))
}

fn user(record: &Value) -> (Kind, String) {
    if record["isMeta"] == true || record["isCompactSummary"] == true {
        return (Kind::Metadata, "user meta".to_owned());
    }
    let texts: Vec<&str> = match &record["message"]["content"] {
        Value::String(text) => vec![text],
        Value::Array(blocks) => {
            if let Some(result) = blocks.iter().find(|b| b["type"] == "tool_result") {
                let error = if result["is_error"] == true {
                    " error"
                } else {
                    ""
                };
                return (Kind::Working, format!("tool_result{error}"));
            }
            blocks.iter().filter_map(|b| b["text"].as_str()).collect()
        }
        _ => return (Kind::Metadata, "user".to_owned()),
    };
    if texts.iter().any(|t| t.starts_with(INTERRUPTED)) {
        (Kind::TurnEnded, "interrupted by user".to_owned())
    } else {
        (Kind::PromptSubmitted, "user prompt".to_owned())
    }
}

fn assistant(record: &Value) -> (Kind, String) {
    if record["isApiErrorMessage"] == true {
        let status = match &record["apiErrorStatus"] {
            Value::Null => "?".to_owned(),
            status => status.to_string(),
        };
        let error = record["error"].as_str().unwrap_or("unknown");
        return (Kind::TurnFailed, format!("API error {status} {error}"));
    }
    let message = &record["message"];
    let blocks = message["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let tool_uses = || blocks.iter().filter(|b| b["type"] == "tool_use");
    if let Some(question) = tool_uses().find(|b| b["name"] == "AskUserQuestion") {
        let input = &question["input"];
        let text = input["questions"][0]["question"]
            .as_str()
            .or(input["question"].as_str());
        let detail = match text {
            Some(text) => format!("AskUserQuestion {}", super::short(text, 80)),
            None => "AskUserQuestion".to_owned(),
        };
        return (Kind::DialogOpened, detail);
    }
    if let Some(tool) = tool_uses().next() {
        let name = tool["name"].as_str().unwrap_or("?");
        return (Kind::Working, format!("tool_use {name}"));
    }
    match message["stop_reason"].as_str() {
        Some("end_turn") => (Kind::TurnEnded, "assistant stop_reason=end_turn".to_owned()),
        _ => {
            let block = blocks.first().and_then(|b| b["type"].as_str());
            (
                Kind::Working,
                format!("assistant {}", block.unwrap_or("message")),
            )
        }
    }
}

fn system(record: &Value) -> (Kind, String) {
    match record["subtype"].as_str() {
        Some("turn_duration") => (
            Kind::TurnEnded,
            format!("turn_duration {}ms", record["durationMs"]),
        ),
        Some("api_error") => (
            Kind::Working,
            format!(
                "api_error retry {}/{}",
                record["retryAttempt"], record["maxRetries"]
            ),
        ),
        other => (Kind::Metadata, format!("system {}", other.unwrap_or("?"))),
    }
}

/// The settings object, passed as `claude --settings <file>`, that makes
/// Claude run `<hook_command> <Event>` on each of [`HOOK_EVENTS`].
pub(crate) fn hooks_settings(hook_command: &str) -> Value {
    hook::settings(hook_command, HOOK_EVENTS, 5)
}

/// Marks `worktree` trusted in Claude's state file `claude_json`
/// (`$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`), so that no
/// trust dialog swallows the first prompt. Every other key is kept; the
/// file is replaced atomically (running Claudes rewrite it without
/// locking), and created if absent.
///
/// # Errors
/// The worktree does not exist, the file is not a JSON object (it is then
/// left as it is), or it cannot be written.
pub(crate) fn pre_trust(claude_json: &Path, worktree: &Path) -> io::Result<()> {
    let key = fs::canonicalize(worktree)?.to_string_lossy().into_owned();
    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what}", claude_json.display()),
        )
    };
    let mut state = match fs::read(claude_json) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e),
    };
    let project = state
        .as_object_mut()
        .ok_or_else(|| invalid("not a JSON object"))?
        .entry("projects")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| invalid("`projects` is not an object"))?
        .entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| invalid("the project's entry is not an object"))?;
    project.insert("hasTrustDialogAccepted".into(), json!(true));
    project.insert("hasCompletedProjectOnboarding".into(), json!(true));
    let mut bytes = serde_json::to_vec_pretty(&state)?;
    bytes.push(b'\n');
    super::replace(claude_json, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Source;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use crate::signals::hook::observe_hook;
    use crate::signals::tail::Tail;
    use crate::signals::Transcript;

    /// The envelope of AGENTS.md §2's examples.
    const E: &str = r#""parentUuid":"3f0c","isSidechain":false,"userType":"external","cwd":"/home/dev/.ao/wt/w7","sessionId":"ec96c0de-0000-4000-8000-000000000001","version":"2.1.295","gitBranch":"ao/w7""#;

    fn line(body: &str) -> Vec<u8> {
        format!("{{{E},{body}}}").into_bytes()
    }

    fn kind(line_no: u64, body: &str) -> (Kind, String) {
        let o = observe(line_no, &line(body)).expect("a JSON object");
        assert_eq!(o.source, Source::Transcript);
        (o.kind, o.detail)
    }

    const PROMPT: &str = r#""type":"user","message":{"role":"user","content":"Add a --json flag to status"},"uuid":"f1db","timestamp":"2026-11-20T09:00:08.110Z""#;
    const TOOL_USE: &str = r#""type":"assistant","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"tool_use","id":"toolu_01","name":"Bash","input":{"command":"cargo test","description":"Run tests"}}],"stop_reason":"tool_use","usage":{"input_tokens":4}},"requestId":"req_011C","uuid":"a1","timestamp":"2026-11-20T09:00:12.000Z""#;
    const TOOL_RESULT: &str = r#""type":"user","message":{"role":"user","content":[{"tool_use_id":"toolu_01","type":"tool_result","content":"test result: ok","is_error":false}]},"toolUseResult":{"stdout":"ok","stderr":"","interrupted":false,"isImage":false},"uuid":"a2","timestamp":"2026-11-20T09:00:40.000Z""#;
    const END_TURN: &str = r#""type":"assistant","message":{"id":"msg_02","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[{"type":"text","text":"Done: tests pass."}],"stop_reason":"end_turn","usage":{}},"requestId":"req_011D","uuid":"a3","timestamp":"2026-11-20T09:01:15.000Z""#;
    const TURN_DURATION: &str = r#""type":"system","subtype":"turn_duration","durationMs":67290,"messageCount":9,"isMeta":false,"uuid":"a4","timestamp":"2026-11-20T09:01:15.100Z""#;
    const API_529: &str = r#""type":"assistant","message":{"id":"x","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"API Error: 529 Overloaded"}],"stop_reason":"stop_sequence"},"error":"server_error","isApiErrorMessage":true,"apiErrorStatus":529,"uuid":"a5","timestamp":"2026-11-20T09:05:00.000Z""#;
    const API_429: &str = r#""type":"assistant","message":{"id":"y","model":"<synthetic>","role":"assistant","content":[{"type":"text","text":"You've hit your session limit · resets 3pm (UTC)"}],"stop_reason":"stop_sequence"},"error":"rate_limit","isApiErrorMessage":true,"apiErrorStatus":429,"uuid":"a6","timestamp":"2026-11-20T10:00:00.000Z""#;

    #[test]
    fn enc_replaces_every_other_character_with_one_dash() {
        assert_eq!(
            enc(Path::new("/home/dev/.ao/wt/w_1")),
            "-home-dev--ao-wt-w-1"
        );
        assert_eq!(enc(Path::new("/tmp/café b")), "-tmp-caf--b");
    }

    #[test]
    fn the_transcript_path_depends_on_the_worktree_and_the_uuid_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("claude");
        let (a, b) = (dir.path().join("wt/app_1"), dir.path().join("wt/app.1x"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        let real_a = enc(&fs::canonicalize(&a).unwrap());
        assert!(real_a.ends_with("-wt-app-1"));
        assert_eq!(
            project_dir(&config, &a),
            Some(config.join("projects").join(&real_a))
        );
        assert_eq!(
            transcript_path(&config, &a, "u1"),
            Some(config.join("projects").join(&real_a).join("u1.jsonl"))
        );
        assert_ne!(
            transcript_path(&config, &a, "u1"),
            transcript_path(&config, &b, "u1")
        );
        assert_ne!(
            transcript_path(&config, &a, "u1"),
            transcript_path(&config, &a, "u2")
        );
    }

    #[test]
    fn a_long_path_is_found_by_its_prefix_and_confirmed_by_its_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("claude");
        let deep = dir.path().join("d".repeat(120)).join("e".repeat(120));
        let (ours, theirs) = (deep.join("w1"), deep.join("w2"));
        fs::create_dir_all(&ours).unwrap();
        fs::create_dir_all(&theirs).unwrap();
        let real_ours = fs::canonicalize(&ours).unwrap();
        let name = enc(&real_ours);
        assert!(name.len() > ENC_MAX);
        assert_eq!(transcript_path(&config, &ours, "u1"), None);
        assert_eq!(project_dir(&config, &ours), None);
        // Both worktrees share the prefix; only the cwd tells them apart.
        let projects = config.join("projects");
        for (hash, worktree, uuid) in [("1a2b", &theirs, "u1"), ("9z8y", &ours, "u1")] {
            let dir = projects.join(format!("{}-{hash}", &name[..ENC_MAX]));
            fs::create_dir_all(&dir).unwrap();
            let cwd = fs::canonicalize(worktree).unwrap();
            let first = format!(
                "{{\"type\":\"file-history-snapshot\"}}\n{}\n",
                json!({"type": "user", "cwd": cwd, "message": {"content": "hi"}})
            );
            fs::write(dir.join(format!("{uuid}.jsonl")), first).unwrap();
        }
        let ours_dir = projects.join(format!("{}-9z8y", &name[..ENC_MAX]));
        assert_eq!(
            transcript_path(&config, &ours, "u1"),
            Some(ours_dir.join("u1.jsonl"))
        );
        assert_eq!(project_dir(&config, &ours), Some(ours_dir));
        assert_eq!(
            transcript_path(&config, &theirs, "u1"),
            Some(
                projects
                    .join(format!("{}-1a2b", &name[..ENC_MAX]))
                    .join("u1.jsonl")
            )
        );
    }

    #[test]
    fn lines_read_as_the_table_says() {
        assert_eq!(
            kind(3, PROMPT),
            (Kind::PromptSubmitted, "user prompt at line 3".into())
        );
        assert_eq!(
            kind(7, TOOL_USE),
            (Kind::Working, "tool_use Bash at line 7".into())
        );
        assert_eq!(
            kind(8, TOOL_RESULT),
            (Kind::Working, "tool_result at line 8".into())
        );
        assert_eq!(
            kind(41, END_TURN),
            (
                Kind::TurnEnded,
                "assistant stop_reason=end_turn at line 41".into()
            )
        );
        assert_eq!(
            kind(42, TURN_DURATION),
            (Kind::TurnEnded, "turn_duration 67290ms at line 42".into())
        );
        assert_eq!(
            kind(50, API_529),
            (
                Kind::TurnFailed,
                "API error 529 server_error at line 50".into()
            )
        );
        let partial = r#""type":"assistant","message":{"id":"msg_03","content":[{"type":"thinking","thinking":"…"}],"stop_reason":null},"timestamp":"2026-11-20T09:00:09.000Z""#;
        assert_eq!(
            kind(4, partial),
            (Kind::Working, "assistant thinking at line 4".into())
        );
        let progress = r#""type":"progress","data":{"type":"bash_progress","output":"Compiling"},"toolUseID":"toolu_01","timestamp":"2026-11-20T09:00:20.000Z""#;
        assert_eq!(
            kind(9, progress),
            (Kind::Working, "progress bash_progress at line 9".into())
        );
        let retry = r#""type":"system","subtype":"api_error","level":"error","retryInMs":2000,"retryAttempt":2,"maxRetries":10,"timestamp":"2026-11-20T09:00:30.000Z""#;
        assert_eq!(
            kind(10, retry),
            (Kind::Working, "api_error retry 2/10 at line 10".into())
        );
    }

    #[test]
    fn interruptions_end_the_turn() {
        let plain =
            r#""type":"user","message":{"role":"user","content":"[Request interrupted by user]"}"#;
        assert_eq!(kind(5, plain).0, Kind::TurnEnded);
        let refused = r#""type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"The user doesn't want to proceed with this tool use.","is_error":true}]}"#;
        assert_eq!(
            kind(6, refused),
            (Kind::Working, "tool_result error at line 6".into())
        );
        let for_tool = r#""type":"user","message":{"role":"user","content":[{"type":"text","text":"[Request interrupted by user for tool use]"}]}"#;
        assert_eq!(
            kind(7, for_tool),
            (Kind::TurnEnded, "interrupted by user at line 7".into())
        );
    }

    #[test]
    fn a_pending_question_is_a_dialog_with_its_text() {
        let question = r#""type":"assistant","message":{"id":"m","content":[{"type":"tool_use","id":"toolu_q","name":"AskUserQuestion","input":{"questions":[{"question":"Which database should the cache use?","header":"DB","options":[{"label":"redb"},{"label":"sqlite"}],"multiSelect":false}]}}],"stop_reason":"tool_use"}"#;
        assert_eq!(
            kind(12, question),
            (
                Kind::DialogOpened,
                "AskUserQuestion Which database should the cache use? at line 12".into()
            )
        );
    }

    #[test]
    fn sidechain_lines_never_end_or_block_a_turn() {
        let sub = |body: &str| {
            let body = body.to_owned() + r#","agentId":"a8f3""#;
            let bytes = format!(
                "{{{},{body}}}",
                E.replace(r#""isSidechain":false"#, r#""isSidechain":true"#)
            );
            observe(1, bytes.as_bytes()).unwrap().kind
        };
        assert_eq!(sub(END_TURN), Kind::Working);
        assert_eq!(sub(API_429), Kind::Working);
        assert_eq!(sub(PROMPT), Kind::Working);
        assert_eq!(sub(r#""type":"ai-title","title":"x""#), Kind::Metadata);
    }

    #[test]
    fn other_records_are_metadata_and_garbage_is_none() {
        for body in [
            r#""type":"file-history-snapshot","messageId":"m","snapshot":{}"#,
            r#""type":"ai-title","title":"Add --json""#,
            r#""type":"last-prompt","prompt":"x""#,
            r#""type":"queue-operation","operation":"enqueue""#,
            r#""type":"system","subtype":"compact_boundary""#,
            r#""type":"user","isMeta":true,"message":{"content":"<local-command-caveat>…"}"#,
            r#""type":"something-new""#,
        ] {
            assert_eq!(kind(1, body).0, Kind::Metadata, "{body}");
        }
        assert!(observe(1, b"{\"type\":\"user\",\"mess").is_none());
        assert!(observe(1, b"\"just a string\"").is_none());
        assert!(observe(1, &[0xff, 0xfe]).is_none());
    }

    #[test]
    fn the_record_time_is_the_observation_time() {
        let o = observe(1, &line(PROMPT)).unwrap();
        let want = chrono::DateTime::parse_from_rfc3339("2026-11-20T09:00:08.110Z").unwrap();
        assert_eq!(o.at, std::time::SystemTime::from(want));
    }

    /// prompt → tool use → (hook) permission dialog → approval → end of
    /// turn → later a rate-limit error, as one session produces them.
    #[test]
    fn a_whole_session_walk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec96.jsonl");
        let mut transcript = Transcript::new(Tail::new(path.clone()), observe);
        let mut seen = Vec::new();
        let write = |body: &str| {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(&[line(body), b"\n".to_vec()].concat())
                .unwrap();
        };
        let hook = |event: &str, fields: Value| {
            let mut p = json!({"session_id": "ec96", "cwd": "/home/dev/.ao/wt/w7", "hook_event_name": event});
            p.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            observe_hook(event, &serde_json::to_vec(&p).unwrap())
        };
        let bash = json!({"tool_name": "Bash", "tool_input": {"command": "cargo test"}});
        write(r#""type":"file-history-snapshot","messageId":"m0","snapshot":{}"#);
        write(PROMPT);
        write(TOOL_USE);
        seen.extend(transcript.poll().unwrap());
        seen.extend(hook("PermissionRequest", bash.clone()));
        seen.extend(hook("PostToolUse", bash));
        write(TOOL_RESULT);
        write(END_TURN);
        write(TURN_DURATION);
        seen.extend(transcript.poll().unwrap());
        seen.extend(hook("Stop", json!({"stop_hook_active": false})));
        write(API_429);
        seen.extend(transcript.poll().unwrap());
        let walk: Vec<(Kind, Source, &str)> = seen
            .iter()
            .map(|o| (o.kind.clone(), o.source, o.detail.as_str()))
            .collect();
        use Source::{Hook, Transcript as File};
        assert_eq!(
            walk,
            [
                (Kind::Metadata, File, "file-history-snapshot at line 1"),
                (Kind::PromptSubmitted, File, "user prompt at line 2"),
                (Kind::Working, File, "tool_use Bash at line 3"),
                (
                    Kind::DialogOpened,
                    Hook,
                    "PermissionRequest Bash(cargo test)"
                ),
                (Kind::DialogClosed, Hook, "PostToolUse Bash(cargo test)"),
                (Kind::Working, Hook, "PostToolUse Bash(cargo test)"),
                (Kind::Working, File, "tool_result at line 4"),
                (
                    Kind::TurnEnded,
                    File,
                    "assistant stop_reason=end_turn at line 5"
                ),
                (Kind::TurnEnded, File, "turn_duration 67290ms at line 6"),
                (Kind::TurnEnded, Hook, "Stop hook"),
                (Kind::TurnFailed, File, "API error 429 rate_limit at line 7"),
            ]
        );
        assert_eq!(transcript.malformed(), 0);
    }

    #[test]
    fn a_line_cut_by_a_crash_is_read_once_completed_and_garbage_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let mut transcript = Transcript::new(Tail::new(path.clone()), observe);
        let whole = line(END_TURN);
        let (head, rest) = whole.split_at(40);
        fs::write(&path, [b"not json\n".as_slice(), head].concat()).unwrap();
        assert_eq!(transcript.poll().unwrap(), []);
        assert_eq!(transcript.malformed(), 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(rest).unwrap();
        file.write_all(b"\n").unwrap();
        let got = transcript.poll().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, Kind::TurnEnded);
        assert_eq!(transcript.malformed(), 1);
    }

    #[test]
    fn pre_trust_creates_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("config").join(".claude.json");
        let worktree = dir.path().join("wt");
        fs::create_dir(&worktree).unwrap();
        pre_trust(&state, &worktree).unwrap();
        let got: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
        let key = fs::canonicalize(&worktree)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            got,
            json!({"projects": {key: {"hasTrustDialogAccepted": true, "hasCompletedProjectOnboarding": true}}})
        );
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn pre_trust_keeps_every_other_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".claude.json");
        let worktree = dir.path().join("wt");
        fs::create_dir(&worktree).unwrap();
        let key = fs::canonicalize(&worktree)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let before = json!({
            "numStartups": 41,
            "bypassPermissionsModeAccepted": true,
            "oauthAccount": {"emailAddress": "dev@example.com"},
            "projects": {
                "/home/dev/other": {"hasTrustDialogAccepted": true, "allowedTools": ["Bash"]},
                key.clone(): {"allowedTools": [], "lastCost": 0.25},
            },
        });
        fs::write(&state, serde_json::to_vec(&before).unwrap()).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o640)).unwrap();
        pre_trust(&state, &worktree).unwrap();
        let mut want = before;
        want["projects"][&key]["hasTrustDialogAccepted"] = json!(true);
        want["projects"][&key]["hasCompletedProjectOnboarding"] = json!(true);
        let got: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
        assert_eq!(got, want);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
    }

    #[test]
    fn pre_trust_leaves_a_file_it_cannot_read_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".claude.json");
        fs::write(&state, b"{\"projects\": ").unwrap();
        let err = pre_trust(&state, dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(fs::read(&state).unwrap(), b"{\"projects\": ");
    }

    #[test]
    fn hooks_settings_cover_every_event_that_tells_about_the_turn() {
        let s = hooks_settings("ao hook claude");
        let hooks = s["hooks"].as_object().unwrap();
        assert_eq!(hooks.len(), HOOK_EVENTS.len());
        assert_eq!(
            s["hooks"]["PermissionRequest"][0]["hooks"][0]["command"],
            "ao hook claude PermissionRequest"
        );
    }
}
