//! REST shapes ao reads, and the pure steps over them: which PR stands for
//! a branch, and the readable end of a job log.

use serde::Deserialize;

use crate::scm::RepoRef;

/// A PR as the pulls list shows it: enough to find it and to see that it changed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ListedPull {
    pub number: u32,
    pub state: String,
    pub merged_at: Option<String>,
    pub updated_at: String,
    pub head: Head,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Head {
    #[serde(rename = "ref")]
    pub branch: String,
    pub sha: String,
    /// `owner:branch`; another owner means a fork's branch of the same name.
    pub label: Option<String>,
}

impl ListedPull {
    /// Whether the PR's head is `branch` of `repo` itself, not of a fork.
    fn is_head_of(&self, repo: &RepoRef, branch: &str) -> bool {
        let same_owner = match self.head.label.as_deref().and_then(|l| l.split_once(':')) {
            Some((owner, _)) => owner.eq_ignore_ascii_case(&repo.owner),
            None => true,
        };
        self.head.branch == branch && same_owner
    }
}

/// For each of `branches` (in that order) that has a PR, its newest: the
/// highest number, as GitHub numbers PRs in the order they are opened.
pub(crate) fn newest_per_branch<'a>(
    pulls: &'a [ListedPull],
    repo: &RepoRef,
    branches: &[String],
) -> Vec<&'a ListedPull> {
    branches
        .iter()
        .filter_map(|branch| {
            pulls
                .iter()
                .filter(|p| p.is_head_of(repo, branch))
                .max_by_key(|p| p.number)
        })
        .collect()
}

/// `GET /issues/{n}`.
#[derive(Debug, Deserialize)]
pub(crate) struct IssueReply {
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    pub html_url: String,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub comments: u64,
    /// Present when the "issue" is a pull request (the issues list has both).
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Label {
    pub name: String,
}

/// One of `GET /issues/{n}/comments`.
#[derive(Debug, Deserialize)]
pub(crate) struct IssueCommentReply {
    pub body: Option<String>,
    pub user: Option<User>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct User {
    pub login: String,
}

/// `GET /user`.
#[derive(Debug, Deserialize)]
pub(crate) struct UserReply {
    pub login: String,
}

/// `PUT /pulls/{n}/merge`: the merge commit, or why not.
#[derive(Debug, Deserialize)]
pub(crate) struct MergeReply {
    pub sha: Option<String>,
}

/// The `message` of GitHub's error bodies.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorReply {
    pub message: String,
}

/// The end of a job log as it streams in, without keeping all of it:
/// lines lose the Actions timestamp, and only about the last `max_bytes`
/// are kept.
#[derive(Debug)]
pub(crate) struct LogTail {
    max_bytes: usize,
    /// Whole lines, stripped, each ending in `\n`.
    kept: String,
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
}

/// The longest Actions timestamp prefix (`2026-12-02T10:00:00.0000000Z `).
const TIMESTAMP_MAX: usize = 40;

impl LogTail {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            kept: String::new(),
            partial: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.partial.extend_from_slice(chunk);
        if let Some(last) = self.partial.iter().rposition(|b| *b == b'\n') {
            let rest = self.partial.split_off(last + 1);
            let done = std::mem::replace(&mut self.partial, rest);
            for line in done[..last].split(|b| *b == b'\n') {
                self.keep_line(line);
            }
        }
        // A line longer than the whole tail is cut anyway; its start (and
        // timestamp) can go, so one endless line cannot fill memory.
        let cap = self.max_bytes + TIMESTAMP_MAX;
        if self.partial.len() > 2 * cap {
            self.partial.drain(..self.partial.len() - cap);
        }
        if self.kept.len() > 2 * self.max_bytes {
            self.kept = tail(&self.kept, self.max_bytes).to_string();
        }
    }

    fn keep_line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_start_matches('\u{feff}').trim_end_matches('\r');
        self.kept.push_str(strip_timestamp(line));
        self.kept.push('\n');
    }

    /// The last `max_bytes` of the log, cut at a line start.
    pub(crate) fn finish(mut self) -> String {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.keep_line(&partial);
        }
        tail(&self.kept, self.max_bytes).to_string()
    }
}

