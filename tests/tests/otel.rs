//! OpenTelemetry traces: one trace for an `ao spawn`, whose spans come from
//! the CLI, the controller and a worker in a process of its own, parented
//! across the processes; and nothing at all when no `OTEL_*` asks for it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ao_tests::otlp::{OtlpReceiver, ReceivedSpan};
use ao_tests::{eventually, json_array, Cli, Stack};

/// A worker of the stack in a process of its own, with a home (and tmux
/// socket) of its own; stopped by its pid and its socket.
struct SecondWorker {
    child: Child,
    home: PathBuf,
}

impl SecondWorker {
    fn start(stack: &Stack, id: &str, env: &[(&str, &str)]) -> Self {
        let home = stack.dir.path().join(format!("home-{id}"));
        let controller = format!("unix://{}", stack.home.join("ao.sock").display());
        let log = std::fs::File::create(stack.dir.path().join(format!("{id}.log"))).unwrap();
        let child = stack
            .command(&["worker", "run", "--controller", &controller, "--id", id])
            .env("AO_HOME", &home)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("ao worker run starts");
        Self { child, home }
    }
}

impl Drop for SecondWorker {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(self.home.join("tmux.sock"))
            .arg("kill-server")
            .output();
    }
}

fn worker_state(stack: &Stack, id: &str) -> Option<String> {
    json_array(&stack.ao(&["worker", "ls", "--json"]).ok())
        .into_iter()
        .find(|w| w["id"] == id)
        .map(|w| w["state"].as_str().unwrap_or_default().to_string())
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name} in {spans:#?}");
    found[0]
}

fn child_of(span: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        span.parent_span_id, parent.span_id,
        "{} ({}) must be a child of {} ({})",
        span.name, span.service, parent.name, parent.service
    );
}

#[test]
fn a_spawn_is_one_trace_across_cli_controller_and_worker() {
    let receiver = OtlpReceiver::start();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let stack = Stack::new();
    let owned: Vec<(&str, std::ffi::OsString)> =
        otel.iter().map(|(k, v)| (*k, (*v).into())).collect();
    stack.up_with(&owned);
    let local = json_array(&stack.ao(&["worker", "ls", "--json"]).ok())[0]["id"]
        .as_str()
        .expect("the local worker's id")
        .to_string();
    let worker = SecondWorker::start(&stack, "w2", &otel);
    eventually("w2 is ready", Duration::from_secs(20), || {
        (worker_state(&stack, "w2").as_deref() == Some("ready")).then_some(())
    });
    // The spawn can only go to the worker in the other process.
    stack.ao(&["worker", "drain", &local]).ok();

    let spawned = stack
        .command(&["spawn", "app", "--prompt", "traced work"])
        .envs(otel)
        .output()
        .expect("ao spawn runs");
    let id = ao_tests::Run::from(spawned).ok().session_id();
    assert_eq!(stack.session(&id)["worker"], "w2");

    // The worker's last span ends when the prompt is confirmed.
    let spans = eventually("the spawn's spans", Duration::from_secs(30), || {
        let spans = receiver.spans();
        let root = spans.iter().find(|s| s.name == "ao spawn")?;
        let trace: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|s| s.trace_id == root.trace_id)
            .cloned()
            .collect();
        trace
            .iter()
            .any(|s| s.name == "ao.prompt.deliver")
            .then_some(trace)
    });

    let cli = one(&spans, "ao spawn");
    assert_eq!(cli.service, "ao-cli");
    assert_eq!(cli.parent_span_id, "", "the CLI's span is the root");
    let call = one(&spans, "ao.v1.Controller/Spawn");
    let spawn = one(&spans, "ao.spawn");
    let place = one(&spans, "ao.place");
    let commit = one(&spans, "ao.store.commit");
    for s in [call, spawn, place, commit] {
        assert_eq!(s.service, "ao-controller", "{s:?}");
    }
    child_of(call, cli);
    child_of(spawn, call);
    child_of(place, spawn);
    child_of(commit, spawn);
    assert!(spawn.attributes.contains(&format!("ao.session.id={id}")));
    assert!(spawn.attributes.contains(&"ao.project.id=app".to_string()));
    assert!(place.attributes.contains(&"ao.worker.id=w2".to_string()));

    let setup = one(&spans, "ao.session.setup");
    let worktree = one(&spans, "ao.worktree");
    let start = one(&spans, "ao.agent.start");
    let prompt = one(&spans, "ao.prompt.deliver");
    for s in [setup, worktree, start, prompt] {
        assert_eq!(s.service, "ao-worker", "{s:?}");
        assert_eq!(s.pid, i64::from(worker.child.id()), "{s:?}");
    }
    child_of(setup, spawn);
    child_of(worktree, setup);
    child_of(start, setup);
    child_of(prompt, setup);
    // Three processes, each saying who it is.
    assert_ne!(cli.pid, call.pid);
    assert_ne!(call.pid, setup.pid);
    assert!(spans.iter().all(|s| !s.host.is_empty()));
}

/// The port an OTLP exporter dials when no endpoint is given.
const DEFAULT_OTLP: &str = "127.0.0.1:4317";

#[test]
fn without_otel_variables_nothing_is_exported_and_nothing_dialed() {
    let listener = std::net::TcpListener::bind(DEFAULT_OTLP)
        .expect("this test listens on the default OTLP port 4317: free it");
    listener.set_nonblocking(true).unwrap();
    let stack = Stack::new();
    // Variables that say how to export, none that asks for it.
    let quiet = [
        ("OTEL_SERVICE_NAME", "ao-test"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
    ];
    let owned: Vec<(&str, std::ffi::OsString)> =
        quiet.iter().map(|(k, v)| (*k, (*v).into())).collect();
    stack.up_with(&owned);
    let spawned = stack
        .command(&["spawn", "app", "--prompt", "untraced work"])
        .envs(quiet)
        .output()
        .expect("ao spawn runs");
    let id = ao_tests::Run::from(spawned).ok().session_id();
    stack.wait_log(&id, "untraced work");
    // Returns once the stack's process has exited (and would have
    // flushed its spans); the CLI's have exited already.
    stack.ao(&["down"]).ok();
    // A connection attempt would sit in the backlog, accepted or not.
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("ao connected to {DEFAULT_OTLP} from {from} with no OTEL_* set"),
        Err(e) => panic!("accept on {DEFAULT_OTLP}: {e}"),
    }
}

/// A notification is a trace of its own, tied to its session by attributes.
#[test]
fn a_notification_is_a_trace_of_its_own_naming_its_session() {
    let receiver = OtlpReceiver::start();
    let stack = Stack::new();
    let text = std::fs::read_to_string(&stack.config).unwrap();
    let pager = "\nnotifiers:\n  pager: {plugin: command, command: 'cat > /dev/null'}\n\
                 notificationRouting:\n  urgent: [pager]\n  info: []\n";
    std::fs::write(&stack.config, format!("{text}{pager}")).unwrap();
    stack.up_with(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            receiver.endpoint.clone().into(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
    ]);
    // Its agent exits at once: the agent-exited reaction notifies (urgent).
    let id = stack.spawn(&["app", "N-1", "--agent", "quitter"]);
    let attribute = format!("ao.session.id={id}");
    let span = eventually("the notification's span", Duration::from_secs(30), || {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "ao.notify" && s.attributes.contains(&attribute))
    });
    assert_eq!(span.parent_span_id, "", "a root: {span:?}");
    assert_eq!(span.service, "ao-controller");
    assert!(
        span.attributes
            .contains(&"ao.notifier.id=pager".to_string()),
        "{span:?}"
    );
}
