//! Git worktrees: every session works in its own checkout on its own branch,
//! under `$AO_HOME/worktrees/<project>/<session>`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("`git` is not installed or not on PATH (install it: apt-get install git)")]
    GitNotFound,
    #[error("{path} is not a git repository")]
    NotARepo { path: String },
    #[error("`{command}` failed in {dir}: {stderr}")]
    Git {
        command: String,
        dir: String,
        stderr: String,
    },
    #[error("postCreate command `{command}` failed with {status}: {output}")]
    PostCreate {
        command: String,
        status: String,
        output: String,
    },
    #[error("symlink {link} -> {target}")]
    Symlink {
        link: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    InvalidBranch(#[from] ao_proto::names::BranchNameError),
    #[error("{path} is not a git worktree; left alone")]
    NotAWorktree { path: String },
    #[error("io error on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serializes worktree bookkeeping per repository: git's `worktree add` and
/// `prune` are not safe to run concurrently on one repository (a prune can
/// remove the half-written record of a concurrent add).
#[derive(Default, Clone)]
pub struct RepoLocks {
    locks: Arc<std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl RepoLocks {
    fn for_repo(&self, repo: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(repo.to_path_buf()).or_default().clone()
    }
}

/// What a session's workspace needs.
#[derive(Debug, Clone)]
pub struct WorkspaceSpec<'a> {
    pub repo: &'a Path,
    pub path: &'a Path,
    pub branch: &'a str,
    pub base: &'a str,
    pub symlinks: &'a [String],
    pub post_create: &'a [String],
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    git_raw(dir, args).await.map(|out| out.trim().to_string())
}

/// `git` with its output as it is: porcelain formats start with spaces.
async fn git_raw(dir: &Path, args: &[&str]) -> Result<String, WorkspaceError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkspaceError::GitNotFound,
            _ => WorkspaceError::Io {
                path: dir.display().to_string(),
                source: e,
            },
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(WorkspaceError::Git {
            command: format!("git {}", args.join(" ")),
            dir: dir.display().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Creates the worktree (or reuses it when it already exists, as after a
/// restart), links the configured files and runs `postCreate` on creation.
///
/// # Errors
/// An invalid branch name, git failures, a missing repository, a failing
/// `postCreate` command.
pub async fn prepare(spec: &WorkspaceSpec<'_>, locks: &RepoLocks) -> Result<bool, WorkspaceError> {
    // The controller checks it too; this keeps a value git would read as an
    // option (`-M`) from ever reaching git, whoever sent it.
    ao_proto::names::check_branch(spec.branch)?;
    if git(spec.repo, &["rev-parse", "--git-dir"]).await.is_err() {
        return Err(WorkspaceError::NotARepo {
            path: spec.repo.display().to_string(),
        });
    }
    if spec.path.join(".git").exists() {
        return Ok(false);
    }
    if let Some(parent) = spec.path.parent() {
        ao_proto::home::create_private_dir(parent).map_err(|e| WorkspaceError::Io {
            path: parent.display().to_string(),
            source: e,
        })?;
    }
    let lock = locks.for_repo(spec.repo);
    let guard = lock.lock().await;
    // A worktree whose directory was deleted by hand leaves a stale record.
    let _ = git(spec.repo, &["worktree", "prune"]).await;
    let path = spec.path.display().to_string();
    let branch_exists = git(
        spec.repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{}", spec.branch),
        ],
    )
    .await
    .is_ok();
    // `--` ends the options: the path and the branch are operands whatever
    // they start with.
    if branch_exists {
        git(spec.repo, &["worktree", "add", "--", &path, spec.branch]).await?;
    } else {
        let base = resolve_base(spec.repo, spec.base).await?;
        git(
            spec.repo,
            &["worktree", "add", "-b", spec.branch, "--", &path, &base],
        )
        .await?;
    }
    drop(guard);
    link_files(spec)?;
    for command in spec.post_create {
        run_post_create(spec.path, command).await?;
    }
    Ok(true)
}

/// The base to branch from: the configured default branch, its remote
/// tracking branch, or HEAD for a repository that has neither.
async fn resolve_base(repo: &Path, base: &str) -> Result<String, WorkspaceError> {
    for candidate in [
        format!("refs/heads/{base}"),
        format!("refs/remotes/origin/{base}"),
    ] {
        if git(repo, &["rev-parse", "--verify", "--quiet", &candidate])
            .await
            .is_ok()
        {
            return Ok(candidate);
        }
    }
    git(repo, &["rev-parse", "--verify", "HEAD"]).await
}

fn link_files(spec: &WorkspaceSpec<'_>) -> Result<(), WorkspaceError> {
    for rel in spec.symlinks {
        let target = spec.repo.join(rel);
        let link = spec.path.join(rel);
        if !target.exists() || link.exists() {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(|e| WorkspaceError::Io {
                path: parent.display().to_string(),
                source: e,
            })?;
        }
        std::os::unix::fs::symlink(&target, &link).map_err(|e| WorkspaceError::Symlink {
            link: link.display().to_string(),
            target: target.display().to_string(),
            source: e,
        })?;
    }
    Ok(())
}

async fn run_post_create(dir: &Path, command: &str) -> Result<(), WorkspaceError> {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| WorkspaceError::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if output.is_empty() {
        output = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    Err(WorkspaceError::PostCreate {
        command: command.to_string(),
        status: out.status.to_string(),
        output,
    })
}

/// How a finished session's worktree is to be removed.
#[derive(Debug, Clone)]
pub struct RemovalSpec<'a> {
    pub repo: &'a Path,
    pub path: &'a Path,
    pub branch: &'a str,
    /// Also delete the branch (its work is merged).
    pub delete_branch: bool,
    /// Remove it even with uncommitted changes.
    pub force: bool,
    /// Files ao linked into it: not uncommitted work.
    pub symlinks: &'a [String],
    /// Only look: say what would be done.
    pub dry_run: bool,
}

/// What a removal did, or in a dry run would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The worktree is gone (it may have been gone already).
    pub removed: bool,
    pub branch_deleted: bool,
    /// Why it was kept: the uncommitted changes it holds.
    pub kept: Option<String>,
}

/// How many changed paths a kept worktree's reason names.
const CHANGES_NAMED: usize = 3;

/// Removes a session's worktree (and with `delete_branch` its branch),
/// unless it holds uncommitted changes and `force` is not set: work is
/// never lost by a cleanup.
///
/// # Errors
/// An invalid branch name, a path that is not a worktree, git failures.
pub async fn remove(spec: &RemovalSpec<'_>, locks: &RepoLocks) -> Result<Removal, WorkspaceError> {
    ao_proto::names::check_branch(spec.branch)?;
    let exists = spec.path.join(".git").exists();
    if !exists && spec.path.exists() {
        return Err(WorkspaceError::NotAWorktree {
            path: spec.path.display().to_string(),
        });
    }
    if exists && !spec.force {
        let changes = uncommitted(spec.path, spec.symlinks).await?;
        if !changes.is_empty() {
            let mut named = changes
                .iter()
                .take(CHANGES_NAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if changes.len() > CHANGES_NAMED {
                named.push_str(&format!(" and {} more", changes.len() - CHANGES_NAMED));
            }
            return Ok(Removal {
                removed: false,
                branch_deleted: false,
                kept: Some(format!("uncommitted changes ({named})")),
            });
        }
    }
    let branch_ref = format!("refs/heads/{}", spec.branch);
    let branch_exists = spec.delete_branch
        && git(
            spec.repo,
            &["rev-parse", "--verify", "--quiet", &branch_ref],
        )
        .await
        .is_ok();
    if spec.dry_run {
        return Ok(Removal {
            removed: true,
            branch_deleted: branch_exists,
            kept: None,
        });
    }
    let lock = locks.for_repo(spec.repo);
    let _guard = lock.lock().await;
    if exists {
        let path = spec.path.display().to_string();
        // Our own check judged its changes: `--force` only gets past git's
        // refusal of untracked files (ao's own links among them).
        git(spec.repo, &["worktree", "remove", "--force", "--", &path]).await?;
    }
    // A worktree deleted by hand leaves its record behind.
    git(spec.repo, &["worktree", "prune"]).await?;
    if branch_exists {
        git(spec.repo, &["branch", "-D", "--", spec.branch]).await?;
    }
    Ok(Removal {
        removed: true,
        branch_deleted: branch_exists,
        kept: None,
    })
}

/// The paths with uncommitted changes in the worktree at `path`, tracked
/// or not, but for `symlinks` (ao's own links).
async fn uncommitted(path: &Path, symlinks: &[String]) -> Result<Vec<String>, WorkspaceError> {
    let out = git_raw(path, &["status", "--porcelain", "-z"]).await?;
    let mut changes = Vec::new();
    let mut entries = out.split('\0').filter(|e| !e.is_empty());
    while let Some(entry) = entries.next() {
        let (status, file) = entry.split_at(entry.len().min(3));
        if status.starts_with(['R', 'C']) {
            // A rename or copy is followed by the path it came from.
            entries.next();
        }
        let untracked_link = status == "?? " && symlinks.iter().any(|l| l == file);
        if !untracked_link {
            changes.push(file.to_string());
        }
    }
    Ok(changes)
}

/// The branch the worktree has checked out.
pub async fn current_branch(path: &Path) -> Option<String> {
    git(path, &["rev-parse", "--abbrev-ref", "HEAD"]).await.ok()
}

/// The repository's git directory that the worktree shares (its objects
/// and refs live there): an agent in a container needs it to commit.
pub async fn git_common_dir(path: &Path) -> Option<std::path::PathBuf> {
    git(
        path,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .await
    .ok()
    .map(|dir| dir.trim().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) {
        let ok = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    #[tokio::test]
    async fn worktree_on_its_branch_with_links_and_post_create() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q -b main && echo secret > .env && echo x > a && git add a && git -c user.email=t@t -c user.name=t commit -qm init");
        let wt = dir.path().join("wt/app-1");
        let symlinks = vec![".env".to_string()];
        let post = vec!["touch post-created".to_string()];
        let spec = WorkspaceSpec {
            repo: &repo,
            path: &wt,
            branch: "feat/INT-1",
            base: "main",
            symlinks: &symlinks,
            post_create: &post,
        };
        let locks = RepoLocks::default();
        assert!(prepare(&spec, &locks).await.unwrap());
        assert_eq!(current_branch(&wt).await.as_deref(), Some("feat/INT-1"));
        assert_eq!(
            std::fs::read_to_string(wt.join(".env")).unwrap(),
            "secret\n"
        );
        assert!(wt.join("post-created").exists());
        // Preparing again reuses it.
        assert!(!prepare(&spec, &locks).await.unwrap());

        let bad = vec!["echo nope >&2; exit 3".to_string()];
        let wt2 = dir.path().join("wt/app-2");
        let spec2 = WorkspaceSpec {
            path: &wt2,
            branch: "b2",
            post_create: &bad,
            ..spec
        };
        let err = prepare(&spec2, &locks).await.unwrap_err().to_string();
        assert!(
            err.contains("nope") && err.contains("exit status: 3"),
            "{err}"
        );
    }

    /// A repository with one commit, and a worktree of it on `feat/x` with
    /// ao's `.env` link.
    async fn repo_with_worktree(dir: &Path) -> (PathBuf, PathBuf) {
        let repo = dir.join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q -b main && echo s > .env && echo '*.log' > .gitignore && git add .gitignore && git -c user.email=t@t -c user.name=t commit -qm init");
        let wt = dir.join("wt/app-1");
        let symlinks = vec![".env".to_string()];
        let spec = WorkspaceSpec {
            repo: &repo,
            path: &wt,
            branch: "feat/x",
            base: "main",
            symlinks: &symlinks,
            post_create: &[],
        };
        prepare(&spec, &RepoLocks::default()).await.unwrap();
        (repo, wt)
    }

    fn removal<'a>(repo: &'a Path, wt: &'a Path, symlinks: &'a [String]) -> RemovalSpec<'a> {
        RemovalSpec {
            repo,
            path: wt,
            branch: "feat/x",
            delete_branch: false,
            force: false,
            symlinks,
            dry_run: false,
        }
    }

    fn branches(repo: &Path) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["branch", "--format=%(refname:short)"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    #[tokio::test]
    async fn uncommitted_work_keeps_a_worktree_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, wt) = repo_with_worktree(dir.path()).await;
        let links = vec![".env".to_string()];
        let locks = RepoLocks::default();
        // ao's link and an ignored file are not work; a new file and an edit are.
        sh(
            &wt,
            "echo x > run.log && echo new > notes.md && echo more >> .gitignore",
        );
        let kept = remove(&removal(&repo, &wt, &links), &locks).await.unwrap();
        assert!(!kept.removed && !kept.branch_deleted);
        let why = kept.kept.unwrap();
        assert!(
            why.contains("notes.md") && why.contains(".gitignore") && !why.contains(".env"),
            "{why}"
        );
        assert!(!why.contains("run.log"), "{why}");
        assert!(wt.join("notes.md").exists());

        let forced = RemovalSpec {
            force: true,
            ..removal(&repo, &wt, &links)
        };
        let gone = remove(&forced, &locks).await.unwrap();
        assert_eq!(
            gone,
            Removal {
                removed: true,
                branch_deleted: false,
                kept: None
            }
        );
        assert!(!wt.exists());
        assert!(
            branches(&repo).contains("feat/x"),
            "an unmerged branch stays"
        );
    }

    #[tokio::test]
    async fn a_clean_worktree_goes_with_its_branch_when_asked_and_a_dry_run_only_looks() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, wt) = repo_with_worktree(dir.path()).await;
        let links = vec![".env".to_string()];
        let locks = RepoLocks::default();
        let spec = RemovalSpec {
            delete_branch: true,
            ..removal(&repo, &wt, &links)
        };
        let dry = RemovalSpec {
            dry_run: true,
            ..spec.clone()
        };
        let would = remove(&dry, &locks).await.unwrap();
        assert!(would.removed && would.branch_deleted && would.kept.is_none());
        assert!(wt.join(".git").exists(), "a dry run removes nothing");
        assert!(branches(&repo).contains("feat/x"));

        let done = remove(&spec, &locks).await.unwrap();
        assert!(done.removed && done.branch_deleted);
        assert!(!wt.exists());
        assert!(!branches(&repo).contains("feat/x"));
        let listed = git(&repo, &["worktree", "list"]).await.unwrap();
        assert!(!listed.contains("app-1"), "{listed}");
        // Again: nothing left to remove, nothing fails.
        let again = remove(&spec, &locks).await.unwrap();
        assert!(again.removed && !again.branch_deleted);
    }

    #[tokio::test]
    async fn a_branch_git_would_read_as_an_option_never_reaches_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q -b main && git -c user.email=t@t -c user.name=t commit -q --allow-empty -m init && git branch other");
        let refs = || {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["for-each-ref", "--format=%(refname) %(objectname)"])
                .output()
                .unwrap()
                .stdout
        };
        let before = refs();
        let locks = RepoLocks::default();
        for bad in ["-M", "--force", "a..b", "x.lock"] {
            let path = dir.path().join("wt/s-1");
            let spec = WorkspaceSpec {
                repo: &repo,
                path: &path,
                branch: bad,
                base: "main",
                symlinks: &[],
                post_create: &[],
            };
            let err = prepare(&spec, &locks).await.unwrap_err();
            assert!(
                matches!(err, WorkspaceError::InvalidBranch(_)),
                "{bad}: {err}"
            );
            assert!(!path.exists(), "{bad}");
        }
        assert_eq!(String::from_utf8(refs()), String::from_utf8(before));
    }

    #[tokio::test]
    async fn concurrent_worktrees_of_one_repo_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q -b main && git -c user.email=t@t -c user.name=t commit -q --allow-empty -m init");
        let locks = RepoLocks::default();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..40 {
            let (locks, repo) = (locks.clone(), repo.clone());
            let path = dir.path().join(format!("wt/s-{i}"));
            set.spawn(async move {
                let spec = WorkspaceSpec {
                    repo: &repo,
                    path: &path,
                    branch: &format!("b-{i}"),
                    base: "main",
                    symlinks: &[],
                    post_create: &[],
                };
                prepare(&spec, &locks).await
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
}
