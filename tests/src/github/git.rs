//! The bare repository behind a fake repo: the single source of truth for
//! branch heads, mergeability and merges, so a test (or an agent) moves a
//! PR with a plain `git push` and a merge is visible to `git log`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A git command that failed where the fake expected it to work (a broken
/// test set-up, never a GitHub answer).
#[derive(Debug, thiserror::Error)]
#[error("git {args}: {stderr}")]
pub struct GitError {
    args: String,
    stderr: String,
}

/// How a three-way merge of two commits came out (`git merge-tree`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeTree {
    /// It merges cleanly into this tree.
    Clean(String),
    /// It conflicts.
    Conflicts,
}

/// Who a commit is written by (author and committer alike).
pub struct Identity<'a> {
    pub name: &'a str,
    pub email: &'a str,
}

/// One bare repository.
#[derive(Debug, Clone)]
pub struct Bare {
    path: PathBuf,
}

impl Bare {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Runs git; `Ok(None)` when it exits 1 (git's "no"/"conflicts"),
    /// the trimmed stdout on 0.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Option<String>, GitError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .map_err(|e| GitError {
                args: args.join(" "),
                stderr: e.to_string(),
            })?;
        match out.status.code() {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )),
            Some(1) => Ok(None),
            _ => Err(GitError {
                args: args.join(" "),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    fn must(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String, GitError> {
        self.run(args, env)?.ok_or_else(|| GitError {
            args: args.join(" "),
            stderr: "exited 1".into(),
        })
    }

    /// The branch `HEAD` points at: the repository's default branch.
    pub fn default_branch(&self) -> Result<String, GitError> {
        self.must(&["symbolic-ref", "--short", "HEAD"], &[])
    }

    /// The commit a branch points at, if the branch exists.
    pub fn branch_sha(&self, branch: &str) -> Result<Option<String>, GitError> {
        let spec = format!("refs/heads/{branch}^{{commit}}");
        self.run(&["rev-parse", "--verify", "-q", &spec], &[])
    }

    /// How many commits `head` has that `base` does not.
    pub fn commits_ahead(&self, base: &str, head: &str) -> Result<usize, GitError> {
        let range = format!("{base}..{head}");
        let n = self.must(&["rev-list", "--count", &range], &[])?;
        Ok(n.parse().unwrap_or(0))
    }

    /// The three-way merge of `ours` and `theirs`, at their merge base or at
    /// `base` when given (a cherry-pick is a merge at the picked commit's parent).
    pub fn merge_tree(
        &self,
        ours: &str,
        theirs: &str,
        base: Option<&str>,
    ) -> Result<MergeTree, GitError> {
        let merge_base = base.map(|b| format!("--merge-base={b}"));
        let mut args = vec!["merge-tree", "--write-tree", "--no-messages"];
        args.extend(merge_base.as_deref());
        args.extend([ours, theirs]);
        // On a conflict git prints the tree with conflict markers and exits 1.
        Ok(match self.run(&args, &[])? {
            Some(out) => MergeTree::Clean(out.lines().next().unwrap_or_default().to_string()),
            None => MergeTree::Conflicts,
        })
    }

    /// The tree of commit `sha`.
    pub fn tree_of(&self, sha: &str) -> Result<String, GitError> {
        self.must(&["rev-parse", &format!("{sha}^{{tree}}")], &[])
    }

    /// Writes a commit of `tree` with these parents; its sha.
    pub fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
        author: &Identity,
        committer: &Identity,
    ) -> Result<String, GitError> {
        let mut args = vec!["commit-tree", tree, "-m", message];
        for p in parents {
            args.extend(["-p", p]);
        }
        let env = [
            ("GIT_AUTHOR_NAME", author.name),
            ("GIT_AUTHOR_EMAIL", author.email),
            ("GIT_COMMITTER_NAME", committer.name),
            ("GIT_COMMITTER_EMAIL", committer.email),
        ];
        self.must(&args, &env)
    }

    /// The commits of `base..head`, oldest first; `None` if one is a merge
    /// commit (which a linear replay cannot carry).
    pub fn linear_commits(&self, base: &str, head: &str) -> Result<Option<Vec<String>>, GitError> {
        let range = format!("{base}..{head}");
        let all = self.must(&["rev-list", "--reverse", &range], &[])?;
        let merges = self.must(&["rev-list", "--merges", &range], &[])?;
        Ok(merges
            .is_empty()
            .then(|| all.lines().map(str::to_string).collect()))
    }

    /// A commit's author name, email and message, to replay it.
    pub fn commit_parts(&self, sha: &str) -> Result<(String, String, String), GitError> {
        let out = self.must(&["log", "-1", "--format=%an%x00%ae%x00%B", sha], &[])?;
        let mut parts = out.splitn(3, '\0').map(str::to_string);
        let mut next = || parts.next().unwrap_or_default();
        Ok((next(), next(), next()))
    }

    /// Moves `refs/heads/<branch>` from `old` to `new`; false if it no
    /// longer pointed at `old` (someone pushed in between).
    pub fn move_branch(&self, branch: &str, new: &str, old: &str) -> Result<bool, GitError> {
        let name = format!("refs/heads/{branch}");
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.path)
            .args(["update-ref", &name, new, old])
            .output()
            .map_err(|e| GitError {
                args: format!("update-ref {name}"),
                stderr: e.to_string(),
            })?;
        Ok(out.status.success())
    }

    /// Whether `path` differs between two commits (a review comment on it
    /// is then outdated).
    pub fn path_changed(&self, from: &str, to: &str, path: &str) -> Result<bool, GitError> {
        Ok(self
            .run(&["diff", "--quiet", from, to, "--", path], &[])?
            .is_none())
    }
}
