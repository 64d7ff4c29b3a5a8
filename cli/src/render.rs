//! How sessions, events and workers look: JSON with the names of `docs/reference.md`
//! for scripts, aligned tables for people.

use ao_proto::pb;
use serde_json::{json, Value};

fn opt(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// Statuses of sessions whose agent is gone for good.
pub fn is_ended(status: &str) -> bool {
    ao_controller::model::SessionStatus::parse(status).is_some_and(|s| s.is_ended())
}

pub fn session_value(s: &pb::Session) -> Value {
    json!({
        "id": s.id,
        "projectId": s.project_id,
        "issueId": opt(&s.issue_id),
        "status": s.status,
        "activity": opt(&s.activity),
        "branch": s.branch,
        "worktree": opt(&s.worktree),
        "worker": opt(&s.worker),
        "agent": s.agent,
        "runtime": s.runtime,
        "pr": opt(&s.pr),
        "prNumber": if s.pr_number == 0 { Value::Null } else { json!(s.pr_number) },
        "ciStatus": s.ci_status,
        "reviewDecision": s.review_decision,
        "createdAt": s.created_at,
        "lastActivityAt": s.last_activity_at,
        "summary": opt(&s.summary),
        "epoch": s.epoch,
        "exitCode": s.exit_code,
        "attachCommand": opt(&s.attach_command),
        "activitySource": opt(&s.activity_source),
        "activitySince": opt(&s.activity_since),
        "activityDetail": opt(&s.activity_detail),
        "agentSessionId": opt(&s.agent_session_id),
        // A controller from before roles sends none: its sessions are workers'.
        "role": if s.role.is_empty() { "worker" } else { s.role.as_str() },
    })
}

/// One session with its recent activity history (`ao session show --json`).
pub fn session_detail_value(s: &pb::Session) -> Value {
    let mut v = session_value(s);
    let history: Vec<Value> = s
        .activity_history
        .iter()
        .map(|c| {
            json!({
                "at": c.at,
                "activity": opt(&c.activity),
                "source": opt(&c.source),
                "detail": opt(&c.detail),
            })
        })
        .collect();
    v["activityHistory"] = Value::Array(history);
    v
}

/// One session for people: its fields, then how its activity is known and
/// what it was lately.
pub fn session_detail(s: &pb::Session) -> String {
    let mut out = String::new();
    let exit = s.exit_code.map(|c| c.to_string()).unwrap_or_default();
    let pr = if s.pr.is_empty() {
        String::new()
    } else {
        format!(
            "{} (#{}) ci={} review={}",
            s.pr, s.pr_number, s.ci_status, s.review_decision
        )
    };
    for (k, v) in [
        ("session", &s.id),
        ("project", &s.project_id),
        ("issue", &s.issue_id),
        ("status", &s.status),
        ("activity", &s.activity),
        ("  source", &s.activity_source),
        ("  since", &s.activity_since),
        ("  detail", &s.activity_detail),
        ("agent", &s.agent),
        ("agent session", &s.agent_session_id),
        ("branch", &s.branch),
        ("worktree", &s.worktree),
        ("worker", &s.worker),
        ("pr", &pr),
        ("summary", &s.summary),
        ("exit code", &exit),
        ("created", &s.created_at),
        ("attach", &s.attach_command),
    ] {
        out.push_str(&format!(
            "{:<14} {}\n",
            format!("{k}:"),
            printable(&dash(v))
        ));
    }
    if !s.activity_history.is_empty() {
        out.push_str("\nrecent activity:\n");
        let rows = s
            .activity_history
            .iter()
            .rev()
            .map(|c| {
                vec![
                    age(&c.at),
                    dash(&c.activity),
                    dash(&c.source),
                    c.detail.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&["AGO", "ACTIVITY", "SOURCE", "DETAIL"], rows));
    }
    out
}

pub fn sessions_json(sessions: &[pb::Session]) -> String {
    let values: Vec<Value> = sessions.iter().map(session_value).collect();
    serde_json::to_string_pretty(&values).expect("json")
}

/// The widest a table cell gets before it is cut with `…`: one long
/// summary or label must not push every other column off the screen.
const MAX_CELL: usize = 60;

/// `s` safe to print on a terminal: every C0 control, ESC, DEL and C1
/// control is shown escaped (`\x1b`, `\u{9b}`), so a name chosen by
/// someone else (an issue id, an agent's summary) cannot move the cursor,
/// retitle the terminal or hide text.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c) {
            n @ (0..=0x1f | 0x7f) => out.push_str(&format!("\\x{n:02x}")),
            n @ 0x80..=0x9f => out.push_str(&format!("\\u{{{n:x}}}")),
            _ => out.push(c),
        }
    }
    out
}

