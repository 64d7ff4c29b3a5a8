//! The agent's hooks, written down: `ao hook` appends what a hook got on
//! its standard input as one JSON line of the session's hook log, and the
//! worker tails that log. A file, not a socket, so a hook that fires while
//! the worker restarts is read when it is back, and a hook never waits.

use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The most of a hook's input that is kept (a prompt or a tool's output
/// can be large; the state needs only the start).
pub const MAX_HOOK_INPUT: u64 = 256 * 1024;

/// One line of the hook log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookLine {
    /// The agent's event name (`PermissionRequest`, `Stop`, …).
    pub event: String,
    /// When the hook ran, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The hook's input: JSON when it was JSON, else the text.
    pub payload: serde_json::Value,
}

/// Appends one line for `event` with what `input` holds, in one write, so
/// lines from hooks running at once never interleave.
///
/// # Errors
/// The log cannot be opened or written.
pub fn append(log: &Path, event: &str, input: impl Read) -> io::Result<()> {
    let mut raw = Vec::new();
    input.take(MAX_HOOK_INPUT).read_to_end(&mut raw)?;
    let payload = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned()));
    let line = HookLine {
        event: event.to_string(),
        at_ms: crate::activity::unix_ms(std::time::SystemTime::now()),
        payload,
    };
    let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut file = ao_proto::home::private_file()
        .create(true)
        .append(true)
        .open(log)?;
    file.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hook_is_one_line_with_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.jsonl");
        append(
            &log,
            "Stop",
            &br#"{"session_id":"s1","stop_hook_active":false}"#[..],
        )
        .unwrap();
        append(&log, "Notification", &b"not json"[..]).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<HookLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].event, "Stop");
        assert_eq!(lines[0].payload["session_id"], "s1");
        assert_eq!(lines[1].payload, serde_json::json!("not json"));
    }

    #[test]
    fn a_huge_input_is_cut_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.jsonl");
        let big = vec![b'x'; 1024 * 1024];
        append(&log, "PostToolUse", &big[..]).unwrap();
        let line: HookLine =
            serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim_end()).unwrap();
        assert_eq!(
            line.payload.as_str().unwrap().len(),
            usize::try_from(MAX_HOOK_INPUT).unwrap()
        );
    }
}
