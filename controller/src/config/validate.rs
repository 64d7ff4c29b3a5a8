//! The rules a parsed config must meet: names that are safe, references that resolve.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;

use super::error::ConfigError;
use super::ids::{
    is_valid_project_id, is_valid_session_prefix, MAX_ID_LEN, PROJECT_ID_RULE, SESSION_PREFIX_RULE,
};
use super::outline::Locator;
use super::reactions::check_reaction;
use super::runtime::{check_docker, check_runtime};
use super::schema::{
    threshold, Config, DockerConfig, PluginConfig, ProjectConfig, ReactionConfig, ScheduleConfig,
    BUILTIN_AGENTS,
};
use crate::scm::github::{GithubSettings, SettingsError};
use crate::scm::linear::LinearSettings;
use crate::scm::{RepoRef, SCM_PLUGINS, TRACKER_PLUGINS};

/// Checks a config that arrives already parsed (as JSON over the controller's API) with the
/// rules [`parse_str`] applies to a file; `source` names where it came from. Such a config has
/// no lines, so errors name only the key.
///
/// # Errors
/// As the validation of [`parse_str`]; project paths must also be absolute already.
///
/// [`parse_str`]: crate::config::parse_str
pub fn validate_parsed(config: &Config, source: &Path) -> Result<(), ConfigError> {
    validate(
        config,
        &Locator {
            source,
            outline: Vec::new(),
        },
    )
}

