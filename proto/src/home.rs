//! `AO_HOME`: where each file lives ([`Home`]) and the modes of what `ao`
//! makes there. The home holds the store (with agents' `env:` secrets),
//! prompts and terminal logs, so every directory ao makes there is
//! owner-only, and so is every file, on its own: neither depends on the
//! mode of the home or on the process umask.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The layout of an `AO_HOME`, in one place so that the CLI, the
/// controller and the worker cannot disagree on a path:
///
/// ```text
/// ao.sock  ao.lock  ao.log  config.yaml  store.redb  events.jsonl
/// tmux.sock  tmux.exit/            the worker's tmux server and pane exits
/// worktrees/<project>/<session>/   agents' git worktrees
/// sessions/<id>/{prompt.md,terminal.log}
/// worker/sessions/<id>.json        what a restarted worker re-adopts
/// worker/linked  worker/worker.pid  what `ao worker install` waits on and stops
/// pki/  pki/admin/  pki/admins/  pki/worker/{controller,...}
/// ```
///
/// A home is a directory, so it derefs to its [`Path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home(PathBuf);

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The controller's Unix socket, which the local CLI and worker dial.
    pub fn socket(&self) -> PathBuf {
        self.0.join("ao.sock")
    }

    /// Held by the process that serves from this home, so two cannot.
    pub fn lock(&self) -> PathBuf {
        self.0.join("ao.lock")
    }

    /// What `ao up` runs in the background writes here.
    pub fn log(&self) -> PathBuf {
        self.0.join("ao.log")
    }

    /// The config file used when none is named or found nearer.
    pub fn config(&self) -> PathBuf {
        self.0.join("config.yaml")
    }

    /// The base URL of the controller's HTTP listener (`http://` on
    /// loopback, `https://` off it), while it serves (`ao up --http
    /// 127.0.0.1:0` picks a free port).
    pub fn http_url(&self) -> PathBuf {
        self.0.join("http.url")
    }

    /// The embedded store.
    pub fn store(&self) -> PathBuf {
        self.0.join("store.redb")
    }

    /// The controller's event log.
    pub fn events(&self) -> PathBuf {
        self.0.join("events.jsonl")
    }

    /// The worker's tmux server; pane exit files go next to it, in
    /// `tmux.exit/`.
    pub fn tmux_socket(&self) -> PathBuf {
        self.0.join("tmux.sock")
    }

    /// The git worktree of `session` of `project`.
    pub fn worktree(&self, project: &str, session: &str) -> PathBuf {
        self.0.join("worktrees").join(project).join(session)
    }

    /// A session's own files: its prompt and terminal log.
    pub fn session_dir(&self, session: &str) -> PathBuf {
        self.0.join("sessions").join(session)
    }

    /// The keys of the messages typed into `session` once (see
    /// `Input.once_key`), one per line.
    pub fn typed_once(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("typed-once")
    }

    /// The task prompt the agent is given.
    pub fn prompt_file(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("prompt.md")
    }

    /// Everything the session's terminal showed (rotated beside it).
    pub fn terminal_log(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("terminal.log")
    }

    /// What the agent's hooks say, one JSON line each, appended by `ao
    /// worker hook` and read by the worker; alone in its directory, which
    /// the worker watches (the terminal log beside it would wake it at
    /// every byte).
    pub fn hook_log(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("hooks").join("hooks.jsonl")
    }

    /// The settings file that installs `ao`'s hooks into the session's
    /// agent (outside the repository, so nothing is committed).
    pub fn agent_settings(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("agent-settings.json")
    }

    /// The worker's Unix socket for `ao report` from its sessions, alone in
    /// its directory: a container bind-mounts the directory, which outlives
    /// the socket a restarted worker makes anew.
    pub fn report_socket(&self) -> PathBuf {
        self.0.join("worker").join("report").join("report.sock")
    }

    /// The worker's metadata of every session it runs.
    pub fn session_metas(&self) -> PathBuf {
        self.0.join("worker").join("sessions")
    }

    /// Written by the worker each time a controller welcomes it (its pid,
    /// the controller's version, when): `ao worker install` waits on it.
    pub fn worker_linked(&self) -> PathBuf {
        self.0.join("worker").join("linked")
    }

    /// The pid of a worker `ao worker install` started itself, on a machine
    /// where systemd does not run.
    pub fn worker_pid(&self) -> PathBuf {
        self.0.join("worker").join("worker.pid")
    }

    /// The worker's metadata of `session`.
    pub fn session_meta(&self, session: &str) -> PathBuf {
        self.session_metas().join(format!("{session}.json"))
    }

    /// The cluster CA (`ca.crt`, `ca.key`) unless `--pki-dir` says otherwise.
    pub fn pki(&self) -> PathBuf {
        self.0.join("pki")
    }

    /// The CLI's admin credential made by `ao controller init`.
    pub fn admin_credentials(&self) -> PathBuf {
        self.pki().join("admin")
    }

    /// Where `ao admin issue` writes credentials unless told otherwise.
    pub fn issued_admins(&self) -> PathBuf {
        self.pki().join("admins")
    }

    /// Where `ao token create --role` writes credential files unless told otherwise.
    pub fn issued_credentials(&self) -> PathBuf {
        self.0.join("credentials")
    }

    /// This machine's worker credential from `ao worker join`.
    pub fn worker_credentials(&self) -> PathBuf {
        self.pki().join("worker")
    }

    /// The controller URL `ao worker join` remembers.
    pub fn joined_controller(&self) -> PathBuf {
        self.worker_credentials().join("controller")
    }
}

impl Deref for Home {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Home {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

/// Directories ao makes: the owner may list, enter and write them.
pub const DIR_MODE: u32 = 0o700;
/// Files ao makes: the owner may read and write them.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each new one [`DIR_MODE`];
/// directories that exist keep their mode.
///
/// # Errors
/// As [`DirBuilder::create`].
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Options that create a missing file as [`FILE_MODE`].
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Writes `data` to `path`, replacing what was there; a new file is
/// [`FILE_MODE`].
///
/// # Errors
/// As [`OpenOptions::open`] and [`Write::write_all`].
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_home_layout_is_stable() {
        // Older workers' sessions and credentials live at these paths.
        let home = Home::new("/h");
        let paths = [
            (home.socket(), "/h/ao.sock"),
            (home.lock(), "/h/ao.lock"),
            (home.log(), "/h/ao.log"),
            (home.config(), "/h/config.yaml"),
            (home.store(), "/h/store.redb"),
            (home.events(), "/h/events.jsonl"),
            (home.tmux_socket(), "/h/tmux.sock"),
            (home.worktree("app", "app-1"), "/h/worktrees/app/app-1"),
            (home.prompt_file("app-1"), "/h/sessions/app-1/prompt.md"),
            (home.terminal_log("app-1"), "/h/sessions/app-1/terminal.log"),
            (home.session_meta("app-1"), "/h/worker/sessions/app-1.json"),
            (home.admin_credentials(), "/h/pki/admin"),
            (home.issued_admins(), "/h/pki/admins"),
            (home.joined_controller(), "/h/pki/worker/controller"),
        ];
        for (path, want) in paths {
            assert_eq!(path, Path::new(want));
        }
    }

    #[test]
    fn what_ao_makes_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b");
        create_private_dir(&deep).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        let file = deep.join("f");
        write_private(&file, b"x").unwrap();
        assert_eq!(mode(&file), 0o600);
        write_private(&file, b"y").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"y");
    }
}
