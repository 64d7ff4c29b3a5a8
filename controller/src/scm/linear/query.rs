//! What ao asks Linear, as pure steps: the GraphQL documents, a tracker query turned into
//! Linear's `IssueFilter`, the wire shapes of the answers and the issues made of them.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::settings::is_team_key;
use crate::scm::{Issue, IssueComment, ScmError};

/// Comments of an issue given to a prompt, as for GitHub.
pub(crate) const ISSUE_COMMENTS: usize = 5;

/// Issues per page of a search.
pub(crate) const PAGE_SIZE: u32 = 100;

/// Who the key acts as: the cheap call that checks a key.
pub(crate) const VIEWER: &str = "query Viewer { viewer { id name email } }";

/// One issue by its id or identifier (`INT-1234`), with its latest comments. Linear's default
/// order of a connection is not documented as ascending: the comments are sorted here.
pub(crate) const ISSUE: &str = "query Issue($id: String!) { issue(id: $id) { \
    identifier title description url createdAt \
    labels(first: 50) { nodes { name } } \
    comments(first: 100, orderBy: createdAt) { nodes { body createdAt user { displayName } } } \
    } }";

/// A page of the issues matching a filter.
pub(crate) const ISSUES: &str =
    "query Issues($filter: IssueFilter, $first: Int, $after: String) { \
    issues(filter: $filter, first: $first, after: $after, orderBy: createdAt) { \
    nodes { identifier title description url createdAt labels(first: 50) { nodes { name } } } \
    pageInfo { hasNextPage endCursor } } }";

/// Whether a search wants open issues, closed ones, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateWanted {
    /// Any state type but `completed` and `canceled`.
    Open,
    Closed,
    All,
}

/// Linear's workflow state types that close an issue.
const CLOSED_TYPES: [&str; 2] = ["completed", "canceled"];

/// A tracker query (`label:ready state:open team:INT login page`) as Linear filters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchFilter {
    /// Every one must be on the issue (names compared without case).
    pub labels: Vec<String>,
    pub state: StateWanted,
    /// A team key; the project's `team` when the query names none.
    pub team: Option<String>,
    /// Every word must be in the title (without case).
    pub words: Vec<String>,
}

impl SearchFilter {
    /// Reads `query`; `team` is the project's team, for a query that names none.
    ///
    /// # Errors
    /// [`ScmError::Other`] for a `key:value` word a Linear tracker does not filter on.
    pub(crate) fn parse(query: &str, team: Option<&str>) -> Result<Self, ScmError> {
        let mut filter = Self {
            labels: Vec::new(),
            state: StateWanted::Open,
            team: team.map(str::to_string),
            words: Vec::new(),
        };
        let refuse = |word: &str| {
            ScmError::Other(format!(
                "`{word}` in the query `{query}`: a Linear tracker filters on `label:<name>`, \
                 `state:open|closed|all`, `team:<KEY>` and words of the title"
            ))
        };
        for word in crate::scm::query_words(query) {
            let word = word.as_str();
            match word.split_once(':') {
                Some(("label", name)) if !name.is_empty() => {
                    filter.labels.push(name.to_string());
                }
                Some(("state", state)) => {
                    filter.state = match state {
                        "open" => StateWanted::Open,
                        "closed" => StateWanted::Closed,
                        "all" => StateWanted::All,
                        _ => return Err(refuse(word)),
                    };
                }
                Some(("team", key)) if is_team_key(key) => filter.team = Some(key.to_string()),
                Some(_) => return Err(refuse(word)),
                None => filter.words.push(word.to_string()),
            }
        }
        filter.words.retain(|w| !w.is_empty());
        Ok(filter)
    }

    /// The filter as Linear's `IssueFilter` input: one condition per part, all of them held.
    pub(crate) fn to_graphql(&self) -> Value {
        let mut all: Vec<Value> = Vec::new();
        for label in &self.labels {
            all.push(json!({"labels": {"some": {"name": {"eqIgnoreCase": label}}}}));
        }
        match self.state {
            StateWanted::Open => all.push(json!({"state": {"type": {"nin": CLOSED_TYPES}}})),
            StateWanted::Closed => all.push(json!({"state": {"type": {"in": CLOSED_TYPES}}})),
            StateWanted::All => {}
        }
        if let Some(team) = &self.team {
            all.push(json!({"team": {"key": {"eq": team}}}));
        }
        for word in &self.words {
            all.push(json!({"title": {"containsIgnoreCase": word}}));
        }
        json!({ "and": all })
    }
}