/// `s` made printable and cut to at most `max` characters, the last one `…`.
fn cell(s: &str, max: usize) -> String {
    let s = printable(s);
    if s.chars().count() <= max {
        return s;
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Left-aligned columns separated by two spaces; cells are made printable
/// and cut to [`MAX_CELL`].
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.iter().map(|c| cell(c, MAX_CELL)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// "3m", "2h" since an RFC 3339 time.
fn age(ts: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return "-".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

pub fn sessions_table(sessions: &[pb::Session]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".into();
    }
    let rows = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.project_id.clone(),
                dash(&s.issue_id),
                s.status.clone(),
                dash(&s.activity),
                s.branch.clone(),
                dash(&s.worker),
                age(&s.created_at),
                age(&s.last_activity_at),
                s.summary.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SESSION", "PROJECT", "ISSUE", "STATUS", "ACTIVITY", "BRANCH", "WORKER", "AGE", "LAST",
            "SUMMARY",
        ],
        rows,
    )
}

pub fn event_json(e: &pb::Event) -> String {
    let mut v = json!({
        "id": e.id,
        "timestamp": e.timestamp,
        "type": e.r#type,
        "priority": e.priority,
        "projectId": opt(&e.project_id),
        "sessionId": opt(&e.session_id),
    });
    let obj = v.as_object_mut().expect("object");
    if e.pr_number != 0 {
        obj.insert("prNumber".into(), e.pr_number.into());
    }
    for (k, val) in [
        ("issueId", &e.issue_id),
        ("workerId", &e.worker_id),
        ("reaction", &e.reaction),
        ("action", &e.action),
        ("message", &e.message),
    ] {
        if !val.is_empty() {
            obj.insert(k.into(), Value::String(val.clone()));
        }
    }
    if let Ok(data) = serde_json::from_str::<Value>(&e.data_json) {
        obj.insert("data".into(), data);
    }
    v.to_string()
}

pub fn event_line(e: &pb::Event) -> String {
    let mut subject = [&e.session_id, &e.worker_id, &e.project_id]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default();
    if !e.issue_id.is_empty() {
        subject = format!("{subject} ({})", e.issue_id);
    }
    format!(
        "{}  {:<20}  {:<10}  {}",
        cell(&e.timestamp, MAX_CELL),
        cell(&e.r#type, MAX_CELL),
        cell(&subject, MAX_CELL),
        // The message is the line's point: shown whole, but printable.
        printable(&e.message)
    )
    .trim_end()
    .to_string()
}

/// `ao session cleanup --json`: an array of what was done per session.
pub fn cleanup_json(results: &[pb::CleanupResult]) -> String {
    let values: Vec<Value> = results
        .iter()
        .map(|r| {
            json!({
                "session": r.session_id,
                "action": r.action,
                "worktree": opt(&r.worktree),
                "branch": r.branch,
                "branchDeleted": r.branch_deleted,
                "reason": r.reason,
                "detail": r.detail,
                "worker": opt(&r.worker),
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("json")
}

/// `ao session cleanup`: one line per session, `<id> <action>: <detail>`.
pub fn cleanup_lines(results: &[pb::CleanupResult]) -> String {
    results
        .iter()
        .map(|r| {
            format!(
                "{} {}: {}\n",
                printable(&r.session_id),
                r.action,
                printable(&r.detail)
            )
        })
        .collect()
}

pub fn workers_json(workers: &[pb::Worker]) -> String {
    let values: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "id": w.id,
                "hostname": w.hostname,
                "state": w.state,
                "labels": w.labels,
                "maxSessions": w.max_sessions,
                "sessions": w.sessions,
                "connectedAt": opt(&w.connected_at),
                "lastSeenAt": opt(&w.last_seen_at),
                "tmuxSocket": opt(&w.tmux_socket),
                "reason": opt(&w.reason),
                "memAvailableBytes": w.mem_available_bytes,
                "memoryReserveBytes": w.memory_reserve_bytes,
                "draining": w.draining,
                "version": opt(&w.version),
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("json")
}

pub fn workers_table(workers: &[pb::Worker]) -> String {
    let rows = workers
        .iter()
        .map(|w| {
            let mut labels: Vec<String> =
                w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let capacity = if w.max_sessions == 0 {
                format!("{}/-", w.sessions)
            } else {
                format!("{}/{}", w.sessions, w.max_sessions)
            };
            let memory = if w.memory_reserve_bytes == 0 {
                gib(w.mem_available_bytes)
            } else {
                format!(
                    "{} (keep {})",
                    gib(w.mem_available_bytes),
                    gib(w.memory_reserve_bytes)
                )
            };
            vec![
                w.id.clone(),
                w.state.clone(),
                capacity,
                memory,
                labels.join(","),
                w.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WORKER", "STATE", "SESSIONS", "MEM FREE", "LABELS", "REASON",
        ],
        rows,
    )
}

pub fn schedules_json(schedules: &[pb::Schedule]) -> String {
    let started = |list: &[pb::ScheduleIssue]| -> Vec<Value> {
        let started = list.iter();
        started
            .map(|i| json!({"issue": i.issue, "session": i.session}))
            .collect()
    };
    let values: Vec<Value> = schedules
        .iter()
        .map(|s| {
            let last = s.last.as_ref().map(|r| {
                json!({
                    "tick": r.tick,
                    "state": r.state,
                    "spawned": started(&r.spawned),
                    "skipped": started(&r.skipped),
                    "failed": r.failed.iter()
                        .map(|i| json!({"issue": i.issue, "error": i.error}))
                        .collect::<Vec<_>>(),
                    "error": opt(&r.error),
                })
            });
            json!({
                "name": s.name,
                "project": s.project,
                "cron": s.cron,
                "timezone": timezone(s),
                "query": s.query,
                "max": s.max,
                "nextRun": opt(&s.next_run),
                "lastRun": last,
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("json")
}

fn timezone(s: &pb::Schedule) -> &str {
    if s.timezone.is_empty() {
        "UTC"
    } else {
        &s.timezone
    }
}

/// What a schedule's last run did, in a few words.
fn last_result(run: &pb::ScheduleRun) -> String {
    match run.state.as_str() {
        "ran" => {
            let ids: Vec<&str> = run.spawned.iter().map(|i| i.session.as_str()).collect();
            let mut out = format!("{} spawned", run.spawned.len());
            if !ids.is_empty() {
                out.push_str(&format!(" ({})", ids.join(", ")));
            }
            out.push_str(&format!(", {} skipped", run.skipped.len()));
            if !run.failed.is_empty() {
                out.push_str(&format!(", {} failed", run.failed.len()));
            }
            out
        }
        "failed" => format!("failed: {}", run.error),
        other => other.to_string(),
    }
}

pub fn schedules_table(schedules: &[pb::Schedule]) -> String {
    let rows = schedules
        .iter()
        .map(|s| {
            let (tick, result) = match &s.last {
                Some(r) => (r.tick.clone(), last_result(r)),
                None => ("-".into(), "never ran".into()),
            };
            vec![
                s.name.clone(),
                s.project.clone(),
                s.cron.clone(),
                timezone(s).to_string(),
                s.next_run.clone(),
                tick,
                result,
            ]
        })
        .collect();
    table(
        &[
            "SCHEDULE",
            "PROJECT",
            "CRON",
            "TIMEZONE",
            "NEXT RUN",
            "LAST TICK",
            "LAST RESULT",
        ],
        rows,
    )
}

/// What `ao token ls` shows: join tokens and credentials, one list.
pub fn tokens_json(tokens: &pb::ListTokensResponse) -> String {
    let joins = tokens.tokens.iter().map(|t| {
        json!({
            "id": t.id,
            "kind": "join",
            "createdAt": t.created_at,
            "expiresAt": t.expires_at,
            "expired": t.expired,
        })
    });
    let credentials = tokens.credentials.iter().map(|c| {
        json!({
            "id": c.id,
            "kind": "credential",
            "name": c.name,
            "role": c.role,
            "createdAt": c.created_at,
            "createdBy": c.created_by,
            "expiresAt": opt(&c.expires_at),
            "expired": c.expired,
        })
    });
    let values: Vec<Value> = joins.chain(credentials).collect();
    serde_json::to_string_pretty(&values).expect("json")
}

pub fn tokens_table(tokens: &pb::ListTokensResponse) -> String {
    let state = |expired: bool| if expired { "expired" } else { "usable" }.to_string();
    let joins = tokens.tokens.iter().map(|t| {
        vec![
            t.id.clone(),
            "join".into(),
            "-".into(),
            "worker".into(),
            t.created_at.clone(),
            t.expires_at.clone(),
            state(t.expired),
        ]
    });
    let credentials = tokens.credentials.iter().map(|c| {
        let expires = if c.expires_at.is_empty() {
            "never".to_string()
        } else {
            c.expires_at.clone()
        };
        vec![
            c.id.clone(),
            "credential".into(),
            c.name.clone(),
            c.role.clone(),
            c.created_at.clone(),
            expires,
            state(c.expired),
        ]
    });
    table(
        &["ID", "KIND", "NAME", "ROLE", "CREATED", "EXPIRES", "STATE"],
        joins.chain(credentials).collect(),
    )
}

pub fn admins_json(admins: &[pb::AdminCert]) -> String {
    let values: Vec<Value> = admins
        .iter()
        .map(|a| {
            json!({
                "name": a.name,
                "serial": a.serial,
                "issuedAt": a.issued_at,
                "expiresAt": a.expires_at,
                "revokedAt": opt(&a.revoked_at),
            })
        })
        .collect();
    serde_json::to_string_pretty(&values).expect("json")
}

pub fn admins_table(admins: &[pb::AdminCert]) -> String {
    let rows = admins
        .iter()
        .map(|a| {
            let state = if a.revoked_at.is_empty() {
                "valid".to_string()
            } else {
                format!("revoked {}", a.revoked_at)
            };
            vec![
                a.name.clone(),
                a.serial.clone(),
                a.issued_at.clone(),
                a.expires_at.clone(),
                state,
            ]
        })
        .collect();
    table(&["NAME", "SERIAL", "ISSUED", "EXPIRES", "STATE"], rows)
}

fn gib(bytes: u64) -> String {
    format!("{:.1}G", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_json_uses_contract_names_and_nulls() {
        let s = pb::Session {
            id: "app-1".into(),
            status: "working".into(),
            ..Default::default()
        };
        let v = session_value(&s);
        assert_eq!(v["id"], "app-1");
        assert_eq!(v["status"], "working");
        assert!(v["activity"].is_null() && v["pr"].is_null() && v["prNumber"].is_null());
        assert_eq!(v["role"], "worker");
    }

    #[test]
    fn controls_are_escaped_and_long_cells_cut() {
        assert_eq!(printable("X\x1b]0;pwned\x07"), "X\\x1b]0;pwned\\x07");
        assert_eq!(printable("a\u{9b}b\u{7f}\n"), "a\\u{9b}b\\x7f\\x0a");
        assert_eq!(printable("naïve ✓"), "naïve ✓");
        assert_eq!(cell(&"x".repeat(61), 60), format!("{}…", "x".repeat(59)));
        assert_eq!(cell(&"x".repeat(60), 60), "x".repeat(60));
        let t = table(&["A"], vec![vec!["\x1b[2J".into()]]);
        assert_eq!(t, "A\n\\x1b[2J\n");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], vec![vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }
}

#[test]
fn schedules_show_their_next_run_and_last_result() {
    let issue = |issue: &str, session: &str| pb::ScheduleIssue {
        issue: issue.into(),
        session: session.into(),
        error: String::new(),
    };
    let s = pb::Schedule {
        name: "morning".into(),
        project: "app".into(),
        cron: "0 9 * * 1-5".into(),
        max: 5,
        next_run: "2026-01-12T08:00:00Z".into(),
        last: Some(pb::ScheduleRun {
            tick: "2026-01-09T08:00:00Z".into(),
            state: "ran".into(),
            spawned: vec![issue("1", "app-1"), issue("3", "app-2")],
            skipped: vec![issue("2", "app-0")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = schedules_table(std::slice::from_ref(&s));
    assert!(t.contains("2 spawned (app-1, app-2), 1 skipped"), "{t}");
    assert!(
        t.contains("UTC") && t.contains("2026-01-12T08:00:00Z"),
        "{t}"
    );
    let v: Value = serde_json::from_str(&schedules_json(&[s])).unwrap();
    assert_eq!(v[0]["lastRun"]["spawned"][1]["session"], "app-2");
    assert_eq!(v[0]["timezone"], "UTC");
    assert!(v[0]["lastRun"]["error"].is_null());
    let never = schedules_table(&[pb::Schedule::default()]);
    assert!(never.contains("never ran"), "{never}");
}
