//! Hook payloads. Claude Code, Codex and Gemini CLI run a command hook
//! with one JSON object on its stdin, in one shape: `session_id`,
//! `transcript_path`, `cwd`, `hook_event_name` and the event's own fields
//! (AGENTS.md §2, §3, §4); Gemini names its events its own way. A hook is
//! the only record of a pending permission dialog: no agent writes one to
//! its transcript.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::{Kind, Observation, Source};

/// Tool events, whose matcher selects tools: every tool here.
const TOOL_EVENTS: &[&str] = &[
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "BeforeTool",
    "AfterTool",
];

/// What one hook call says. A payload that is not a JSON object, and the
/// events that tell nothing about the turn (`SessionEnd`: the process's
/// liveness decides the exit), give nothing.
pub(crate) fn observe_hook(event: &str, payload: &[u8]) -> Vec<Observation> {
    let Ok(Value::Object(p)) = serde_json::from_slice::<Value>(payload) else {
        return Vec::new();
    };
    let text = |key: &str| p.get(key).and_then(Value::as_str);
    let tool = || tool_summary(&p);
    let one = |kind, detail: String| vec![Observation::new(None, kind, Source::Hook, &detail)];
    match event {
        "SessionStart" => one(
            Kind::SessionStarted {
                agent_session_id: text("session_id").map(str::to_owned),
                transcript: text("transcript_path").map(PathBuf::from),
            },
            format!("SessionStart {}", text("source").unwrap_or("startup")),
        ),
        // Gemini's `BeforeAgent` is its `UserPromptSubmit`.
        "UserPromptSubmit" | "BeforeAgent" => one(
            Kind::PromptSubmitted,
            format!("{event} {}", text("prompt").unwrap_or_default()),
        ),
        "PreToolUse" | "BeforeTool" => one(Kind::Working, format!("{event} {}", tool())),
        "PermissionRequest" => one(Kind::DialogOpened, format!("PermissionRequest {}", tool())),
        "PostToolUse" | "PostToolUseFailure" | "AfterTool" => {
            let detail = format!("{event} {}", tool());
            let mut out = one(Kind::DialogClosed, detail.clone());
            out.extend(one(Kind::Working, detail));
            out
        }
        "Notification" => match text("notification_type") {
            Some(kind @ ("permission_prompt" | "elicitation_dialog")) => one(
                Kind::DialogOpened,
                format!(
                    "Notification {kind}: {}",
                    text("message").unwrap_or_default()
                ),
            ),
            // Gemini's one notification: a tool waits for its approval.
            Some("ToolPermission") => {
                let subject = ["command", "filePath", "fileName", "toolName"]
                    .iter()
                    .find_map(|key| p.get("details")?.get(key)?.as_str());
                let message = text("message").unwrap_or_default();
                let detail = match subject {
                    Some(subject) => format!("{message} ({})", super::short(subject, 80)),
                    None => message.to_owned(),
                };
                one(
                    Kind::DialogOpened,
                    format!("Notification ToolPermission: {detail}"),
                )
            }
            // `idle_prompt` only repeats what the end of the turn said.
            _ => Vec::new(),
        },
        "Stop" => one(Kind::TurnEnded, "Stop hook".to_owned()),
        // Gemini's end of a turn; it carries no error (an interrupted turn
        // runs none, and whether a failed one does is not known).
        "AfterAgent" => one(Kind::TurnEnded, "AfterAgent hook".to_owned()),
        "StopFailure" => {
            let error = text("error").unwrap_or("unknown");
            let details = text("error_details").unwrap_or_default();
            one(
                Kind::TurnFailed,
                format!("StopFailure {error} {details}")
                    .trim_end()
                    .to_owned(),
            )
        }
        _ => Vec::new(),
    }
}