/// Checks the shape of names and the references between sections.
pub(super) fn validate(config: &Config, locator: &Locator<'_>) -> Result<(), ConfigError> {
    let check_agent = |path: &[&str], agent: Option<&String>| match agent {
        Some(name)
            if !BUILTIN_AGENTS.contains(&name.as_str()) && !config.agents.contains_key(name) =>
        {
            Err(locator.error(
                path,
                format!(
                    "unknown agent `{name}`: not built in ({}) and not defined under `agents`",
                    BUILTIN_AGENTS.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    };
    let check_notifiers = |path: &[&str], names: &[String]| match names
        .iter()
        .find(|name| !config.notifiers.contains_key(name.as_str()))
    {
        Some(name) => Err(locator.error(
            path,
            format!("unknown notifier `{name}`: not defined under `notifiers`"),
        )),
        None => Ok(()),
    };

    check_agent(&["defaults", "agent"], config.defaults.agent.as_ref())?;
    let check_runtime_at = |path: &[&str], runtime: Option<&String>| match runtime {
        Some(runtime) => check_runtime(runtime).map_err(|e| locator.error(path, e)),
        None => Ok(()),
    };
    let check_docker_at = |at: &[&str], docker: &DockerConfig| {
        check_docker(docker).map_err(|e| {
            let mut path = at.to_vec();
            path.push(e.field);
            locator.error(&path, e.problem)
        })
    };
    check_runtime_at(&["defaults", "runtime"], config.defaults.runtime.as_ref())?;
    check_docker_at(&["defaults", "docker"], &config.defaults.docker)?;
    for (name, agent) in &config.agents {
        check_docker_at(&["agents", name, "docker"], &agent.docker)?;
    }
    for (id, project) in &config.projects {
        check_runtime_at(&["projects", id, "runtime"], project.runtime.as_ref())?;
        check_docker_at(&["projects", id, "docker"], &project.docker)?;
        let agent = config.agent_for(id);
        if config.runtime_for(project) == "docker"
            && config.docker_for(project, &agent).image.is_none()
        {
            return Err(locator.error(
                &["projects", id, "docker", "image"],
                format!(
                    "required with `runtime: docker`: the image the agent runs in, set for \
                     the project, its agent `{agent}` or `defaults.docker`"
                ),
            ));
        }
    }
    check_agent(
        &["orchestrator", "agent"],
        config.orchestrator.agent.as_ref(),
    )?;
    check_notifiers(&["defaults", "notifiers"], &config.defaults.notifiers)?;
    let routing = &config.notification_routing;
    for (priority, names) in [
        ("urgent", &routing.urgent),
        ("action", &routing.action),
        ("warning", &routing.warning),
        ("info", &routing.info),
    ] {
        if let Some(names) = names {
            check_notifiers(&["notificationRouting", priority], names)?;
        }
    }
    for (id, notifier) in &config.notifiers {
        crate::notify::check(id, notifier).map_err(|e| {
            let mut path = vec!["notifiers", id.as_str()];
            // A header name may hold a `.`: split off `headers` only.
            path.extend(
                e.field
                    .as_deref()
                    .map(|f| f.splitn(2, '.'))
                    .into_iter()
                    .flatten(),
            );
            locator.error(&path, e.problem)
        })?;
    }

    let check_reactions = |at: &[&str], reactions: &BTreeMap<String, ReactionConfig>| {
        for (name, reaction) in reactions {
            let mut path = at.to_vec();
            path.push(name.as_str());
            if let Err(e) = check_reaction(name, reaction) {
                path.extend(e.field);
                return Err(locator.error(&path, e.message));
            }
            if let Some(names) = &reaction.notify {
                path.push("notify");
                check_notifiers(&path, names)?;
                path.pop();
            }
            if let Some(Err(e)) = threshold(reaction) {
                path.push("threshold");
                return Err(locator.error(&path, e));
            }
        }
        Ok(())
    };
    check_reactions(&["reactions"], &config.reactions)?;
    for (id, project) in &config.projects {
        check_reactions(&["projects", id, "reactions"], &project.reactions)?;
    }

    for (name, agent) in &config.agents {
        if agent.command.trim().is_empty() {
            return Err(locator.error(&["agents", name, "command"], "must not be empty"));
        }
        for (key, pattern) in [
            ("readyPattern", &agent.ready_pattern),
            ("inputPattern", &agent.input_pattern),
        ] {
            if let Some(Err(err)) = pattern.as_deref().map(Regex::new) {
                return Err(locator.error(&["agents", name, key], format!("invalid regex: {err}")));
            }
        }
    }

    // Session ids are `<prefix>-<n>`: projects that share a prefix would share ids.
    let mut prefixes: BTreeMap<String, &str> = BTreeMap::new();
    for (id, project) in &config.projects {
        if !is_valid_project_id(id) {
            return Err(locator.error(
                &["projects", id],
                format!("project id `{id}` {PROJECT_ID_RULE} (at most {MAX_ID_LEN} characters)"),
            ));
        }
        let prefix = project.session_prefix(id);
        if !is_valid_session_prefix(&prefix) {
            return Err(locator.error(
                &["projects", id, "sessionPrefix"],
                format!("`{prefix}` {SESSION_PREFIX_RULE} (at most {MAX_ID_LEN} characters)"),
            ));
        }
        if let Some(first) = prefixes.insert(prefix.clone(), id) {
            let at = |id: &str| {
                let line = locator
                    .line(&["projects", id, "sessionPrefix"])
                    .or_else(|| locator.line(&["projects", id]));
                match line {
                    Some(line) => format!("project `{id}` (line {line})"),
                    None => format!("project `{id}`"),
                }
            };
            return Err(locator.error(
                &["projects", id, "sessionPrefix"],
                format!(
                    "session prefix `{prefix}` of {} is also that of {}: their session ids \
                     would collide; give one of them its own `sessionPrefix` \
                     (a defaulted prefix is the project id with `.` turned into `-`)",
                    at(id),
                    at(first)
                ),
            ));
        }
        if !Path::new(&project.path).is_absolute() {
            return Err(locator.error(
                &["projects", id, "path"],
                format!("`{}` is not an absolute path", project.path),
            ));
        }
        check_agent(&["projects", id, "agent"], project.agent.as_ref())?;
        check_hosts(id, project, locator)?;
        if let Some(prefix) = &project.branch_prefix {
            // The prefix must make a branch git accepts whatever the issue.
            if let Err(e) = ao_proto::names::check_branch(&format!("{prefix}1-x")) {
                return Err(locator.error(&["projects", id, "branchPrefix"], e.to_string()));
            }
        }
    }
    for (name, schedule) in &config.schedules {
        check_schedule(config, name, schedule, locator)?;
    }
    Ok(())
}

/// A `schedules.<name>` entry: a name that can be a store key, a pattern and zone that give
/// ticks, a project with a tracker, a query, and a `max` of at least one.
fn check_schedule(
    config: &Config,
    name: &str,
    schedule: &ScheduleConfig,
    locator: &Locator<'_>,
) -> Result<(), ConfigError> {
    let at = |key: &'static str| ["schedules", name, key];
    if !is_valid_project_id(name) {
        return Err(locator.error(
            &["schedules", name],
            format!("schedule name `{name}` {PROJECT_ID_RULE} (at most {MAX_ID_LEN} characters)"),
        ));
    }
    crate::schedules::Schedule::parse(schedule)
        .map_err(|e| locator.error(&at(e.field), e.problem))?;
    let project = &schedule.project;
    match config.projects.get(project) {
        None => {
            return Err(locator.error(
                &at("project"),
                format!("unknown project `{project}`: not defined under `projects`"),
            ))
        }
        Some(p) if p.tracker.is_none() => {
            return Err(locator.error(
                &at("project"),
                format!(
                    "project `{project}` has no `tracker` to run the query on: give it one \
                     (`tracker: github`)"
                ),
            ))
        }
        Some(_) => {}
    }
    if schedule.query.trim().is_empty() {
        return Err(locator.error(
            &at("query"),
            "must not be empty: the tracker's query, such as `label:ready state:open`",
        ));
    }
    let tracker = config.projects[project].tracker.as_ref();
    if let Some(plugin) = tracker.map(|t| t.plugin.as_str()) {
        crate::scm::check_query(plugin, &schedule.query)
            .map_err(|e| locator.error(&at("query"), e.to_string()))?;
    }
    if schedule.max == Some(0) {
        return Err(locator.error(&at("max"), "must be at least 1"));
    }
    Ok(())
}

/// A project's `scm` and `tracker`: a known plugin with settings it understands, and the
/// `repo` GitHub needs (Linear needs none). The API base from `GITHUB_API_URL` is checked when
/// it is used, with the environment of the process that uses it.
fn check_hosts(
    id: &str,
    project: &ProjectConfig,
    locator: &Locator<'_>,
) -> Result<(), ConfigError> {
    let mut github = false;
    for (key, plugin, known) in [
        ("scm", &project.scm, SCM_PLUGINS),
        ("tracker", &project.tracker, TRACKER_PLUGINS),
    ] {
        let Some(plugin) = plugin else { continue };
        check_plugin(&["projects", id, key], plugin, known, locator)?;
        github |= plugin.plugin == "github";
    }
    if !github {
        return Ok(());
    }
    let path = ["projects", id, "repo"];
    match &project.repo {
        None => Err(locator.error(
            &path,
            "required with a github `scm` or `tracker`: the repository as `owner/name`",
        )),
        Some(repo) if RepoRef::parse(repo).is_none() => Err(locator.error(
            &path,
            format!("expected the repository as `owner/name`, got `{repo}`"),
        )),
        Some(_) => Ok(()),
    }
}

/// One `scm`/`tracker` block at `path`: a plugin of `known`, with settings it accepts.
fn check_plugin(
    path: &[&str],
    plugin: &PluginConfig,
    known: &[&str],
    locator: &Locator<'_>,
) -> Result<(), ConfigError> {
    let name = plugin.plugin.as_str();
    if !known.contains(&name) {
        let what = path[path.len() - 1];
        let problem = format!(
            "unknown {what} plugin `{name}`: expected one of {}",
            known.join(", ")
        );
        let mut at = path.to_vec();
        at.push("plugin");
        return Err(locator.error(&at, problem));
    }
    let section = path.join(".");
    let checked: Result<(), SettingsError> = match name {
        "linear" => LinearSettings::from_plugin(&section, plugin).map(drop),
        _ => GithubSettings::from_plugin(&section, plugin, &|_| None).map(drop),
    };
    checked.map_err(|e| {
        let field = e.key.strip_prefix(section.as_str()).unwrap_or_default();
        let mut at = path.to_vec();
        at.extend(field.split('.').filter(|k| !k.is_empty()));
        locator.error(&at, e.problem)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::tests::parse;
    use crate::config::schema::ProjectConfig;

    /// A config sent as JSON meets the same rules, named by key alone.
    #[test]
    fn parsed_configs_are_validated_by_key() {
        let source = Path::new("ApplyConfig");
        let project = |path: &str| ProjectConfig {
            path: path.into(),
            ..Default::default()
        };
        let mut config = Config::default();
        config.projects.insert("../x".into(), project("/r"));
        let err = validate_parsed(&config, source).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("projects.../x"));
        assert_eq!(err.line, None);
        assert!(
            err.to_string()
                .starts_with("ApplyConfig: projects.../x: project id"),
            "{err}"
        );

        let mut config = Config::default();
        config
            .projects
            .insert("app".into(), project("relative/repo"));
        let err = validate_parsed(&config, source).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("projects.app.path"));
        assert!(err.message.contains("not an absolute path"), "{err}");

        let mut config = Config::default();
        config.projects.insert("a".into(), project("/r"));
        config.projects.insert(
            "b".into(),
            ProjectConfig {
                session_prefix: Some("a".into()),
                ..project("/r")
            },
        );
        let err = validate_parsed(&config, source).unwrap_err();
        assert!(
            err.message
                .contains("of project `b` is also that of project `a`"),
            "{err}"
        );
    }

    /// `scm`/`tracker` as a name or a block; the repo they need; the plugins known.
    #[test]
    fn hosts_load_in_both_forms_and_errors_name_the_key_and_line() {
        use crate::config::parse_str;
        let parse = |text: &str| parse_str(text, Path::new("/etc/ao.yaml"), &|_| None);
        let config = parse(
            "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm: github\n    \
             tracker: github\n  web:\n    path: /w\n    repo: o/w\n    scm:\n      \
             plugin: github\n      apiUrl: http://127.0.0.1:9\n      mergeMethod: rebase\n",
        )
        .unwrap();
        let app = &config.projects["app"];
        assert_eq!(app.scm.as_ref().unwrap().plugin, "github");
        assert!(app.scm.as_ref().unwrap().settings.is_empty());
        assert_eq!(app.tracker.as_ref().unwrap().plugin, "github");
        let web = config.projects["web"].scm.as_ref().unwrap();
        assert_eq!(web.settings["mergeMethod"], "rebase");
        // Written back as blocks, which load again.
        let written = serde_yaml::to_string(&config).unwrap();
        assert_eq!(parse(&written).unwrap(), config);

        for (text, key, line, message) in [
            (
                "projects:\n  app:\n    path: /r\n    scm: github\n",
                "projects.app.repo",
                2,
                "required with a github `scm` or `tracker`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: app\n    tracker: github\n",
                "projects.app.repo",
                4,
                "expected the repository as `owner/name`, got `app`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm: gitlab\n",
                "projects.app.scm.plugin",
                5,
                "unknown scm plugin `gitlab`: expected one of github",
            ),
            (
                "projects:\n  app:\n    path: /r\n    tracker:\n      plugin: jira\n",
                "projects.app.tracker.plugin",
                5,
                "unknown tracker plugin `jira`: expected one of github, linear",
            ),
            (
                "projects:\n  app:\n    path: /r\n    tracker:\n      plugin: linear\n      \
                 apiKey: lin_api_x\n",
                "projects.app.tracker.apiKey",
                6,
                "unknown key, expected one of apiUrl, team",
            ),
            (
                "projects:\n  app:\n    path: /r\n    tracker: {plugin: linear, apiUrl: 9}\n",
                "projects.app.tracker.apiUrl",
                4,
                "expected a string",
            ),
            (
                "projects:\n  app:\n    path: /r\n    scm: github\n    tracker: linear\n",
                "projects.app.repo",
                2,
                "required with a github `scm` or `tracker`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm:\n      plugin: github\n      \
                 apiUrl: ftp://x\n",
                "projects.app.scm.apiUrl",
                7,
                "expected an http(s) URL",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm: {plugin: github, mergeMethod: fast}\n",
                "projects.app.scm.mergeMethod",
                5,
                "expected squash, merge or rebase, got `fast`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm:\n      apiUrl: http://x\n",
                "projects.app.scm.plugin",
                6,
                "missing field `plugin`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    branchPrefix: -x\n",
                "projects.app.branchPrefix",
                4,
                "must not start with `-`",
            ),
            (
                "projects:\n  app:\n    path: /r\n    repo: o/r\n    scm: [github]\n",
                "projects.app.scm",
                5,
                "expected a plugin name or a map",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }

    /// `tracker: linear` as a name or a block, without a `repo`.
    #[test]
    fn a_linear_tracker_needs_no_repo() {
        use crate::config::parse_str;
        let config = parse_str(
            "projects:\n  app:\n    path: /r\n    tracker: linear\n  ops:\n    path: /o\n    \
             tracker:\n      plugin: linear\n      apiUrl: http://127.0.0.1:9/graphql\n      \
             team: OPS\n",
            Path::new("/etc/ao.yaml"),
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            config.projects["app"].tracker.as_ref().unwrap().plugin,
            "linear"
        );
        let ops = config.projects["ops"].tracker.as_ref().unwrap();
        assert_eq!(ops.settings["team"], "OPS");
    }

    /// A reaction the engine could not act on is refused at its key path and line.
    #[test]
    fn reaction_errors_name_the_key_path_and_line() {
        use crate::config::parse_str;
        let parse = |text: &str| parse_str(text, Path::new("/etc/ao.yaml"), &|_| None);
        for (text, key, line, message) in [
            (
                "reactions:\n  ci-fail:\n    action: notify\n",
                "reactions.ci-fail",
                2,
                "unknown reaction `ci-fail`: expected one of ci-failed,",
            ),
            (
                "projects:\n  app:\n    path: /r\n    reactions:\n      ci-failed:\n        \
                 retries: 1\n        action: auto-merge\n",
                "projects.app.reactions.ci-failed.action",
                7,
                "`auto-merge` only answers `approved-and-green`",
            ),
            (
                "reactions:\n  changes-requested:\n    escalateAfter: soon\n",
                "reactions.changes-requested.escalateAfter",
                3,
                "expected a duration",
            ),
            (
                "reactions:\n  ci-failed:\n    escalateAfter: 0\n",
                "reactions.ci-failed.escalateAfter",
                3,
                "must be at least 1",
            ),
            (
                "reactions:\n  ci-failed:\n    retries: -1\n",
                "reactions.ci-failed.retries",
                3,
                "expected u32",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(err.message.contains(message), "{err}");
        }
        let ok =
            "reactions:\n  approved-and-green:\n    action: auto-merge\n  merge-conflicts:\n    \
                  escalateAfter: 15m\n  ci-failed:\n    escalateAfter: 3\n";
        assert!(parse(ok).is_ok());
    }

    /// A notifier block a plugin cannot use is refused at its key path and line.
    #[test]
    fn notifier_errors_name_the_key_path_and_line() {
        use crate::config::parse_str;
        let parse = |text: &str| parse_str(text, Path::new("/etc/ao.yaml"), &|_| None);
        for (text, key, line, message) in [
            (
                "notifiers:\n  team:\n    plugin: slack\n    channel: \"#a\"\n",
                "notifiers.team.webhook",
                2,
                "required by the slack notifier",
            ),
            (
                "notifiers:\n  hook:\n    plugin: webhook\n    url: https://h/x\n    \
                 headers:\n      X-Token: 5\n",
                "notifiers.hook.headers.X-Token",
                6,
                "expected a string",
            ),
            (
                "notifiers:\n  pd:\n    plugin: webhook\n    url: https://h/x\n    \
                 format: pagerduty\n",
                "notifiers.pd.routingKey",
                2,
                "Events v2 integration key",
            ),
            (
                "notifiers:\n  x:\n    plugin: fax\n",
                "notifiers.x.plugin",
                3,
                "unknown notifier plugin `fax`",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }

    const PROJECT: &str = "projects:\n  app:\n    path: /r\n    repo: o/r\n    tracker: github\n  bare:\n    path: /s\n";

    #[test]
    fn schedules_load_with_their_defaults() {
        let text = format!(
            "{PROJECT}schedules:\n  morning:\n    cron: \"0 9 * * 1-5\"\n    timezone: Europe/Berlin\n    project: app\n    query: \"label:ready state:open\"\n"
        );
        let config = parse(&text).unwrap();
        let morning = &config.schedules["morning"];
        assert_eq!(morning.max(), crate::config::DEFAULT_SCHEDULE_MAX);
        assert_eq!(morning.timezone.as_deref(), Some("Europe/Berlin"));
    }

    #[test]
    fn bad_schedules_are_errors_naming_key_and_line() {
        let entry = |body: &str| format!("{PROJECT}schedules:\n  morning:\n{body}");
        let ok = "    cron: \"0 9 * * *\"\n    project: app\n    query: label:x\n";
        let cases = [
            (
                entry("    cron: \"0 9 * *\"\n    project: app\n    query: label:x\n"),
                "schedules.morning.cron",
                10,
                "not a cron pattern",
            ),
            (
                entry(&format!("{ok}    timezone: Mars/Olympus\n")),
                "schedules.morning.timezone",
                13,
                "unknown time zone `Mars/Olympus`",
            ),
            (
                entry("    cron: \"0 9 * * *\"\n    project: nope\n    query: label:x\n"),
                "schedules.morning.project",
                11,
                "unknown project `nope`",
            ),
            (
                entry("    cron: \"0 9 * * *\"\n    project: bare\n    query: label:x\n"),
                "schedules.morning.project",
                11,
                "has no `tracker`",
            ),
            (
                entry("    cron: \"0 9 * * *\"\n    project: app\n    query: \" \"\n"),
                "schedules.morning.query",
                12,
                "must not be empty",
            ),
            (
                entry("    cron: \"0 9 * * *\"\n    project: app\n    query: \"login bug\"\n"),
                "schedules.morning.query",
                12,
                "`login` in the query `login bug`: a GitHub tracker filters on",
            ),
            (
                entry(&format!("{ok}    max: 0\n")),
                "schedules.morning.max",
                13,
                "at least 1",
            ),
        ];
        for (text, key, line, fragment) in cases {
            let err = parse(&text).expect_err(&text);
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
            assert!(err.message.contains(fragment), "{err}");
        }
        let missing = parse(&entry("    cron: \"0 9 * * *\"\n    project: app\n")).unwrap_err();
        assert!(missing.to_string().contains("query"), "{missing}");
    }
}
