//! The CLI as a safe tool: what it prints cannot drive the terminal, secrets
//! stay out of argv, errors say what is wrong, and `AO_HOME` stays private.

use std::time::Duration;

use ao_tests::{eventually, Cli, Run, Stack};
use expectrl::session::OsSession;
use expectrl::Expect;
use serde_json::Value;

/// Text that would retitle the terminal if printed raw.
const HOSTILE: &str = "X\x1b]0;pwned\x07";

#[test]
fn control_characters_are_escaped_in_tables_and_exact_in_json() {
    let stack = Stack::new();
    // Issue ids with control characters are refused at spawn; what a
    // worker reports is not: here a postCreate command (YAML's \e and \a)
    // that fails, and whose text becomes the session's summary and the
    // event's message.
    let config = std::fs::read_to_string(&stack.config).unwrap().replacen(
        "projects:\n",
        r#"projects:
  hostile:
    path: ./repo
    agent: bot
    postCreate:
      - "X\e]0;pwned\a"
"#,
        1,
    );
    std::fs::write(&stack.config, config).unwrap();
    stack.up();
    let run = stack.ao(&["spawn", "hostile", "H-1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let id = run.session_id();
    let s = stack.session(&id);
    assert!(s["summary"].as_str().unwrap().contains(HOSTILE), "{s}");

    let table = stack.ao(&["status", "--all"]).ok().stdout;
    assert!(table.contains("X\\x1b]0;pwned\\x07"), "{table:?}");
    assert!(
        !table.contains('\x1b') && !table.contains('\x07'),
        "{table:?}"
    );

    let events = stack.ao(&["events"]).ok().stdout;
    assert!(events.contains("X\\x1b]0;pwned\\x07"), "{events:?}");
    assert!(
        !events.contains('\x1b') && !events.contains('\x07'),
        "{events:?}"
    );
    let errored = stack
        .cli_events()
        .into_iter()
        .find(|e| e["type"] == "session.errored" && e["sessionId"] == id.as_str())
        .expect("a session.errored event");
    assert!(
        errored["message"].as_str().unwrap().contains(HOSTILE),
        "{errored}"
    );
}

/// A stack whose controller also serves mTLS on a free 127.0.0.1 port
/// (after `ao controller init`); its `https://` URL.
/// `ao token create`'s printed command, split into its arguments.
fn join_command(stack: &Stack) -> Vec<String> {
    let printed = stack.ao(&["token", "create"]).ok().stdout;
    printed.split_whitespace().map(str::to_string).collect()
}

/// The value after `flag` in `args`.
fn value_of<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args.iter().position(|a| a == flag).expect(flag);
    &args[at + 1]
}

/// `ao worker join` from another `AO_HOME` on this machine, with the token
/// given by `token_args` (and `stdin`).
fn join_with(
    stack: &Stack,
    url: &str,
    ca_hash: &str,
    id: &str,
    token_args: &[&str],
    stdin: &str,
) -> Run {
    use std::io::Write;
    let home = stack.dir.path().join(format!("home-{id}"));
    let mut args = vec!["worker", "join", url, "--ca-hash", ca_hash, "--id", id];
    args.extend_from_slice(token_args);
    let mut child = stack
        .command(&args)
        .env("AO_HOME", &home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ao runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("stdin written");
    drop(input);
    child.wait_with_output().expect("ao ends").into()
}

#[test]
fn the_join_token_can_come_from_a_file_or_stdin() {
    let (stack, url) = Stack::up_tcp();

    let by_file = join_command(&stack);
    let file = stack.dir.path().join("token");
    std::fs::write(&file, format!("{}\n", value_of(&by_file, "--token"))).unwrap();
    let file = file.display().to_string();
    let ca_hash = value_of(&by_file, "--ca-hash");
    let run = join_with(
        &stack,
        &url,
        ca_hash,
        "w-file",
        &["--token-file", &file],
        "",
    )
    .ok();
    assert!(
        run.stdout.contains("joined as worker w-file"),
        "{}",
        run.stdout
    );

    let by_stdin = join_command(&stack);
    let token = format!("  {}\n", value_of(&by_stdin, "--token"));
    let run = join_with(&stack, &url, ca_hash, "w-stdin", &["--token", "-"], &token).ok();
    assert!(
        run.stdout.contains("joined as worker w-stdin"),
        "{}",
        run.stdout
    );

    // Nothing to read is named as such, not sent as an empty token.
    let empty = join_with(&stack, &url, ca_hash, "w-empty", &["--token", "-"], "");
    assert_eq!(empty.code, 1);
    assert!(
        empty.stderr.contains("no join token in stdin"),
        "{}",
        empty.stderr
    );
    let missing = join_with(
        &stack,
        &url,
        ca_hash,
        "w-none",
        &["--token-file", "/nonexistent/t"],
        "",
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("cannot read the token file /nonexistent/t"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_socket_of_another_user_is_reported_as_permission_denied() {
    let stack = Stack::new();
    stack.up();
    let socket = stack.home.join("ao.sock");
    let run: Run = if nix::unistd::geteuid().is_root() {
        // Root passes every permission check: ask as nobody instead.
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(ao_tests::ao_bin())
            .arg("status")
            .env("AO_HOME", &stack.home)
            .env_remove("AO_CONTROLLER");
        cmd.output().expect("setpriv runs").into()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::Permissions::from_mode(m);
        std::fs::set_permissions(&stack.home, mode(0o000)).unwrap();
        let run = stack.ao(&["status"]);
        std::fs::set_permissions(&stack.home, mode(0o700)).unwrap();
        run
    };
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("permission denied on {}", socket.display())),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("is ao running"), "{}", run.stderr);
}

#[test]
fn down_refused_by_the_role_check_fails_with_the_refusal() {
    let (stack, url) = Stack::up_tcp();
    let join = join_command(&stack);
    let token = value_of(&join, "--token");
    let ca_hash = value_of(&join, "--ca-hash");
    join_with(&stack, &url, ca_hash, "w1", &["--token", token], "").ok();
    let worker_creds = stack.dir.path().join("home-w1/pki/worker");
    let worker_creds = worker_creds.display().to_string();
    let down = stack.ao(&["down", "--controller", &url, "--credentials", &worker_creds]);
    assert_eq!(down.code, 1, "{}", down.stderr);
    assert!(
        down.stderr
            .contains("a worker certificate cannot make this call"),
        "{}",
        down.stderr
    );
    assert!(!down.stderr.contains("not running"), "{}", down.stderr);
    // The stack is still up.
    stack.ao(&["status"]).ok();
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

#[test]
fn a_shared_home_is_refused_and_left_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::new();
    // Like /tmp: everyone may write, the sticky bit set.
    std::fs::create_dir(&stack.home).unwrap();
    std::fs::set_permissions(&stack.home, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for args in [&["up", "-d"][..], &["controller", "init"]] {
        let run = stack.ao(args);
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("is writable by other users (mode 1777)"),
            "{}",
            run.stderr
        );
        assert_eq!(mode_of(&stack.home), 0o1777);
    }
    assert_eq!(std::fs::read_dir(&stack.home).unwrap().count(), 0);
}

#[test]
fn what_ao_makes_in_a_fresh_home_is_owner_only_whatever_the_umask() {
    let stack = Stack::new();
    // With umask 000 every mode below comes from ao itself.
    let up = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" up -d"])
        .arg(ao_tests::ao_bin())
        .current_dir(stack.dir.path())
        .env("AO_HOME", &stack.home)
        .env_remove("AO_CONTROLLER")
        .env_remove("AO_CONFIG_PATH")
        .env_remove("AO_STORE")
        .output()
        .expect("ao runs");
    Run::from(up).ok();
    let id = stack.spawn(&["app", "MODES-1"]);
    stack.wait_log(&id, "got: You are working on issue MODES-1");
    let home = &stack.home;
    for dir in [
        home.clone(),
        home.join("sessions"),
        home.join("sessions").join(&id),
        home.join("worktrees"),
        home.join("worktrees/app"),
        home.join("worker"),
        home.join("worker/sessions"),
    ] {
        assert_eq!(mode_of(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        home.join("ao.log"),
        home.join("ao.lock"),
        home.join("events.jsonl"),
        home.join("worker/sessions").join(format!("{id}.json")),
        home.join("sessions").join(&id).join("prompt.md"),
    ] {
        assert_eq!(mode_of(&file), 0o600, "{}", file.display());
    }
    if stack.etcd.is_none() {
        assert_eq!(mode_of(&home.join("store.redb")), 0o600);
    }
}

#[test]
fn spawn_of_an_agent_that_exits_at_once_says_so_and_fails_on_an_error_code() {
    let stack = Stack::new();
    let mut config = std::fs::read_to_string(&stack.config).unwrap();
    config.push_str("  three:\n    command: \"sh -c 'echo bad flag; exit 3'\"\n");
    std::fs::write(&stack.config, config).unwrap();
    stack.up();

    let run = stack.ao(&["spawn", "app", "E-3", "--agent", "three"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let id = run.session_id();
    assert!(
        run.stderr
            .contains(&format!("session {id} started; exited with code 3")),
        "{}",
        run.stderr
    );
    assert_eq!(stack.session(&id)["exitCode"], 3);

    // Done at once with code 0 is said, and is no failure: the agent may
    // have had nothing to do.
    let run = stack
        .ao(&["spawn", "app", "E-0", "--agent", "quitter"])
        .ok();
    assert!(
        run.stderr.contains("started; exited at once with code 0"),
        "{}",
        run.stderr
    );

    // An agent that waits for work is reported as started.
    let run = stack.ao(&["spawn", "app", "E-ok"]).ok();
    assert!(!run.stderr.contains("exited"), "{}", run.stderr);
}

#[test]
fn an_admin_credential_is_personal_and_revocable() {
    let (stack, url) = Stack::up_tcp();
    let out = stack.dir.path().join("ann-credential");
    let out_arg = out.display().to_string();
    let issued = stack
        .ao(&["admin", "issue", "ann", "--ttl", "30d", "--out", &out_arg])
        .ok();
    assert_eq!(issued.stdout.trim(), out_arg);
    let as_ann = |args: &[&str]| {
        let mut all = vec![
            "--controller",
            url.as_str(),
            "--credentials",
            out_arg.as_str(),
        ];
        all.extend_from_slice(args);
        stack.ao(&all)
    };
    as_ann(&["status"]).ok();

    // The credential `ao controller init` made is recorded beside it.
    let listed = ao_tests::json_array(&stack.ao(&["admin", "ls", "--json"]).ok());
    let names: Vec<&str> = listed.iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listed:?}");
    assert!(
        names.contains(&"ann") && names.contains(&"admin"),
        "{listed:?}"
    );

    let revoked = stack.ao(&["admin", "revoke", "ann"]).ok();
    assert!(
        revoked
            .stderr
            .contains("revoked the admin certificate of ann"),
        "{}",
        revoked.stderr
    );
    let refused = as_ann(&["status"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("the certificate of admin ann")
            && refused.stderr.contains("was revoked"),
        "{}",
        refused.stderr
    );
    // Others keep their access: the init credential still works over TCP.
    stack.ao(&["--controller", &url, "status"]).ok();
    let listed = ao_tests::json_array(&stack.ao(&["admin", "ls", "--json"]).ok());
    let ann = listed.iter().find(|a| a["name"] == "ann").unwrap();
    assert!(ann["revokedAt"].is_string(), "{ann}");

    // Nothing left to revoke is said so.
    let again = stack.ao(&["admin", "revoke", "ann"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("no admin certificate named `ann`"),
        "{}",
        again.stderr
    );
}

/// `ao <args>` in a pseudo-terminal as a client whose `$USER` is `user`;
/// the shell prints `EXIT=<code>` after it.
fn in_pty(stack: &Stack, args: &[&str], user: &str) -> OsSession {
    let script = format!(
        "{} {}; echo \"EXIT=$?\"",
        ao_tests::ao_bin().display(),
        args.join(" ")
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env("AO_HOME", &stack.home)
        .env("USER", user)
        .env("TERM", "xterm-256color");
    let mut term = expectrl::Session::spawn(cmd).expect("spawn in a pty");
    term.set_expect_timeout(Some(Duration::from_secs(20)));
    term
}

/// `ao <args> attach --read-only <id>` as a client whose `$USER` claims to
/// be mallory; detaches once the screen shows.
fn attach_as_mallory(stack: &Stack, args: &[&str], id: &str) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["attach", "--read-only", id]);
    let mut term = in_pty(stack, &all, "mallory");
    term.expect("started").unwrap();
    term.send("\x1c").unwrap();
    term.expect("EXIT=0").unwrap();
}

/// The `session.attached` and `session.detached` events naming `who`.
fn attach_events(stack: &Stack, who: &str) -> (Value, Value) {
    let find = |kind: &str| {
        eventually(&format!("{kind} by {who}"), Duration::from_secs(10), || {
            stack
                .events()
                .into_iter()
                .find(|e| e["type"] == kind && e["data"]["who"] == who)
        })
    };
    (find("session.attached"), find("session.detached"))
}

#[test]
fn attach_events_name_the_verified_caller_not_its_user_variable() {
    let (stack, url) = Stack::up_tcp();
    let id = stack.spawn(&["app", "A-1", "--agent", "shell", "--prompt", "echo started"]);
    stack.wait_log(&id, "started");

    // On the local socket: the peer's user, as the kernel tells it.
    attach_as_mallory(&stack, &[], &id);
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .expect("a user name")
        .name;
    let local = format!("local:{me}");
    let (attached, detached) = attach_events(&stack, &local);
    for e in [&attached, &detached] {
        assert!(
            e["data"]["userHint"]
                .as_str()
                .unwrap()
                .starts_with("mallory@"),
            "{e}"
        );
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{local} (says mallory@")),
            "{e}"
        );
    }

    // Over TCP: the admin certificate's name.
    let creds = stack.dir.path().join("ann");
    let creds = creds.display().to_string();
    stack.ao(&["admin", "issue", "ann", "--out", &creds]).ok();
    attach_as_mallory(
        &stack,
        &["--controller", &url, "--credentials", &creds],
        &id,
    );
    let (attached, _) = attach_events(&stack, "ann");
    assert_eq!(attached["data"]["mode"], "read-only");
}

/// The pid of the `ao` that `term`'s shell runs.
fn ao_pid(term: &OsSession) -> nix::unistd::Pid {
    let shell = term.get_process().pid().to_string();
    eventually("the ao process", Duration::from_secs(5), || {
        let out = std::process::Command::new("pgrep")
            .args(["-P", &shell])
            .output()
            .ok()?;
        let pid = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        Some(nix::unistd::Pid::from_raw(pid))
    })
}

#[test]
fn a_reconnecting_writer_does_not_take_back_a_keyboard_taken_meanwhile() {
    use nix::sys::signal::{kill, Signal};
    let stack = Stack::new();
    let pid = stack.up();
    let id = stack.spawn(&["app", "K-1", "--agent", "shell", "--prompt", "echo started"]);
    stack.wait_log(&id, "started");
    let mut first = in_pty(&stack, &["attach", &id], "first");
    first.expect("started").unwrap();

    // The stack dies; while the first writer is away (held still), a
    // second one takes the keyboard of the restarted stack.
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    first.expect("reconnecting").unwrap();
    let away = ao_pid(&first);
    kill(away, Signal::SIGSTOP).unwrap();
    stack.up();
    let mut second = in_pty(&stack, &["attach", "--force", &id], "second");
    second.expect("started").unwrap();
    kill(away, Signal::SIGCONT).unwrap();

    // The first is told who has it and leaves; the second keeps typing.
    first.expect("holds the keyboard").unwrap();
    first.expect("EXIT=1").unwrap();
    second.send("echo still-mine-$((2*5))\r").unwrap();
    second.expect("still-mine-10").unwrap();
    second.send("\x1c").unwrap();
    second.expect("EXIT=0").unwrap();
}
