//! `ao worker install` and `ao worker uninstall`: make a build machine a
//! worker that comes back after a reboot, here or over SSH.
//!
//! On the machine itself the steps are: join (unless it already holds a
//! valid certificate for that controller), put this binary under
//! `<prefix>/bin`, write the systemd unit of `deploy/systemd`, (re)start
//! it, and wait until the controller has welcomed the new process (the
//! worker writes [`Home::worker_linked`] then; the controller sends its
//! welcome once it counts the worker connected). Every step is printed and
//! skipped when already done, so running it again upgrades: the binary is
//! replaced and the unit restarted, and the restarted worker re-adopts the
//! agents' tmux sessions (the unit stops only its main process).
//!
//! Where systemd does not run (a container), the unit is still written and
//! its exact `ExecStart` is started in the background with its
//! `Environment=`, its pid kept in [`Home::worker_pid`].
//!
//! `--ssh user@host` copies this binary to the host and runs the same
//! command there, the token on its standard input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use ao_proto::dial::ControllerAddr;
use ao_proto::env;
use ao_proto::home::Home;

use crate::commands::Target;

/// The unit `deploy/systemd` ships; install fills in its flags.
const WORKER_UNIT: &str = include_str!("../../deploy/systemd/ao-worker.service");
const UNIT_NAME: &str = "ao-worker.service";
const UNIT_DIR: &str = "/etc/systemd/system";
/// How long a started worker gets to be welcomed by the controller.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// What `ao worker install` was asked for.
pub struct InstallSpec {
    /// The controller to join (`--controller`); default: the one joined.
    pub controller: Option<String>,
    /// The join token, needed only when this machine has not joined yet.
    pub token: Option<String>,
    pub ca_hash: Option<String>,
    pub id: Option<String>,
    pub labels: Vec<(String, String)>,
    pub max_sessions: Option<u32>,
    pub prefix: PathBuf,
}

/// Prints one step of the installation.
fn step(text: impl std::fmt::Display) {
    eprintln!("==> {text}");
}

/// `ao worker install` on this machine.
///
/// # Errors
/// A step failed: the join, a file that cannot be written (not root?),
/// systemd refusing the unit, or a worker not welcomed within a minute.
pub async fn install(home: &Home, spec: &InstallSpec) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    join_once(home, spec).await?;
    let id = worker_id(home)?;
    let bin = spec.prefix.join("bin").join("ao");
    install_binary(&bin)?;
    let unit_path = Path::new(UNIT_DIR).join(UNIT_NAME);
    let installed = std::fs::read_to_string(&unit_path).ok();
    let unit = worker_unit(&bin, home, spec, installed.as_deref())?;
    write_if_changed(&unit_path, &unit)?;
    // A welcome of the process started now is what is waited for.
    match std::fs::remove_file(home.worker_linked()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e)
                .with_context(|| format!("cannot remove {}", home.worker_linked().display()))
        }
        _ => {}
    }
    let mut started_here = None;
    if systemd_runs() {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", UNIT_NAME])?;
        systemctl(&["restart", UNIT_NAME])?;
        step(format!("restarted {UNIT_NAME}"));
    } else {
        started_here = Some(start_without_systemd(home, &unit).await?);
    }
    wait_linked(home, started_here.as_mut()).await?;
    step(format!(
        "worker {id} is connected and ready ({} ms)",
        started.elapsed().as_millis()
    ));
    println!("WORKER={id}");
    Ok(())
}

/// Joins unless this machine holds a valid certificate for the controller
/// asked for (or for any, when none is asked for).
async fn join_once(home: &Home, spec: &InstallSpec) -> anyhow::Result<()> {
    let joined = crate::stack::joined_controller(home);
    let valid = ao_proto::pki::Credentials::load(&home.worker_credentials())
        .ok()
        .and_then(|c| c.validity().ok())
        .is_some_and(|(_, not_after)| not_after > chrono::Utc::now().timestamp());
    let wanted = spec
        .controller
        .as_deref()
        .map(|c| ControllerAddr::parse(c).map(|a| a.to_string()))
        .transpose()?;
    match (&joined, &wanted) {
        (Some(have), None) if valid => {
            step(format!("already joined to {have}"));
            return Ok(());
        }
        (Some(have), Some(want)) if valid && have == want => {
            step(format!("already joined to {have}"));
            return Ok(());
        }
        _ => {}
    }
    let url = wanted
        .or(joined)
        .context("give the controller to join with --controller https://host:port")?;
    let (Some(token), Some(ca_hash)) = (&spec.token, &spec.ca_hash) else {
        bail!("this machine has not joined {url} yet: give --token and --ca-hash (from `ao token create` on the controller)");
    };
    step(format!("joining {url}"));
    crate::stack::join(home, &url, token, ca_hash, spec.id.clone()).await
}