/// A GraphQL answer: `data`, or `errors`, or both.
#[derive(Debug, Deserialize)]
pub(crate) struct Reply<T> {
    pub data: Option<T>,
    #[serde(default)]
    pub errors: Vec<GraphqlError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct GraphqlError {
    pub message: String,
    #[serde(default)]
    pub extensions: Extensions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Extensions {
    pub code: Option<String>,
    pub user_presentable_message: Option<String>,
}

impl GraphqlError {
    pub(crate) fn is(&self, code: &str) -> bool {
        self.extensions.code.as_deref() == Some(code)
    }

    /// An `issue(id:)` that names nothing: Linear says `Entity not found: Issue`.
    pub(crate) fn not_found(&self) -> bool {
        self.message.starts_with("Entity not found")
    }

    /// What a person is to read: Linear's sentence for people when it gave one.
    pub(crate) fn text(&self) -> &str {
        self.extensions
            .user_presentable_message
            .as_deref()
            .unwrap_or(&self.message)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ViewerData {
    pub viewer: Viewer,
}

/// The user a key acts as.
#[derive(Debug, Deserialize)]
pub struct Viewer {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct IssueData {
    pub issue: Option<IssueNode>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct IssuesData {
    pub issues: Connection<IssueNode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Connection<T> {
    pub nodes: Vec<T>,
    pub page_info: Option<PageInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageInfo {
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IssueNode {
    pub identifier: String,
    pub title: String,
    pub description: Option<String>,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub labels: Connection<Named>,
    pub comments: Option<Connection<CommentNode>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Named {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommentNode {
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub user: Option<UserNode>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserNode {
    pub display_name: String,
}

impl IssueNode {
    /// The issue as a prompt is built from it, with its last [`ISSUE_COMMENTS`] comments
    /// oldest first (a comment without a user is an integration's).
    pub(crate) fn into_issue(self) -> Issue {
        let mut comments = self.comments.map(|c| c.nodes).unwrap_or_default();
        comments.sort_by_key(|c| c.created_at);
        let skip = comments.len().saturating_sub(ISSUE_COMMENTS);
        Issue {
            id: self.identifier,
            title: self.title,
            body: self.description.unwrap_or_default(),
            labels: self.labels.nodes.into_iter().map(|l| l.name).collect(),
            url: self.url,
            comments: comments
                .into_iter()
                .skip(skip)
                .map(|c| IssueComment {
                    author: c
                        .user
                        .map_or_else(|| "an integration".to_string(), |u| u.display_name),
                    body: c.body,
                })
                .collect(),
        }
    }
}

/// The `max` oldest of `nodes` (in whatever order Linear gave them), oldest first.
pub(crate) fn oldest_first(mut nodes: Vec<IssueNode>, max: usize) -> Vec<Issue> {
    nodes.sort_by(|a, b| (a.created_at, &a.identifier).cmp(&(b.created_at, &b.identifier)));
    nodes.truncate(max);
    nodes.into_iter().map(IssueNode::into_issue).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_maps_each_part_to_an_issue_filter() {
        let filter = SearchFilter::parse(
            "label:ready label:\"agent task\" team:INT login page",
            Some("ENG"),
        )
        .unwrap();
        assert_eq!(
            filter.labels,
            ["ready", "agent task"],
            "a quoted label is one"
        );
        assert_eq!(filter.team.as_deref(), Some("INT"), "the query's team wins");
        assert_eq!(filter.words, ["login", "page"]);
        assert_eq!(
            filter.to_graphql(),
            json!({"and": [
                {"labels": {"some": {"name": {"eqIgnoreCase": "ready"}}}},
                {"labels": {"some": {"name": {"eqIgnoreCase": "agent task"}}}},
                {"state": {"type": {"nin": ["completed", "canceled"]}}},
                {"team": {"key": {"eq": "INT"}}},
                {"title": {"containsIgnoreCase": "login"}},
                {"title": {"containsIgnoreCase": "page"}},
            ]})
        );

        let closed = SearchFilter::parse("state:closed", Some("ENG")).unwrap();
        assert_eq!(
            closed.to_graphql(),
            json!({"and": [
                {"state": {"type": {"in": ["completed", "canceled"]}}},
                {"team": {"key": {"eq": "ENG"}}},
            ]})
        );
        let all = SearchFilter::parse("state:all", None).unwrap();
        assert_eq!(all.to_graphql(), json!({"and": []}));
    }

    #[test]
    fn a_query_word_linear_cannot_filter_on_is_refused() {
        for query in ["assignee:me", "state:done", "team:my-team", "label:"] {
            let err = SearchFilter::parse(query, None).unwrap_err().to_string();
            assert!(err.contains(&format!("in the query `{query}`")), "{err}");
            assert!(err.contains("`label:<name>`"), "{err}");
        }
    }

    fn node(identifier: &str, day: u32, comments: &[(&str, u32)]) -> IssueNode {
        let at = |day: u32| format!("2026-01-{day:02}T00:00:00Z").parse().unwrap();
        IssueNode {
            identifier: identifier.into(),
            title: format!("Title of {identifier}"),
            description: None,
            url: format!("https://linear.app/acme/issue/{identifier}"),
            created_at: at(day),
            labels: Connection {
                nodes: vec![Named {
                    name: "ready".into(),
                }],
                page_info: None,
            },
            comments: Some(Connection {
                nodes: comments
                    .iter()
                    .map(|(body, day)| CommentNode {
                        body: body.to_string(),
                        created_at: at(*day),
                        user: (*body != "bot").then(|| UserNode {
                            display_name: "ann".into(),
                        }),
                    })
                    .collect(),
                page_info: None,
            }),
        }
    }

    #[test]
    fn a_search_keeps_the_oldest_max_oldest_first() {
        let newest_first = vec![
            node("INT-9", 9, &[]),
            node("INT-3", 3, &[]),
            node("INT-5", 5, &[]),
        ];
        let ids: Vec<String> = oldest_first(newest_first, 2)
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["INT-3", "INT-5"]);
    }

    #[test]
    fn an_issue_keeps_its_last_comments_oldest_first() {
        let comments = [
            ("c7", 7),
            ("c1", 1),
            ("bot", 6),
            ("c2", 2),
            ("c4", 4),
            ("c3", 3),
        ];
        let issue = node("INT-1", 1, &comments).into_issue();
        assert_eq!(issue.id, "INT-1");
        assert_eq!(issue.body, "");
        assert_eq!(issue.labels, ["ready"]);
        let bodies: Vec<&str> = issue.comments.iter().map(|c| c.body.as_str()).collect();
        assert_eq!(bodies, ["c2", "c3", "c4", "bot", "c7"]);
        assert_eq!(issue.comments[3].author, "an integration");
        assert_eq!(issue.comments[4].author, "ann");
    }
}
