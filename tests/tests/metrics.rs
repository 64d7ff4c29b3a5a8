//! `GET /metrics` of a real stack: it parses as OpenMetrics text (what
//! Prometheus scrapes), its figures are those `ao status --json` and `ao
//! worker ls --json` show, and off loopback it needs a viewer's token.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ao_tests::openmetrics::Exposition;
use ao_tests::{eventually, json_array, Cli, Stack};
use serde_json::Value;

/// `GET url` with `headers`: the status, the content type and the body.
fn get(url: &str, args: &[String]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code} %{content_type}", url])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    // The body ends with its own newline; `-w` adds one more before the status.
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    let (code, kind) = status.split_once(' ').unwrap_or((status, ""));
    let code = code.parse().expect("a status code");
    (code, kind.to_string(), body.to_string())
}

/// `/metrics` of `stack`, parsed.
fn scrape(stack: &Stack) -> Exposition {
    let (code, kind, body) = get(&format!("{}/metrics", stack.http_url()), &[]);
    assert_eq!(code, 200, "{body}");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    Exposition::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

type Counts = BTreeMap<Vec<String>, f64>;

/// Sessions by (project, status, activity) as `ao status --json` lists them.
fn status_counts(sessions: &[Value]) -> Counts {
    let mut counts = Counts::new();
    for s in sessions {
        let key = ["projectId", "status", "activity"]
            .map(|k| s[k].as_str().unwrap_or_default().to_string());
        *counts.entry(key.to_vec()).or_default() += 1.0;
    }
    counts
}

/// The same from `/metrics`.
fn metric_counts(m: &Exposition) -> Counts {
    m.samples("ao_sessions")
        .map(|s| {
            let key = ["project", "status", "activity"].map(|k| s.labels[k].clone());
            (key.to_vec(), s.value)
        })
        .collect()
}

#[test]
fn metrics_parse_and_match_status_for_sessions_in_several_states() {
    let stack = Stack::new();
    stack.up();
    let ready = stack.spawn(&["app", "M-1"]);
    let done = stack.spawn(&["app", "M-2", "--agent", "quitter"]);
    let asking = stack.spawn(&["app", "M-3", "--agent", "asker"]);
    let killed = stack.spawn(&["app", "M-4"]);
    stack.wait_field(&ready, "activity", "ready");
    stack.wait_field(&done, "status", "done");
    stack.wait_field(&asking, "activity", "waiting_input");
    stack.wait_field(&killed, "activity", "ready");
    stack.ao(&["session", "kill", &killed]).ok();
    stack.wait_field(&killed, "status", "killed");

    // A scrape between two equal listings (an agent may still move).
    let (listed, metrics) = eventually(
        "a scrape between equal listings",
        Duration::from_secs(20),
        || {
            let before = status_counts(&stack.sessions());
            let metrics = scrape(&stack);
            (status_counts(&stack.sessions()) == before).then_some((before, metrics))
        },
    );
    let statuses: std::collections::BTreeSet<_> = listed.keys().map(|k| k[1].clone()).collect();
    assert!(statuses.len() >= 3, "several states: {listed:?}");
    assert_eq!(metric_counts(&metrics), listed);
    let active = |activity: &str| {
        listed
            .iter()
            .filter(|(k, _)| k[2] == activity)
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    assert_eq!(active("waiting_input"), 1.0, "{listed:?}");

    // Workers as `ao worker ls --json` shows them, from their heartbeats.
    let workers = json_array(&stack.ao(&["worker", "ls", "--json"]).ok());
    assert!(!workers.is_empty());
    let mut by_state = Counts::new();
    for w in &workers {
        let state = w["state"].as_str().unwrap().to_string();
        *by_state.entry(vec![state]).or_default() += 1.0;
        let id = [("worker", w["id"].as_str().unwrap())];
        let max = w["maxSessions"].as_f64().unwrap();
        assert_eq!(metrics.value("ao_worker_max_sessions", &id), Some(max));
        let live = w["sessions"].as_f64().unwrap();
        assert_eq!(metrics.value("ao_worker_sessions", &id), Some(live));
        let memory = metrics.value("ao_worker_memory_available_bytes", &id);
        assert!(memory.is_some_and(|m| m > 0.0), "{memory:?}");
    }
    let shown: Counts = metrics
        .samples("ao_workers")
        .map(|s| (vec![s.labels["state"].clone()], s.value))
        .collect();
    assert_eq!(shown, by_state);

    // What happened since the start: four spawns, at least the three that
    // came to run were placed, writes were timed, one controller leads.
    assert_eq!(
        metrics.value("ao_spawns_total", &[("project", "app")]),
        Some(4.0)
    );
    let placed = metrics.value("ao_placement_seconds_count", &[]).unwrap();
    assert!((3.0..=4.0).contains(&placed), "{placed}");
    let writes = metrics.value("ao_store_write_seconds_count", &[]).unwrap();
    assert!(writes >= 8.0, "{writes}");
    assert_eq!(metrics.value("ao_controller_leader", &[]), Some(1.0));
    assert_eq!(metrics.value("ao_attach_viewers", &[]), Some(0.0));
}

#[test]
fn off_loopback_the_listener_is_https_only_and_metrics_need_a_viewer_token() {
    let stack = Stack::new();
    stack.ao(&["controller", "init"]).ok();
    // Every address of the machine: not loopback, so HTTPS with a
    // certificate from the cluster CA, and a token for the metrics.
    stack.up_with(&[("AO_HTTP", "0.0.0.0:0".into())]);
    let base = stack.http_url();
    assert!(base.starts_with("https://"), "{base}");
    let (_, port) = base.rsplit_once(':').expect("a port");
    let url = format!("{base}/metrics");
    let ca = stack.home.join("pki/ca.crt").display().to_string();
    let tls = |headers: &[String]| {
        let mut args = vec!["--cacert".to_string(), ca.clone()];
        for h in headers {
            args.extend(["-H".to_string(), h.clone()]);
        }
        args
    };

    // Plain text is answered with a sentence, never served.
    let (code, _, body) = get(&format!("http://127.0.0.1:{port}/metrics"), &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("HTTPS only"), "{body}");
    assert!(!body.contains("ao_sessions"), "{body}");
    let token = stack
        .ao(&[
            "token",
            "create",
            "--role",
            "viewer",
            "--name",
            "prometheus",
        ])
        .ok()
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .expect("a TOKEN= line")
        .to_string();

    let (code, _, body) = get(&url, &tls(&[]));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("ao token create --role viewer"), "{body}");
    let (code, _, body) = get(&url, &tls(&["Authorization: Bearer ao_nope_nope".into()]));
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("ao_sessions"), "{body}");

    let (code, _, body) = get(&url, &tls(&[format!("Authorization: Bearer {token}")]));
    assert_eq!(code, 200, "{body}");
    let metrics = Exposition::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(metrics.value("ao_controller_leader", &[]), Some(1.0));

    // A dashboard link is an https one, and its cookies are never sent in
    // plain text.
    let link = stack.ao(&["dashboard", "--role", "viewer"]).ok().stdout;
    let link = link.trim();
    assert!(
        link.starts_with(&format!("{base}/login?token=ao_")),
        "{link}"
    );
    let mut args = tls(&[]);
    args.extend(["-D".into(), "-".into()]);
    let (code, _, head) = get(link, &args);
    assert_eq!(code, 303, "{head}");
    let cookies: Vec<_> = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect();
    assert_eq!(cookies.len(), 2, "{head}");
    for cookie in cookies {
        assert!(cookie.trim_end().ends_with("; Secure"), "{cookie}");
    }
}

/// Off loopback without a certificate to serve: the stack does not start,
/// and says why and what to do.
#[test]
fn off_loopback_without_a_certificate_the_stack_says_what_to_do() {
    let stack = Stack::new();
    let mut up = stack.command(&["up", "-d"]);
    up.env("AO_HTTP", "0.0.0.0:0");
    let out = up.output().expect("ao runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("serves HTTPS only"), "{text}");
    assert!(text.contains("ao controller init"), "{text}");
}
