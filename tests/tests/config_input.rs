//! Config input, through the real `ao` binary: ids that tmux or paths would
//! mangle, session prefixes two projects share, and configs sent straight to
//! the controller's API.

use std::path::PathBuf;
use std::time::Duration;

use ao_proto::dial::{self, ControllerAddr};
use ao_proto::pb;
use ao_tests::{eventually, Cli, Stack};

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
