//! Credentials for people and automation through the real stack: each
//! role's allowed and refused calls through the CLI, revocation, and
//! `POST /webhook/spawn` as the original docs' curl calls it.

use std::path::{Path, PathBuf};
use std::process::Command;

use ao_tests::{Cli, Run, Stack};
use serde_json::Value;

/// `ao token create --role <role> --name <name>`: the credential file and
/// the token it printed.
fn credential(stack: &Stack, role: &str, name: &str) -> (PathBuf, String) {
    let out = stack.dir.path().join(format!("{name}.json"));
    let run = stack
        .ao(&[
            "token",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
    let token = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .unwrap_or_else(|| panic!("no TOKEN= in {:?}", run.stdout))
        .to_string();
    assert!(
        run.stderr.contains(&format!("role {role}")),
        "{}",
        run.stderr
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        file["token"],
        token.as_str(),
        "the file holds the printed token"
    );
    (out, token)
}

/// `ao <args>` with the credential file `file` (AO_CREDENTIALS).
fn ao_as(stack: &Stack, file: &Path, args: &[&str]) -> Run {
    stack
        .command(args)
        .env("AO_CREDENTIALS", file)
        .output()
        .expect("ao runs")
        .into()
}

fn refused(run: &Run, role: &str) {
    assert_ne!(run.code, 0, "allowed: {}", run.stdout);
    assert!(
        run.stderr.contains(&format!("role {role}) cannot")),
        "{}",
        run.stderr
    );
}

#[test]
fn each_role_makes_its_calls_and_is_refused_the_others() {
    let stack = Stack::new();
    stack.up();
    let (viewer, _) = credential(&stack, "viewer", "dash");
    let (spawner, _) = credential(&stack, "spawner", "gitlab-ci");
    let (operator, operator_token) = credential(&stack, "operator", "orch");

    // spawner: spawn and status; nothing that reads output or acts.
    let run = ao_as(&stack, &spawner, &["spawn", "app", "R-1"]).ok();
    let id = run.session_id();
    let listed = ao_as(&stack, &spawner, &["status", "--json"]).ok();
    assert!(listed.stdout.contains(&id), "{}", listed.stdout);
    refused(&ao_as(&stack, &spawner, &["logs", &id]), "spawner");
    refused(&ao_as(&stack, &spawner, &["send", &id, "hi"]), "spawner");
    refused(&ao_as(&stack, &spawner, &["events", "--json"]), "spawner");

    // viewer: status, logs, events; no spawn, send, kill, apply.
    ao_as(&stack, &viewer, &["status"]).ok();
    ao_as(&stack, &viewer, &["session", "show", &id]).ok();
    ao_as(&stack, &viewer, &["events", "--json"]).ok();
    ao_as(&stack, &viewer, &["logs", &id]).ok();
    refused(&ao_as(&stack, &viewer, &["spawn", "app", "R-2"]), "viewer");
    let typing = ao_as(&stack, &viewer, &["attach", &id]);
    refused(&typing, "viewer");
    assert!(typing.stderr.contains("--read-only"), "{}", typing.stderr);
    refused(&ao_as(&stack, &viewer, &["session", "kill", &id]), "viewer");
    let config = stack.config.to_str().unwrap();
    refused(&ao_as(&stack, &viewer, &["apply", "-f", config]), "viewer");

    // operator: the sessions API; not the config, workers or credentials.
    stack.wait_field(&id, "activity", "ready");
    ao_as(&stack, &operator, &["send", &id, "hello"]).ok();
    refused(
        &ao_as(&stack, &operator, &["apply", "-f", config]),
        "operator",
    );
    refused(
        &ao_as(&stack, &operator, &["token", "create", "--role", "admin"]),
        "operator",
    );
    refused(
        &ao_as(&stack, &operator, &["worker", "drain", "vm"]),
        "operator",
    );
    ao_as(&stack, &viewer, &["worker", "ls"]).ok();
    // The same role by AO_TOKEN, as the orchestrator agent holds it.
    let run: Run = stack
        .command(&["session", "kill", &id])
        .env("AO_TOKEN", &operator_token)
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 0, "{}", run.stderr);
    // ...and never as a join token: `--token-file` is what a join reads.
    let missing = stack.dir.path().join("no-such-token");
    let run: Run = stack
        .command(&[
            "worker",
            "join",
            "https://127.0.0.1:1",
            "--token-file",
            missing.to_str().unwrap(),
            "--ca-hash",
            &format!("sha256:{}", "0".repeat(64)),
        ])
        .env("AO_TOKEN", &operator_token)
        .output()
        .unwrap()
        .into();
    assert!(
        run.stderr.contains("cannot read the token file"),
        "{}",
        run.stderr
    );

    // The socket's owner (admin) lists and revokes; the revoked file stops working.
    let listed: Vec<Value> =
        serde_json::from_str(&stack.ao(&["token", "ls", "--json"]).ok().stdout).unwrap();
    let names: Vec<&str> = listed.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["dash", "gitlab-ci", "orch"]);
    assert!(listed.iter().all(|t| t["kind"] == "credential"));
    stack.ao(&["token", "rm", "dash"]).ok();
    let run = ao_as(&stack, &viewer, &["status"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("not a valid ao credential"),
        "{}",
        run.stderr
    );
    // A mistyped role is refused by the CLI before anything is made.
    let run = stack.ao(&["token", "create", "--role", "root"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("root"), "{}", run.stderr);
}

/// `curl -X POST <url> …` as the original docs run it: the status and the JSON body.
fn curl(url: &str, headers: &[String], body: &str) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args(["-s", "-X", "POST", "-w", "\n%{http_code}", url])
        .args(["-H", "Content-Type: application/json"]);
    for h in headers {
        c.args(["-H", h]);
    }
    c.args(["--data-binary", "@-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().expect("curl runs");
    let mut stdin = child.stdin.take().unwrap();
    // A body too big to be read whole is cut off by the server: curl may see the pipe close.
    let _ = std::io::Write::write_all(&mut stdin, body.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').expect("a status line");
    let value = serde_json::from_str(json).unwrap_or(Value::String(json.to_string()));
    (code.trim().parse().expect("a status"), value)
}

#[test]
fn webhook_spawn_takes_a_spawner_token_and_answers_one_session_per_issue() {
    let stack = Stack::new();
    stack.up();
    let url = format!("{}/webhook/spawn", stack.http_url());
    let (_, viewer) = credential(&stack, "viewer", "dash");
    let (_, spawner) = credential(&stack, "spawner", "ci");
    let bearer = |t: &str| vec![format!("Authorization: Bearer {t}")];
    let body = r#"{"project": "app", "issue": "123"}"#;

    let (code, answer) = curl(&url, &[], body);
    assert_eq!(code, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("ao token create --role spawner"),
        "{answer}"
    );
    let (code, answer) = curl(&url, &bearer("ao_nope_nope"), body);
    assert_eq!(code, 401, "{answer}");
    let (code, answer) = curl(&url, &bearer(&viewer), body);
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("role viewer"),
        "{answer}"
    );
    assert!(stack.sessions().is_empty(), "refused calls create nothing");

    let (code, first) = curl(&url, &bearer(&spawner), body);
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["success"], true);
    assert_eq!(first["message"], "Spawned agent for app:123");
    let id = first["session"].as_str().unwrap().to_string();
    // Again, with the issue as a number: the live session, not a second one.
    let (code, again) = curl(&url, &bearer(&spawner), r#"{"project":"app","issue":123}"#);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["session"], id.as_str());
    assert_eq!(again["existing"], true);

    let big = format!(r#"{{"project":"app","issue":"{}"}}"#, "9".repeat(1 << 20));
    for (body, want) in [
        (r#"{"project": "app", "#, 400),
        (r#"{"project": "nope", "issue": "1"}"#, 404),
        (r#"{"project": "app"}"#, 400),
        (big.as_str(), 413),
    ] {
        let (code, answer) = curl(&url, &bearer(&spawner), body);
        assert_eq!(code, want, "{answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.ends_with(|c: char| c.is_alphanumeric() || ")}.".contains(c)) && error.len() > 20,
            "a sentence: {answer}"
        );
    }
    let sessions = stack.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["id"], id.as_str());

    // No secret in what the stack wrote.
    let log = std::fs::read_to_string(stack.home.join("ao.log")).unwrap();
    let events = std::fs::read_to_string(stack.home.join("events.jsonl")).unwrap();
    for token in [&viewer, &spawner] {
        let secret = token.rsplit('_').next().unwrap();
        assert!(!log.contains(secret), "a secret in ao.log");
        assert!(!events.contains(secret), "a secret in events.jsonl");
    }
    assert!(
        log.contains("POST /webhook/spawn refused"),
        "refusals are logged"
    );
}

/// The original docs' GitLab job (`ao spawn my-project $CI_ISSUE_IID` on a
/// runner): another machine's CLI with only `AO_CONTROLLER` and the
/// credential file, over the controller's TLS port, with no certificate.
#[test]
fn a_ci_job_spawns_over_tls_with_only_the_credential_file() {
    let (stack, url) = Stack::up_tcp();
    let (file, _) = credential(&stack, "spawner", "gitlab-ci");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["controller"], url.as_str(), "{written}");
    assert!(written["caPem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // The runner: a home of its own, nothing of the controller's but the file.
    let runner = stack.dir.path().join("runner");
    let as_runner = |args: &[&str], credentials: &Path| -> Run {
        stack
            .command(args)
            .env("AO_HOME", &runner)
            .env("AO_CONTROLLER", &url)
            .env("AO_CREDENTIALS", credentials)
            .output()
            .unwrap()
            .into()
    };
    let run = as_runner(&["spawn", "app", "77"], &file);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = run.session_id();
    assert_eq!(stack.session(&id)["issueId"], "77");
    refused(&as_runner(&["events", "--json"], &file), "spawner");
    // A token beside a certificate directory (as on a worker: the
    // orchestrator's AO_TOKEN with the worker's credential): the token
    // speaks, the directory only vouches for the controller.
    let (_, viewer) = credential(&stack, "viewer", "dash");
    let admin_dir = stack.home.join("pki/admin");
    let run: Run = stack
        .command(&["spawn", "app", "78"])
        .env("AO_HOME", &runner)
        .env("AO_CONTROLLER", &url)
        .env("AO_CREDENTIALS", &admin_dir)
        .env("AO_TOKEN", &viewer)
        .output()
        .unwrap()
        .into();
    refused(&run, "viewer");
    // Without it: no certificate, no token, no call.
    let empty = stack.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = as_runner(&["status"], &empty);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("credential"), "{}", run.stderr);
}
