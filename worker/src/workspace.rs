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
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
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

/// The branch the worktree has checked out.
pub async fn current_branch(path: &Path) -> Option<String> {
    git(path, &["rev-parse", "--abbrev-ref", "HEAD"]).await.ok()
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
