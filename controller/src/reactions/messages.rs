//! The text typed into an agent's terminal about a situation: plain markdown, no control
//! characters, no trailing blank lines, and small enough for an agent to read at once.

use crate::scm::Comment;

use super::situation::{human_duration, FailedCheck, Situation};

/// The most bytes a message to an agent holds: the failing checks' logs and the comments are
/// cut to fit, keeping what matters most (the end of each log, the first comments).
pub const MESSAGE_BUDGET: usize = 6 * 1024;

/// The most bytes of one comment's body; a longer one is cut and marked.
const COMMENT_BODY_MAX: usize = 1024;

/// The first line of a log that was cut, inside its fenced block.
const CUT_MARKER: &str = "[... earlier lines cut]\n";

/// What to send the agent about `situation`; `lead` is the configured `message`, which takes the
/// place of the default first line (the details below it stay).
pub fn to_agent(situation: &Situation, lead: Option<&str>) -> String {
    let text = match situation {
        Situation::CiFailed { number, checks } => ci_failed(lead, *number, checks, MESSAGE_BUDGET),
        Situation::ChangesRequested { comments } => review_comments(
            lead.unwrap_or(
                "A reviewer requested changes on your PR. Address each comment below, then push.",
            ),
            comments,
            MESSAGE_BUDGET,
        ),
        Situation::BotComments { comments } => review_comments(
            lead.unwrap_or(
                "An automated reviewer commented on your PR. Address each comment below \
                 (or reply why not), then push.",
            ),
            comments,
            MESSAGE_BUDGET,
        ),
        Situation::MergeConflicts { base } => merge_conflicts(lead, base),
        Situation::AgentStuck { stuck_for } => lead.map_or_else(
            || {
                format!(
                    "You seem to have made no progress for {}. If something blocks you, say \
                     what; otherwise break the task into smaller steps and continue.",
                    human_duration(*stuck_for)
                )
            },
            str::to_owned,
        ),
        Situation::PrClosed { number } => lead.map_or_else(
            || format!("Your PR #{number} was closed without being merged. Stop work on it."),
            str::to_owned,
        ),
        other => lead.map_or_else(|| other.summary(), str::to_owned),
    };
    plain(&text)
}

/// What a human is told about `situation`: the configured `message` over the one-line summary,
/// else the summary alone.
pub fn notification(situation: &Situation, message: Option<&str>) -> String {
    match message {
        Some(message) => format!("{}\n{}", message.trim_end(), situation.summary()),
        None => situation.summary(),
    }
}

/// `lead`, then each failed check's name, link and log tail in a fenced block, all within
/// `budget` bytes: each log gets a fair share of what the rest leaves (a short log leaves its
/// unused share to the others) and keeps its end, cut at a line start; checks that do not fit
/// even without their logs are counted at the end.
fn ci_failed(lead: Option<&str>, number: u32, checks: &[FailedCheck], budget: usize) -> String {
    let default_lead;
    let lead = match lead {
        Some(lead) => lead,
        None => {
            default_lead = format!(
                "CI failed on your PR #{number}. Fix the failures below and push; \
                 the end of each failing log follows."
            );
            &default_lead
        }
    };
    let mut out = cut_to(plain(lead).trim_end(), budget / 2).to_owned();
    let logs: Vec<String> = checks.iter().map(|c| plain(&c.log_tail)).collect();
    let frames: Vec<(String, String)> = checks
        .iter()
        .zip(&logs)
        .map(|(check, log)| {
            let fence = "`".repeat(longest_backtick_run(log).max(2) + 1);
            let link = check
                .url
                .as_deref()
                .map_or_else(String::new, |u| format!("{u}\n"));
            let head = format!("\n\n### {}\n{link}{fence}\n", one_line(&check.name));
            (head, format!("\n{fence}"))
        })
        .collect();
    let more_line = |n: usize| format!("\n\n... and {n} more failing checks");
    let mut room = budget.saturating_sub(out.len());
    let mut shown = 0;
    for (i, (head, tail)) in frames.iter().enumerate() {
        let left_after = checks.len() - i - 1;
        let reserve = if left_after > 0 {
            more_line(left_after).len()
        } else {
            0
        };
        if head.len() + tail.len() + reserve > room {
            break;
        }
        room -= head.len() + tail.len();
        shown += 1;
    }
    if shown < checks.len() {
        room = room.saturating_sub(more_line(checks.len() - shown).len());
    }
    let shares = fair_shares(&logs[..shown], room);
    for ((head, tail), (log, share)) in frames.iter().zip(logs.iter().zip(shares)) {
        out.push_str(head);
        out.push_str(keep_end(log.trim_end(), share).trim_end_matches('\n'));
        out.push_str(tail);
    }
    if shown < checks.len() {
        out.push_str(&more_line(checks.len() - shown));
    }
    out
}