/// `line` without the timestamp Actions puts before each log line.
fn strip_timestamp(line: &str) -> &str {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return line;
    };
    let b = stamp.as_bytes();
    let shaped = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z'
        && b[..b.len() - 1]
            .iter()
            .all(|c| c.is_ascii_digit() || b"-T:.".contains(c));
    if shaped {
        rest
    } else {
        line
    }
}

/// The last `max_bytes` of `text`, starting at a line start; when the last
/// line alone is longer, its last `max_bytes` (at a character boundary).
pub(crate) fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let from = text.len() - max_bytes;
    let at_line = if text.as_bytes()[from - 1] == b'\n' {
        Some(from)
    } else {
        text.as_bytes()[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| from + i + 1)
    };
    match at_line.filter(|start| *start < text.len()) {
        Some(start) => &text[start..],
        None => {
            let start = (from..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            &text[start..]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(number: u32, branch: &str, label: &str) -> ListedPull {
        ListedPull {
            number,
            state: "open".into(),
            merged_at: None,
            updated_at: "2026-12-02T10:00:00Z".into(),
            head: Head {
                branch: branch.into(),
                sha: format!("sha{number}"),
                label: Some(label.into()),
            },
        }
    }

    #[test]
    fn the_newest_pr_of_each_branch_and_not_a_forks() {
        let repo = RepoRef::parse("o/r").unwrap();
        let pulls = [
            pull(9, "feat/a", "o:feat/a"),
            pull(4, "feat/b", "o:feat/b"),
            pull(3, "feat/a", "o:feat/a"),
            pull(11, "feat/b", "someone:feat/b"),
        ];
        let branches = ["feat/b", "feat/none", "feat/a"].map(String::from);
        let picked: Vec<u32> = newest_per_branch(&pulls, &repo, &branches)
            .iter()
            .map(|p| p.number)
            .collect();
        assert_eq!(picked, [4, 9]);
    }

    #[test]
    fn timestamps_are_stripped_and_the_tail_starts_a_line() {
        let log = "\u{feff}2026-12-02T10:00:00.0000000Z first\n\
                   2026-12-02T10:00:01.1234567Z second line\r\n\
                   not stamped 2026-12-02T10:00:01Z\n\
                   2026-12-02T10:00:02.0000000Z error: it broke";
        let mut whole = LogTail::new(1000);
        whole.push(log.as_bytes());
        assert_eq!(
            whole.finish(),
            "first\nsecond line\nnot stamped 2026-12-02T10:00:01Z\nerror: it broke\n"
        );

        // Fed a byte at a time, cut to 30 bytes: whole lines only.
        let mut cut = LogTail::new(30);
        for byte in log.as_bytes() {
            cut.push(std::slice::from_ref(byte));
        }
        assert_eq!(cut.finish(), "error: it broke\n");
    }

    #[test]
    fn tail_cuts_at_a_line_start_or_within_one_long_line() {
        assert_eq!(tail("ab\ncd\nef\n", 6), "cd\nef\n");
        assert_eq!(tail("ab\ncd\nef\n", 5), "ef\n");
        assert_eq!(tail("ab\ncd\nef\n", 100), "ab\ncd\nef\n");
        assert_eq!(tail("a\nlong line\n", 4), "ine\n");
        // Never inside a character.
        assert_eq!(tail("x\nééé", 3), "é");
    }

    #[test]
    fn a_long_log_keeps_only_its_end() {
        let mut tail = LogTail::new(64);
        for i in 0..10_000 {
            tail.push(format!("2026-12-02T10:00:00.0000000Z line {i}\n").as_bytes());
            assert!(tail.kept.len() <= 2 * 64 + 40, "bounded");
        }
        let end = tail.finish();
        assert!(end.ends_with("line 9999\n"), "{end}");
        assert!(end.len() <= 64 && end.starts_with("line "), "{end}");
        let mut endless = LogTail::new(10);
        for _ in 0..1000 {
            endless.push(b"xxxxxxxxxx");
        }
        assert!(endless.partial.len() <= 2 * (10 + TIMESTAMP_MAX));
        assert_eq!(endless.finish(), "xxxxxxxxx\n");
    }
}