/// The worker id this machine's certificate names.
fn worker_id(home: &Home) -> anyhow::Result<String> {
    let creds = ao_proto::pki::Credentials::load(&home.worker_credentials())?;
    Ok(creds.identity()?.name)
}

/// Puts this binary at `bin`, unless it is there already. Written beside
/// it and renamed over it: a running worker keeps its old file.
fn install_binary(bin: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the ao binary")?;
    let ours = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    if std::fs::read(bin).is_ok_and(|theirs| theirs == ours) {
        step(format!(
            "{} is up to date (ao {})",
            bin.display(),
            ao_proto::VERSION
        ));
        return Ok(());
    }
    let dir = bin.parent().context("the binary's directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let part = bin.with_extension("new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&part)
            .with_context(|| {
                format!(
                    "cannot write {} (run as root, or give --prefix)",
                    part.display()
                )
            })?;
        f.write_all(&ours)?;
        f.sync_all()?;
    }
    std::fs::rename(&part, bin).with_context(|| format!("cannot replace {}", bin.display()))?;
    step(format!(
        "installed {} (ao {})",
        bin.display(),
        ao_proto::VERSION
    ));
    Ok(())
}

/// Writes `text` to `path` unless it holds it already; says which.
fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        step(format!("{} is up to date", path.display()));
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text)
        .with_context(|| format!("cannot write {} (run as root)", path.display()))?;
    step(format!("wrote {}", path.display()));
    Ok(())
}

/// The shipped unit with this installation's binary, home and flags. With
/// neither labels nor a session limit asked for, those of `installed` (the
/// unit there now) are kept: an upgrade need not repeat them.
fn worker_unit(
    bin: &Path,
    home: &Home,
    spec: &InstallSpec,
    installed: Option<&str>,
) -> anyhow::Result<String> {
    let mut exec = vec![bin.display().to_string(), "worker".into(), "run".into()];
    let kept = installed
        .filter(|_| spec.labels.is_empty() && spec.max_sessions.is_none())
        .map(|unit| exec_of(unit).0.into_iter().skip(3).collect::<Vec<_>>());
    if let Some(kept) = kept {
        exec.extend(kept);
    } else {
        for (k, v) in &spec.labels {
            exec.push("--label".into());
            exec.push(format!("{k}={v}"));
        }
        if let Some(n) = spec.max_sessions.filter(|n| *n > 0) {
            exec.push("--max-sessions".into());
            exec.push(n.to_string());
        }
    }
    // The unit is read back word by word where systemd does not run.
    let unsplittable = |w: &String| {
        w.is_empty() || w.contains(|c: char| c.is_whitespace() || "\"'\\%$;".contains(c))
    };
    if let Some(word) = exec
        .iter()
        .chain([&home.display().to_string()])
        .find(|w| unsplittable(w))
    {
        bail!("`{word}`: spaces, quotes, `%`, `$`, `;` and backslashes cannot go into the unit; choose another label, prefix or AO_HOME");
    }
    let mut out = String::new();
    for line in WORKER_UNIT.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&format!("ExecStart={}", exec.join(" ")));
        } else if line.starts_with("Environment=AO_HOME=") {
            out.push_str(&format!("Environment=AO_HOME={}", home.display()));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Whether systemd manages this machine (as `sd_booted(3)` tells).
fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .context("cannot run systemctl")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The unit's `ExecStart` words and `Environment=` pairs.
fn exec_of(unit: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut exec = Vec::new();
    let mut envs = Vec::new();
    for line in unit.lines() {
        if let Some(cmd) = line.strip_prefix("ExecStart=") {
            exec = cmd.split_whitespace().map(str::to_string).collect();
        } else if let Some((k, v)) = line
            .strip_prefix("Environment=")
            .and_then(|kv| kv.split_once('='))
        {
            envs.push((k.to_string(), v.to_string()));
        }
    }
    (exec, envs)
}

/// Stops the worker a previous install started (by its pid file), waiting
/// for it to exit; its agents' tmux sessions stay.
async fn stop_started(home: &Home) -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let Some(pid) = std::fs::read_to_string(home.worker_pid())
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return Ok(());
    };
    let pid = nix::unistd::Pid::from_raw(pid);
    // Only an `ao` process is ours to stop: the pid may have been reused.
    let ours = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ao"))
    });
    if ours && kill(pid, Signal::SIGTERM).is_ok() {
        let mut waited = Duration::ZERO;
        while kill(pid, None).is_ok() && !zombie(pid.as_raw()) {
            if waited > Duration::from_secs(30) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        step(format!("stopped the worker (pid {pid})"));
    }
    let _ = std::fs::remove_file(home.worker_pid());
    Ok(())
}

