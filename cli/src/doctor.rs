//! `ao doctor`: what is installed, what is configured, what is running.

use std::path::Path;
use std::process::ExitCode;

use ao_controller::config;
use ao_controller::forge::{github_apis, linear_apis};
use ao_controller::scm::github::{resolve_token, Github, GithubSettings};
use ao_controller::scm::linear::{api_key, Linear, LINEAR_API_KEY};
use ao_controller::scm::Scm;
use ao_proto::home::Home;

use crate::commands::Target;

enum Level {
    Ok,
    Warn,
    Fail,
}

fn line(level: Level, what: &str, detail: &str) -> bool {
    let tag = match level {
        Level::Ok => "ok  ",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
    };
    println!("[{tag}] {what}: {detail}");
    !matches!(level, Level::Fail)
}

fn version_of(program: &str, arg: &str) -> Option<String> {
    let out = std::process::Command::new(program).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// A credential's certificate: who it names and how long it lasts.
fn certificate(what: &str, dir: &Path) -> bool {
    let who = match ao_proto::pki::Credentials::load(dir).and_then(|c| c.identity()) {
        Ok(who) => who,
        Err(e) => return line(Level::Fail, what, &ao_proto::error_chain(&e)),
    };
    let not_after = who.not_after;
    let until = chrono::DateTime::from_timestamp(not_after, 0).unwrap_or_default();
    let left = not_after - chrono::Utc::now().timestamp();
    let detail = format!(
        "{} {} in {}, valid until {until}",
        who.role.as_str(),
        who.name,
        dir.display()
    );
    if left <= 0 {
        line(
            Level::Fail,
            what,
            &format!("{detail}: EXPIRED; join again (ao token create, ao worker join)"),
        )
    } else if left < 3600 {
        line(
            Level::Warn,
            what,
            &format!("{detail}: expires within the hour"),
        )
    } else {
        line(Level::Ok, what, &detail)
    }
}

/// One line for the GitHub at `settings.api_url` (used first by `project`): where the token
/// comes from (never the token), the login it acts as and the API budget left, or what failed.
/// The token is looked for in this process's environment, as a stack started from this shell
/// would.
async fn github(project: &str, settings: &GithubSettings) -> bool {
    let what = format!("github {}", settings.api_url);
    let fail = |detail: String| line(Level::Fail, &what, &format!("project {project}: {detail}"));
    let (token, source) = match resolve_token(&settings.token_host()).await {
        Ok(found) => found,
        Err(e) => return fail(e.to_string()),
    };
    let client = match Github::new(settings, &token) {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
    let login = match client.whoami().await {
        Ok(login) => login,
        Err(e) => return fail(format!("the token from {source}: {e}")),
    };
    let budget = match client.budget() {
        Some(b) => {
            let reset = chrono::DateTime::<chrono::Utc>::from(b.resets_at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let throttled = b.throttled_until.map_or(String::new(), |until| {
                let until = chrono::DateTime::<chrono::Utc>::from(until)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                format!(", holding back until {until}")
            });
            format!(
                "budget {}/{} until {reset}{throttled}",
                b.remaining, b.limit
            )
        }
        None => "budget not reported".to_string(),
    };
    line(
        Level::Ok,
        &what,
        &format!("token from {source}, login {login}, {budget}"),
    )
}

/// The Linear endpoint `api` with this process's key: the user it acts as.
async fn linear(project: &str, api: &str) -> bool {
    let what = format!("linear {api}");
    let fail = |detail: String| line(Level::Fail, &what, &format!("project {project}: {detail}"));
    let client = match api_key(&|k| std::env::var(k).ok()).and_then(|key| Linear::new(api, &key)) {
        Ok(client) => client,
        Err(e) => return fail(e.to_string()),
    };
    match client.viewer().await {
        Ok(viewer) => line(
            Level::Ok,
            &what,
            &format!("key from {LINEAR_API_KEY}, user {}", viewer.name),
        ),
        Err(e) => fail(e.to_string()),
    }
}

/// The Docker engine and the images of the projects that run in it, when
/// any does (this machine's engine: a worker here runs them).
async fn docker(config: &config::Config) -> bool {
    let mut images: Vec<String> = config
        .projects
        .iter()
        .filter(|(_, p)| config.runtime_for(p) == "docker")
        .filter_map(|(id, p)| config.docker_for(p, &config.agent_for(id)).image)
        .collect();
    if images.is_empty() {
        return true;
    }
    images.sort();
    images.dedup();
    match ao_worker::docker::check(&images).await {
        Ok((about, missing)) if missing.is_empty() => line(
            Level::Ok,
            "docker",
            &format!("{about}; images {}", images.join(", ")),
        ),
        Ok((about, missing)) => line(
            Level::Fail,
            "docker",
            &format!(
                "{about}; missing images {}: build or load them (ao pulls none)",
                missing.join(", ")
            ),
        ),
        Err(e) => line(
            Level::Fail,
            "docker",
            &format!("{e}: projects with `runtime: docker` cannot run here"),
        ),
    }
}

pub async fn run(home: &Home, target: &Target) -> anyhow::Result<ExitCode> {
    let mut healthy = true;
    for (program, arg, package) in [("tmux", "-V", "tmux"), ("git", "--version", "git")] {
        healthy &= match version_of(program, arg) {
            Some(v) => line(Level::Ok, program, &v),
            None => line(
                Level::Fail,
                program,
                &format!("not found on PATH; install it: apt-get install {package} (or brew install {package})"),
            ),
        };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for (agent, program) in [
        ("claude-code", "claude"),
        ("codex", "codex"),
        ("aider", "aider"),
        ("opencode", "opencode"),
        ("gemini", "gemini"),
    ] {
        match ao_worker::agent::find_program(program, &path) {
            Some(p) => line(Level::Ok, agent, &p.display().to_string()),
            None => line(
                Level::Warn,
                agent,
                &format!("`{program}` not on PATH (only needed to run this agent)"),
            ),
        };
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    healthy &= match config::find_and_load(&cwd, home, &|k| std::env::var(k).ok()) {
        None => line(
            Level::Warn,
            "config",
            "no agent-orchestrator.yaml here or above, nor $AO_HOME/config.yaml",
        ),
        Some((p, Ok(c))) => {
            let found = line(
                Level::Ok,
                "config",
                &format!("{} ({} projects)", p.display(), c.projects.len()),
            );
            let unimplemented = config::unimplemented_keys(&c);
            if !unimplemented.is_empty() {
                line(
                    Level::Warn,
                    "config",
                    &format!("not acted on yet: {}", unimplemented.join(", ")),
                );
            }
            let mut hosts = docker(&c).await;
            match github_apis(&c, &|k| std::env::var(k).ok()) {
                Ok(apis) => {
                    for (project, settings) in apis.values() {
                        hosts &= github(project, settings).await;
                    }
                }
                Err(e) => hosts = line(Level::Fail, "github", &e.to_string()),
            }
            match linear_apis(&c) {
                Ok(apis) => {
                    for (api, (project, _)) in &apis {
                        hosts &= linear(project, api).await;
                    }
                }
                Err(e) => hosts = line(Level::Fail, "linear", &e.to_string()),
            }
            found && hosts
        }
        Some((_, Err(e))) => line(Level::Fail, "config", &e.to_string()),
    };
    line(Level::Ok, "AO_HOME", &home.display().to_string());
    for (what, dir) in [
        ("admin credential", home.admin_credentials()),
        ("worker credential", home.worker_credentials()),
    ] {
        if ao_proto::pki::Credentials::exists(&dir) {
            healthy &= certificate(what, &dir);
        }
    }
    match target.info().await {
        Ok(info) => {
            line(
                Level::Ok,
                "controller",
                &format!(
                    "{} (pid {}, store {}, {} sessions)",
                    target.addr(),
                    info.pid,
                    info.store,
                    info.sessions
                ),
            );
            healthy &= if info.workers_ready > 0 {
                line(
                    Level::Ok,
                    "workers",
                    &format!("{} ready", info.workers_ready),
                )
            } else {
                line(Level::Fail, "workers", "none connected")
            };
            let socket = home.tmux_socket();
            line(
                Level::Ok,
                "attach locally",
                &format!("tmux -S {} attach -t <session-id>", socket.display()),
            );
        }
        Err(e) => {
            line(Level::Warn, "controller", &format!("{e:#}"));
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
