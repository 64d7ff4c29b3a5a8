//! Containers for tests that need a machine of their own (an SSH host, a
//! compose cluster): the Debian image `scripts/images` builds from this
//! machine's packages (no registry is reachable), and a container removed
//! when dropped (also on panic). Docker missing is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root (scripts/, deploy/).
pub fn repo_root() -> PathBuf {
    crate::agents_dir()
        .parent()
        .and_then(Path::parent)
        .expect("tests/agents is two levels under the root")
        .to_path_buf()
}

/// `docker <args>`; panics when docker cannot run at all.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs (these tests need the Docker engine)")
}

/// `docker <args>` that must succeed; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    crate::stdout_ok(
        Command::new("docker").args(args),
        &format!("docker {args:?}"),
    )
}

/// The Debian base image (`scripts/images base`), built once per change
/// and asked for once per process.
pub fn base_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        crate::stdout_ok(
            Command::new(repo_root().join("scripts/images")).arg("base"),
            "scripts/images base (Docker and the ao-debian image are needed)",
        )
    })
}

/// A running container, removed with its volumes when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <args>`.
    pub fn run(name: &str, args: &[&str]) -> Self {
        let _ = docker(&["rm", "-f", "-v", name]);
        let mut all = vec!["run", "-d", "--name", name];
        all.extend(args);
        docker_ok(&all);
        Self { name: name.into() }
    }

    /// Its address on the default bridge.
    pub fn ip(&self) -> String {
        docker_ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &self.name,
        ])
    }

    /// `docker exec <name> <args>`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend(args);
        docker(&all)
    }

    /// The host's address on the container's network, which it reaches.
    pub fn gateway(&self) -> String {
        docker_ok(&["inspect", "-f", "{{.NetworkSettings.Gateway}}", &self.name])
    }

    /// A file of the container, if it exists.
    pub fn read(&self, path: &str) -> Option<String> {
        let out = self.exec(&["cat", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Copies `path` out of the container to `to`.
    pub fn copy_out(&self, path: &str, to: &Path) {
        docker_ok(&[
            "cp",
            &format!("{}:{path}", self.name),
            &to.display().to_string(),
        ]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = docker(&["logs", "--tail", "50", &self.name]);
            eprintln!(
                "--- docker logs {} ---\n{}{}",
                self.name,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// Checks a unit file with `systemd-analyze verify` in a root of its own
/// holding the unit, systemd's own units and `files` (path in the
/// root → file here), as the unit's machine would. Its complaints, if any.
pub fn verify_unit(unit_name: &str, unit: &Path, files: &[(&str, &Path)]) -> Result<(), String> {
    let root = tempfile::tempdir().expect("tempdir");
    let put = |inside: &str, from: &Path| {
        let to = root.path().join(inside.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    put(&format!("/etc/systemd/system/{unit_name}"), unit);
    for (inside, from) in files {
        put(inside, from);
    }
    let units = root.path().join("usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let copied = Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(&units)
        .status()
        .expect("cp runs");
    assert!(copied.success(), "copying systemd's units");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg(unit_name)
        .output()
        .expect("systemd-analyze runs (scripts/deps installs systemd)");
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status.success() && said.is_empty() {
        Ok(())
    } else {
        Err(format!("{} {said}", out.status))
    }
}