/// Splits `room` bytes among `logs`: each gets at most an equal part of what is left, shortest
/// first, so a short log is kept whole and the rest goes to the long ones.
fn fair_shares(logs: &[String], room: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logs.len()).collect();
    order.sort_by_key(|&i| logs[i].trim_end().len());
    let mut shares = vec![0; logs.len()];
    let mut left = room;
    for (done, &i) in order.iter().enumerate() {
        let share = (left / (logs.len() - done)).min(logs[i].trim_end().len());
        shares[i] = share;
        left -= share;
    }
    shares
}

/// The end of `log` in at most `max` bytes: from the first line start that fits, after a
/// marker saying lines were cut; from a character boundary when not even the last line fits.
fn keep_end(log: &str, max: usize) -> String {
    if log.len() <= max {
        return log.to_owned();
    }
    let Some(room) = max.checked_sub(CUT_MARKER.len()).filter(|&r| r > 0) else {
        return String::new();
    };
    // The kept part starts at or after `earliest`, which is past 0 since `log` is longer
    // than `max`.
    let earliest = log.len() - room;
    let bytes = log.as_bytes();
    let line_start = if bytes[earliest - 1] == b'\n' {
        Some(earliest)
    } else {
        bytes[earliest..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| earliest + i + 1)
            .filter(|&start| start < log.len())
    };
    let start = line_start.unwrap_or_else(|| ceil_char_boundary(log, earliest));
    format!("{CUT_MARKER}{}", &log[start..])
}

/// The lead line, then one `- path:line (author): body` line per comment, as many as fit in
/// `budget` bytes; the rest are counted.
fn review_comments(lead: &str, comments: &[Comment], budget: usize) -> String {
    let mut out = cut_to(plain(lead).trim_end(), budget / 2).to_owned();
    out.push('\n');
    let more_line = |n: usize| format!("\n- ... and {n} more comments on the PR");
    for (i, comment) in comments.iter().enumerate() {
        let line = comment_line(comment);
        let left_after = comments.len() - i - 1;
        let reserve = if left_after > 0 {
            more_line(left_after).len()
        } else {
            0
        };
        if out.len() + 1 + line.len() + reserve > budget {
            out.push_str(&more_line(comments.len() - i));
            break;
        }
        out.push('\n');
        out.push_str(&line);
    }
    out
}

fn comment_line(comment: &Comment) -> String {
    let place = match (&comment.path, comment.line) {
        (Some(path), Some(line)) => format!("{}:{line}", one_line(path)),
        (Some(path), None) => one_line(path),
        (None, _) => "PR comment".to_owned(),
    };
    let body = plain(comment.body.trim());
    let cut = cut_to(&body, COMMENT_BODY_MAX);
    let ellipsis = if cut.len() < body.len() { " [...]" } else { "" };
    // Continuation lines are indented so that the list item holds the whole body.
    let mut lines = cut.trim_end().lines();
    let first = lines.next().unwrap_or_default();
    let rest: String = lines
        .map(|line| match line.trim_end() {
            "" => "\n".to_owned(),
            line => format!("\n  {line}"),
        })
        .collect();
    format!(
        "- {place} ({}): {first}{rest}{ellipsis}",
        one_line(&comment.author)
    )
}