/// Whether `pid` has exited and waits for its parent to reap it.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// Starts the unit's `ExecStart` as systemd would, in the background.
async fn start_without_systemd(home: &Home, unit: &str) -> anyhow::Result<std::process::Child> {
    stop_started(home).await?;
    let (exec, envs) = exec_of(unit);
    let (program, args) = exec.split_first().context("the unit has no ExecStart")?;
    std::fs::create_dir_all(home.join("worker"))?;
    let child = crate::stack::spawn_daemon(home, Command::new(program).args(args).envs(envs))
        .with_context(|| format!("cannot start {program}"))?;
    ao_proto::home::write_private(&home.worker_pid(), format!("{}\n", child.id()).as_bytes())?;
    step(format!(
        "systemd does not run here: started the unit's ExecStart (pid {}); it will not come back after a reboot",
        child.id()
    ));
    Ok(child)
}

/// Waits until a controller welcomed the worker; `started`, the worker
/// this command started (without systemd), must not end meanwhile.
async fn wait_linked(
    home: &Home,
    mut started: Option<&mut std::process::Child>,
) -> anyhow::Result<()> {
    step("waiting for the controller to welcome the worker");
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    while !home.worker_linked().exists() {
        if let Some(status) = started.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!(
                "the worker exited ({status}) before the controller welcomed it: see {}",
                home.log().display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the worker did not connect within {} s: see `journalctl -u {UNIT_NAME}` or {}",
                READY_WITHIN.as_secs(),
                home.log().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `ao worker uninstall` on this machine: stops and removes the unit, the
/// binary and the worker certificate; worktrees and logs stay in AO_HOME.
///
/// # Errors
/// A file that cannot be removed, or systemd refusing to stop the unit.
pub async fn uninstall(home: &Home, prefix: &Path) -> anyhow::Result<()> {
    let id = worker_id(home).ok();
    let unit_path = Path::new(UNIT_DIR).join(UNIT_NAME);
    if systemd_runs() && unit_path.exists() {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        step(format!("stopped and disabled {UNIT_NAME}"));
    } else {
        stop_started(home).await?;
    }
    let bin = prefix.join("bin").join("ao");
    for path in [&unit_path, &bin] {
        match std::fs::remove_file(path) {
            Ok(()) => step(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
    }
    if systemd_runs() {
        systemctl(&["daemon-reload"])?;
    }
    let creds = home.worker_credentials();
    if creds.exists() {
        std::fs::remove_dir_all(&creds)
            .with_context(|| format!("cannot remove {}", creds.display()))?;
        step(format!(
            "removed the worker certificate ({})",
            creds.display()
        ));
    }
    let _ = std::fs::remove_file(home.worker_linked());
    step(format!(
        "agents' worktrees and logs stay in {}; sessions still running stay in tmux ({})",
        home.display(),
        home.tmux_socket().display()
    ));
    if let Some(id) = &id {
        println!("WORKER={id}");
        eprintln!("next, on the controller: ao worker rm {id}");
    }
    Ok(())
}

/// How to reach the remote machine: `AO_SSH_COMMAND` (default `ssh`) and `user@host`.
struct Ssh {
    command: Vec<String>,
    dest: String,
}

impl Ssh {
    fn new(dest: &str) -> Self {
        let command: Vec<String> = std::env::var(env::AO_SSH_COMMAND)
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "ssh".into())
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Self {
            command,
            dest: dest.to_string(),
        }
    }

    /// Runs `script` (a shell command line) on the host with `input` on its
    /// standard input; its stderr goes to ours, its stdout is returned.
    fn run(&self, script: &str, input: &[u8]) -> anyhow::Result<String> {
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .arg(&self.dest)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", self.command[0]))?;
        let mut stdin = child.stdin.take().context("ssh's stdin")?;
        // A remote end that stops reading early reports through its exit.
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("on {}: `{script}` failed ({})", self.dest, out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Quotes `word` for a POSIX shell.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The worker id a remote install or uninstall printed (`WORKER=<id>`).
fn printed_id(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("WORKER="))
        .map(str::to_string)
}

/// `ao worker install --ssh user@host`: copies this binary to the host,
/// runs `ao worker install` there (the token on standard input), then
/// asks the controller, with this CLI's credentials, how it sees the worker.
///
/// # Errors
/// SSH fails, or the remote install does.
pub async fn install_over_ssh(
    target: &Target,
    dest: &str,
    spec: &InstallSpec,
) -> anyhow::Result<()> {
    let ssh = Ssh::new(dest);
    let exe = std::env::current_exe().context("cannot find the ao binary")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    step(format!(
        "copying ao ({} MB) to {dest}",
        bytes.len() / (1 << 20)
    ));
    let copied = ssh.run(
        r#"f=$(mktemp /tmp/ao-install.XXXXXX) && cat > "$f" && chmod 700 "$f" && echo "$f""#,
        &bytes,
    )?;
    let copied = copied.trim();
    let mut args = vec!["worker".to_string(), "install".into()];
    if let Some(c) = &spec.controller {
        args.extend(["--controller".into(), c.clone()]);
    }
    if spec.token.is_some() {
        args.extend(["--token".into(), "-".into()]);
    }
    if let Some(h) = &spec.ca_hash {
        args.extend(["--ca-hash".into(), h.clone()]);
    }
    if let Some(id) = &spec.id {
        args.extend(["--id".into(), id.clone()]);
    }
    for (k, v) in &spec.labels {
        args.extend(["--label".into(), format!("{k}={v}")]);
    }
    if let Some(n) = spec.max_sessions {
        args.extend(["--max-sessions".into(), n.to_string()]);
    }
    args.extend(["--prefix".into(), spec.prefix.display().to_string()]);
    let line: Vec<String> = args.iter().map(|a| quote(a)).collect();
    step(format!("running on {dest}: ao {}", args.join(" ")));
    let script = format!(
        "{bin} {line}; rc=$?; rm -f {bin}; exit $rc",
        bin = quote(copied),
        line = line.join(" ")
    );
    let token = spec
        .token
        .as_deref()
        .map(|t| format!("{t}\n"))
        .unwrap_or_default();
    let out = ssh.run(&script, token.as_bytes())?;
    let id = printed_id(&out).context("the remote install did not say the worker's id")?;
    match crate::commands::worker_state(target, &id).await {
        Ok(state) => step(format!("the controller lists worker {id} as {state}")),
        Err(e) => step(format!(
            "cannot ask the controller about worker {id} from here: {e}"
        )),
    }
    println!("WORKER={id}");
    Ok(())
}

/// `ao worker uninstall --ssh user@host`: uninstalls there, then removes
/// the worker from the controller with this CLI's credentials.
///
/// # Errors
/// SSH fails, the remote uninstall does, or the controller refuses the removal.
pub async fn uninstall_over_ssh(target: &Target, dest: &str, prefix: &Path) -> anyhow::Result<()> {
    let ssh = Ssh::new(dest);
    let bin = prefix.join("bin").join("ao");
    let script = format!(
        "{} worker uninstall --prefix {}",
        quote(&bin.display().to_string()),
        quote(&prefix.display().to_string())
    );
    step(format!("running on {dest}: {script}"));
    let out = ssh.run(&script, &[])?;
    let id = printed_id(&out).context("the remote uninstall did not say the worker's id")?;
    step(format!("removing worker {id} from the controller"));
    crate::commands::remove_worker(target, id.clone()).await?;
    println!("WORKER={id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstallSpec {
        InstallSpec {
            controller: None,
            token: None,
            ca_hash: None,
            id: None,
            labels: vec![("gpu".into(), "a100".into())],
            max_sessions: Some(4),
            prefix: PathBuf::from("/opt/ao"),
        }
    }

    #[test]
    fn the_unit_runs_the_installed_binary_with_the_flags_in_the_home() {
        let home = Home::new("/var/lib/ao-w");
        let unit = worker_unit(Path::new("/opt/ao/bin/ao"), &home, &spec(), None).unwrap();
        let (exec, envs) = exec_of(&unit);
        assert_eq!(
            exec,
            [
                "/opt/ao/bin/ao",
                "worker",
                "run",
                "--label",
                "gpu=a100",
                "--max-sessions",
                "4"
            ]
        );
        assert_eq!(envs, [("AO_HOME".to_string(), "/var/lib/ao-w".to_string())]);
        // The rest is the shipped unit's.
        assert!(unit.contains("KillMode=process\n"), "{unit}");
        assert_eq!(unit.lines().count(), WORKER_UNIT.lines().count());
        // Upgraded without flags: they are kept; with some: replaced.
        let mut bare = spec();
        (bare.labels, bare.max_sessions) = (vec![], None);
        let again = worker_unit(Path::new("/opt/ao/bin/ao"), &home, &bare, Some(&unit)).unwrap();
        assert_eq!(again, unit);
        bare.max_sessions = Some(2);
        let changed = worker_unit(Path::new("/opt/ao/bin/ao"), &home, &bare, Some(&unit)).unwrap();
        assert_eq!(exec_of(&changed).0[3..], ["--max-sessions", "2"]);
    }

    #[test]
    fn words_the_unit_cannot_carry_are_refused() {
        let mut s = spec();
        s.labels = vec![("team".into(), "a b".into())];
        let e = worker_unit(Path::new("/opt/ao/bin/ao"), &Home::new("/h"), &s, None).unwrap_err();
        assert!(e.to_string().contains("`team=a b`"), "{e}");
    }

    #[test]
    fn a_remote_line_is_quoted_for_the_shell() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(printed_id("x\nWORKER=w-1\n"), Some("w-1".into()));
    }
}
