//! Config input, through the real `ao` binary: ids that tmux or paths would
//! mangle, session prefixes two projects share, files too large or too deep
//! to parse, and configs sent straight to the controller's API.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use ao_tests::{eventually, Cli, Run, Stack, CONFIG};

/// The stack's config with `projects` (indented entries) added to its own.
fn config_with_projects(stack: &Stack, projects: &str) -> String {
    let text = std::fs::read_to_string(&stack.config).unwrap();
    text.replacen("projects:\n", &format!("projects:\n{projects}"), 1)
}

/// Writes `text` next to the stack's config as `name`.
fn write_config(stack: &Stack, name: &str, text: &str) -> PathBuf {
    let path = stack.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn projects_sharing_a_session_prefix_are_refused_naming_both() {
    let stack = Stack::new();
    stack.up();
    let text = config_with_projects(
        &stack,
        "  web:\n    path: ./repo\n    agent: bot\n    sessionPrefix: app\n",
    );
    let file = write_config(&stack, "dup.yaml", &text);
    let run = stack.ao(&["apply", "-f", &file.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for part in [
        "dup.yaml:5",
        "projects.web.sessionPrefix",
        "session prefix `app` of project `web` (line 5) is also that of project `app` (line 6)",
    ] {
        assert!(run.stderr.contains(part), "{part:?} in {}", run.stderr);
    }
    // The config in force is the one before.
    assert_eq!(stack.spawn(&["app", "INT-1"]), "app-1");
    let refused = stack.ao(&["spawn", "web", "INT-2"]);
    assert!(
        refused.stderr.contains("unknown project `web`"),
        "{}",
        refused.stderr
    );
}

/// tmux renames `.` in session names to `_`: a session named after
/// `lib.core` would never be found by its own id again.
#[test]
fn a_project_id_with_a_dot_spawns_takes_input_and_is_killed_cleanly() {
    let stack = Stack::new();
    let text = config_with_projects(&stack, "  lib.core:\n    path: ./repo\n    agent: bot\n");
    std::fs::write(&stack.config, text).unwrap();
    stack.up();
    let id = stack.spawn(&["lib.core", "LIB-1"]);
    assert_eq!(id, "lib-core-1");
    stack.wait_log(&id, "got: You are working on issue LIB-1");
    assert_eq!(stack.session(&id)["projectId"], "lib.core");
    stack.ao(&["send", &id, "hello dot"]).ok();
    stack.wait_log(&id, "got: hello dot");
    assert!(stack.tmux_sessions().contains(&id));

    stack.ao(&["session", "kill", &id]).ok();
    eventually("the tmux session is gone", Duration::from_secs(20), || {
        (!stack.tmux_sessions().contains(&id)).then_some(())
    });
    assert_eq!(stack.tmux_sessions(), Vec::<String>::new());
}

/// The controller checks what it is sent as the CLI checks a file.
#[test]
fn invalid_configs_sent_to_the_controller_api_are_refused_by_key() {
    let stack = Stack::new();
    stack.up();
    let status_before = stack.ao(&["status", "--json"]).ok().stdout;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = dial::connect(&ControllerAddr::Unix(stack.home.join("ao.sock")), None)
            .await
            .expect("controller socket");
        let mut client = pb::controller_client::ControllerClient::new(channel);
        let projects_before = client.info(pb::InfoRequest {}).await.unwrap().into_inner().projects;
        // Just over the controller's limit of 2 MiB of JSON.
        let oversized = format!(
            r#"{{"orchestratorRules": "{}"}}"#,
            "x".repeat(2 * 1024 * 1024)
        );
        let cases = [
            (
                r#"{"projects": {"../x": {"path": "/tmp"}}}"#.to_string(),
                "projects.../x: project id `../x` must start with a letter or digit",
            ),
            (
                r#"{"projects": {"a": {"path": "/r", "sessionPrefix": "x"},
                                 "b": {"path": "/r", "sessionPrefix": "x"}}}"#
                    .to_string(),
                "projects.b.sessionPrefix: session prefix `x` of project `b` is also that of project `a`",
            ),
            (
                r#"{"projects": {"app": {"path": "/r", "sessionPrefix": "a:b"}}}"#.to_string(),
                "projects.app.sessionPrefix: `a:b` must start with a letter or digit and contain only",
            ),
            (
                r#"{"projects": {"app": {"path": "repo"}}}"#.to_string(),
                "projects.app.path: `repo` is not an absolute path",
            ),
            (oversized, "more than the limit of 2097152 bytes"),
        ];
        for (config_json, fragment) in cases {
            let refused = client
                .apply_config(pb::ApplyConfigRequest {
                    config_json,
                    source: "api-test".into(),
                })
                .await
                .expect_err(fragment);
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
            assert!(refused.message().contains(fragment), "{fragment:?} in {}", refused.message());
            assert!(refused.message().contains("api-test"), "{}", refused.message());
        }
        let projects_after = client.info(pb::InfoRequest {}).await.unwrap().into_inner().projects;
        assert_eq!(projects_after, projects_before);
    });
    assert_eq!(stack.ao(&["status", "--json"]).ok().stdout, status_before);
    assert_eq!(stack.spawn(&["app", "INT-1"]), "app-1");
}

/// A child process killed (by its pid) if the test leaves before it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ao <args>` and waits for it, failing the test (and killing the
/// child) if it has not finished within `limit`.
fn run_within(stack: &Stack, args: &[&str], limit: Duration) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Running(
        stack
            .command(args)
            .stdout(Stdio::from(File::create(out.path()).unwrap()))
            .stderr(Stdio::from(File::create(err.path()).unwrap()))
            .spawn()
            .unwrap(),
    );
    let status = eventually(&format!("ao {args:?} ends"), limit, || {
        child.0.try_wait().unwrap()
    });
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
    }
}

/// Nested flow collections once took the YAML parser minutes (quadratic in
/// the depth); they are refused before it runs.
#[test]
fn deeply_nested_configs_are_refused_before_parsing() {
    let stack = Stack::new();
    for (name, unit) in [("brackets.yaml", "["), ("maps.yaml", "{a: [")] {
        let text = unit.repeat(400 * 1024 / unit.len());
        let file = write_config(&stack, name, &text);
        let run = run_within(
            &stack,
            &["apply", "-f", &file.display().to_string()],
            Duration::from_secs(60),
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "{name}:1: nested more than 64 collections deep (the limit)"
            )),
            "{}",
            run.stderr
        );
    }
}

/// A 50 MB config once became a 268 MB store.
#[test]
fn an_oversized_config_is_refused_naming_the_limit() {
    let stack = Stack::new();
    let padding = "# padding\n".repeat(110 * 1024);
    let text = format!("{CONFIG}{padding}")
        .replace("{agents}", &ao_tests::agents_dir().display().to_string());
    std::fs::write(&stack.config, &text).unwrap();
    let limit = "more than the limit of 1048576 bytes (1 MiB)";

    let run = stack.ao(&["apply", "-f", &stack.config.display().to_string()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let expected = format!(
        "{}: the config is {} bytes, {limit}",
        stack.config.display(),
        text.len()
    );
    assert!(
        run.stderr.contains(&expected),
        "{expected:?} in {}",
        run.stderr
    );

    let run = stack.ao(&["up", "-d"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&expected),
        "{expected:?} in {}",
        run.stderr
    );
}