/// How to rebase on `origin/<base>`, under `lead` or a default first line.
fn merge_conflicts(lead: Option<&str>, base: &str) -> String {
    let base = one_line(base);
    let lead = lead.map_or_else(
        || format!("Your branch has merge conflicts with `{base}`. Rebase it on origin/{base}:"),
        |l| l.trim_end().to_owned(),
    );
    format!(
        "{lead}\n\n    git fetch origin\n    git rebase origin/{base}\n\n\
         Resolve each conflict, `git add` the files and run `git rebase --continue` until \
         the rebase is done. Run the tests, then:\n\n    git push --force-with-lease"
    )
}

/// `text` as plain text a terminal can take: CRLF made LF, escape sequences (colours, cursor
/// moves) and every other control character except newline and tab removed, trailing
/// whitespace dropped. Typed into an agent's terminal, an escape sequence would act on it.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ ... final`) and OSC (`ESC ] ... BEL|ESC \`); else one character.
                match chars.next() {
                    Some('[') => {
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                break;
                            }
                        }
                    }
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some())
                            {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// `text` on one line, for names and paths inside a line.
fn one_line(text: &str) -> String {
    plain(text).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start of `text` in at most `max` bytes, at a character boundary.
fn cut_to(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The first character boundary at or after `i`.
fn ceil_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, log: String) -> FailedCheck {
        FailedCheck {
            name: name.into(),
            url: Some(format!("https://github.com/o/r/actions/runs/1/job/{name}")),
            log_tail: log,
        }
    }

    /// `lines` numbered lines of `width` bytes each (`name 0001 xxx...`).
    fn log(name: &str, lines: usize, width: usize) -> String {
        (1..=lines)
            .map(|i| {
                let head = format!("{name} {i:04} ");
                format!("{head}{}\n", "x".repeat(width - head.len() - 1))
            })
            .collect()
    }

    fn comment(path: Option<&str>, line: Option<u32>, body: &str) -> Comment {
        Comment {
            id: "1".into(),
            author: "alice".into(),
            bot: false,
            path: path.map(Into::into),
            line,
            body: body.into(),
            url: None,
        }
    }

    fn assert_typable(message: &str) {
        assert_eq!(message, message.trim_end(), "no trailing blank lines");
        assert!(
            !message
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{message:?}"
        );
    }

    #[test]
    fn a_ci_message_keeps_each_logs_end_within_the_budget() {
        let short = "error: unused import `foo`\n".to_owned();
        let checks = vec![
            check("lint", short.clone()),
            check("test", log("test", 400, 80)),
            check("build", log("build", 100, 120)),
        ];
        let message = to_agent(&Situation::CiFailed { number: 12, checks }, None);
        assert_typable(&message);
        assert!(message.len() <= MESSAGE_BUDGET, "{}", message.len());
        assert!(message.len() > MESSAGE_BUDGET - 200, "the budget is used");
        assert!(
            message.starts_with("CI failed on your PR #12."),
            "{message}"
        );
        assert!(message.contains(&format!(
            "### lint\nhttps://github.com/o/r/actions/runs/1/job/lint\n```\n{}\n```",
            short.trim_end()
        )));
        for (name, last) in [("test", 400), ("build", 100)] {
            let section = message.split(&format!("### {name}\n")).nth(1).unwrap();
            let block = section.split("```").nth(1).unwrap();
            let after_marker = block.split(CUT_MARKER).nth(1).expect("cut");
            let first_kept = after_marker.lines().next().unwrap();
            assert!(
                first_kept.starts_with(&format!("{name} ")),
                "cut at a line start: {first_kept}"
            );
            assert!(
                block.trim_end().ends_with('x') && block.contains(&format!("{name} {last:04} ")),
                "the end of the log is kept"
            );
            assert!(
                !block.contains(&format!("{name} 0001 ")),
                "its start is cut"
            );
            // Both long logs get about the same room.
            assert!(block.len() > 2000, "{name}: {}", block.len());
        }

        let lead = to_agent(
            &Situation::CiFailed {
                number: 12,
                checks: vec![check("lint", short)],
            },
            Some("Fix CI, then run `make check`.\n"),
        );
        assert!(
            lead.starts_with("Fix CI, then run `make check`.\n\n### lint\n"),
            "{lead}"
        );
    }

    #[test]
    fn checks_that_do_not_fit_are_counted_and_odd_logs_stay_fenced() {
        let many: Vec<_> = (0..300)
            .map(|i| check(&format!("job-{i:03}-{}", "n".repeat(20)), log("l", 50, 60)))
            .collect();
        let message = ci_failed(None, 3, &many, MESSAGE_BUDGET);
        assert!(message.len() <= MESSAGE_BUDGET, "{}", message.len());
        assert!(message.contains("### job-000-"));
        assert!(message.ends_with(" more failing checks"), "{message}");

        let tricky =
            "\u{1b}[31mFAIL\u{1b}[0m in ```rust\r\nblock```` \u{1b}]0;title\u{7}done\u{8}\n";
        let message = ci_failed(None, 3, &[check("t", tricky.into())], MESSAGE_BUDGET);
        assert_typable(&message);
        assert!(
            message.contains("`````\nFAIL in ```rust\nblock```` done\n`````"),
            "{message}"
        );

        // One endless line: its end is kept from a character boundary.
        let line = "é".repeat(8000);
        let message = ci_failed(None, 3, &[check("t", line)], 2048);
        assert!(message.len() <= 2048, "{}", message.len());
        assert!(message.contains(&format!("{CUT_MARKER}é")), "{message}");
    }

    #[test]
    fn review_comments_read_as_a_list() {
        let comments = vec![
            comment(
                Some("src/lib.rs"),
                Some(42),
                "Rename `x`.\n\nIt is unclear.",
            ),
            comment(Some("README.md"), None, "Typo."),
            comment(None, None, &format!("{}!", "long ".repeat(400))),
        ];
        let message = to_agent(&Situation::ChangesRequested { comments }, None);
        assert_typable(&message);
        let lines: Vec<&str> = message.lines().collect();
        assert!(
            lines[0].starts_with("A reviewer requested changes"),
            "{message}"
        );
        assert_eq!(lines[1], "");
        assert_eq!(lines[2], "- src/lib.rs:42 (alice): Rename `x`.");
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "  It is unclear.");
        assert_eq!(lines[5], "- README.md (alice): Typo.");
        assert!(lines[6].starts_with("- PR comment (alice): long long"));
        assert!(
            lines[6].ends_with(" [...]") && lines[6].len() < 1100,
            "{}",
            lines[6]
        );

        let flood: Vec<_> = (0..100)
            .map(|_| comment(Some("a.rs"), Some(1), &"word ".repeat(100)))
            .collect();
        let message = to_agent(
            &Situation::BotComments { comments: flood },
            Some("Bot says:"),
        );
        assert!(message.len() <= MESSAGE_BUDGET);
        assert!(message.starts_with("Bot says:\n\n- a.rs:1 (alice): word"));
        assert!(message.ends_with(" more comments on the PR"), "{message}");
    }

    #[test]
    fn merge_conflicts_say_how_to_rebase() {
        let message = to_agent(
            &Situation::MergeConflicts {
                base: "develop".into(),
            },
            None,
        );
        assert_typable(&message);
        for needed in [
            "merge conflicts with `develop`",
            "git fetch origin\n",
            "git rebase origin/develop\n",
            "git rebase --continue",
            "git push --force-with-lease",
        ] {
            assert!(message.contains(needed), "{needed}: {message}");
        }
        let custom = to_agent(
            &Situation::MergeConflicts {
                base: "main".into(),
            },
            Some("Rebase now."),
        );
        assert!(
            custom.starts_with("Rebase now.\n\n    git fetch origin"),
            "{custom}"
        );
    }

    #[test]
    fn notifications_are_the_message_over_the_summary() {
        let closed = Situation::PrClosed { number: 9 };
        assert_eq!(
            notification(&closed, None),
            "PR #9 was closed without being merged"
        );
        assert_eq!(
            notification(&closed, Some("Heads up.\n")),
            "Heads up.\nPR #9 was closed without being merged"
        );
    }
}