/// `Bash(cargo test)`: the tool and the argument a human would recognise.
fn tool_summary(payload: &Map<String, Value>) -> String {
    let name = payload
        .get("tool_name")
        .and_then(Value::as_str)
        .unwrap_or("tool");
    let input = payload.get("tool_input");
    let argument = ["command", "file_path", "path", "url", "pattern", "query"]
        .iter()
        .find_map(|key| input?.get(key)?.as_str());
    match argument {
        Some(argument) => format!("{name}({})", super::short(argument, 80)),
        None => name.to_owned(),
    }
}

/// The `{"hooks":{…}}` settings object that makes the agent run
/// `<hook_command> <Event>` as a command hook on each of `events`, with
/// `timeout` in the agent's own unit (Claude: seconds; Gemini:
/// milliseconds).
pub(crate) fn settings(hook_command: &str, events: &[&str], timeout: u64) -> Value {
    let hooks: Map<String, Value> = events
        .iter()
        .map(|&event| {
            let mut group = json!({
                "hooks": [{
                    "type": "command",
                    "command": format!("{hook_command} {event}"),
                    "timeout": timeout,
                }],
            });
            if TOOL_EVENTS.contains(&event) {
                group["matcher"] = json!("*");
            }
            (event.to_owned(), json!([group]))
        })
        .collect();
    json!({ "hooks": hooks })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The common fields of every payload, then the event's own.
    fn payload(event: &str, fields: Value) -> Vec<u8> {
        let mut p = json!({
            "session_id": "ec96c0de-0000-4000-8000-000000000001",
            "transcript_path": "/home/dev/.claude/projects/-home-dev--ao-wt-w7/ec96c0de-0000-4000-8000-000000000001.jsonl",
            "cwd": "/home/dev/.ao/wt/w7",
            "permission_mode": "default",
            "hook_event_name": event,
        });
        for (k, v) in fields.as_object().unwrap() {
            p[k] = v.clone();
        }
        serde_json::to_vec(&p).unwrap()
    }

    fn kinds(event: &str, fields: Value) -> Vec<(Kind, String)> {
        observe_hook(event, &payload(event, fields))
            .into_iter()
            .map(|o| {
                assert_eq!(o.source, Source::Hook);
                (o.kind, o.detail)
            })
            .collect()
    }

    #[test]
    fn session_start_names_the_session_and_its_transcript() {
        let got = kinds(
            "SessionStart",
            json!({"source": "resume", "model": "claude-sonnet-4-6"}),
        );
        assert_eq!(
            got,
            [(
                Kind::SessionStarted {
                    agent_session_id: Some("ec96c0de-0000-4000-8000-000000000001".into()),
                    transcript: Some(PathBuf::from("/home/dev/.claude/projects/-home-dev--ao-wt-w7/ec96c0de-0000-4000-8000-000000000001.jsonl")),
                },
                "SessionStart resume".into()
            )]
        );
    }

    #[test]
    fn a_permission_request_opens_a_dialog_that_post_tool_use_closes() {
        let input = json!({"tool_name": "Bash", "tool_input": {"command": "cargo test", "description": "Run tests"}, "tool_use_id": "toolu_01"});
        assert_eq!(
            kinds("PermissionRequest", input.clone()),
            [(
                Kind::DialogOpened,
                "PermissionRequest Bash(cargo test)".into()
            )]
        );
        assert_eq!(
            kinds("PreToolUse", input.clone()),
            [(Kind::Working, "PreToolUse Bash(cargo test)".into())]
        );
        let mut done = input;
        done["tool_response"] = json!({"stdout": "ok"});
        assert_eq!(
            kinds("PostToolUse", done.clone()),
            [
                (Kind::DialogClosed, "PostToolUse Bash(cargo test)".into()),
                (Kind::Working, "PostToolUse Bash(cargo test)".into())
            ]
        );
        assert_eq!(kinds("PostToolUseFailure", done)[0].0, Kind::DialogClosed);
        let edit = json!({"tool_name": "Edit", "tool_input": {"file_path": "src/main.rs"}});
        assert_eq!(
            kinds("PermissionRequest", edit)[0].1,
            "PermissionRequest Edit(src/main.rs)"
        );
    }

    #[test]
    fn notifications_open_a_dialog_only_for_prompts_and_questions() {
        let prompt = json!({"message": "Claude needs your permission to use Bash", "notification_type": "permission_prompt"});
        assert_eq!(
            kinds("Notification", prompt),
            [(
                Kind::DialogOpened,
                "Notification permission_prompt: Claude needs your permission to use Bash".into()
            )]
        );
        let question = json!({"message": "Pick one", "notification_type": "elicitation_dialog"});
        assert_eq!(kinds("Notification", question)[0].0, Kind::DialogOpened);
        let idle = json!({"message": "Claude is waiting for your input", "notification_type": "idle_prompt"});
        assert_eq!(kinds("Notification", idle), []);
    }

    #[test]
    fn turns_open_end_and_fail() {
        assert_eq!(
            kinds(
                "UserPromptSubmit",
                json!({"prompt": "Add a --json flag\nto status"})
            ),
            [(
                Kind::PromptSubmitted,
                "UserPromptSubmit Add a --json flag".into()
            )]
        );
        assert_eq!(
            kinds(
                "Stop",
                json!({"stop_hook_active": false, "last_assistant_message": "Done."})
            ),
            [(Kind::TurnEnded, "Stop hook".into())]
        );
        assert_eq!(
            kinds(
                "StopFailure",
                json!({"error": "rate_limit", "error_details": "429 Too Many Requests"})
            ),
            [(
                Kind::TurnFailed,
                "StopFailure rate_limit 429 Too Many Requests".into()
            )]
        );
        assert_eq!(kinds("SessionEnd", json!({"reason": "exit"})), []);
        assert_eq!(kinds("PreCompact", json!({})), []);
    }

    #[test]
    fn gemini_names_its_turn_tool_and_approval_events_its_own_way() {
        let shell =
            json!({"tool_name": "run_shell_command", "tool_input": {"command": "cargo test"}});
        assert_eq!(
            kinds("BeforeAgent", json!({"prompt": "run the tool please"})),
            [(
                Kind::PromptSubmitted,
                "BeforeAgent run the tool please".into()
            )]
        );
        assert_eq!(
            kinds("BeforeTool", shell.clone()),
            [(
                Kind::Working,
                "BeforeTool run_shell_command(cargo test)".into()
            )]
        );
        let approval = json!({
            "notification_type": "ToolPermission",
            "message": "Tool Shell requires execution",
            "details": {"type": "exec", "title": "Confirm Shell Command", "command": "cargo test", "rootCommand": "cargo"},
        });
        assert_eq!(
            kinds("Notification", approval),
            [(
                Kind::DialogOpened,
                "Notification ToolPermission: Tool Shell requires execution (cargo test)".into()
            )]
        );
        let mut done = shell;
        done["tool_response"] = json!({"llmContent": "ok"});
        assert_eq!(kinds("AfterTool", done)[0].0, Kind::DialogClosed);
        assert_eq!(
            kinds(
                "AfterAgent",
                json!({"prompt": "p", "prompt_response": "Done.", "stop_hook_active": false})
            ),
            [(Kind::TurnEnded, "AfterAgent hook".into())]
        );
    }

    #[test]
    fn a_payload_that_is_not_an_object_says_nothing() {
        assert!(observe_hook("Stop", b"{\"session_id\":").is_empty());
        assert!(observe_hook("Stop", b"[1]").is_empty());
        assert!(observe_hook("Stop", b"").is_empty());
    }

    #[test]
    fn settings_run_the_hook_command_with_the_event_name() {
        let s = settings("/usr/bin/ao hook claude", &["Stop", "PermissionRequest"], 5);
        assert_eq!(
            s,
            json!({"hooks": {
                "Stop": [{"hooks": [{"type": "command", "command": "/usr/bin/ao hook claude Stop", "timeout": 5}]}],
                "PermissionRequest": [{"matcher": "*", "hooks": [{"type": "command", "command": "/usr/bin/ao hook claude PermissionRequest", "timeout": 5}]}],
            }})
        );
    }
}
